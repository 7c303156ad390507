"""OneDC (Xue et al., NeurIPS 2025): :mod:`.model` (the codec and its modules), :mod:`.convert` (the
official-checkpoint converter), :mod:`.training` (:class:`~diffcodec.codecs.onedc.training.OneDCTraining`;
it needs Lightning) and :mod:`.zoo` (its zoo entries).

The model's names (``from diffcodec.codecs.onedc import …``) are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from diffcodec.codecs.onedc import zoo as zoo  # registers the zoo entries (no torch)


def __getattr__(name: str) -> Any:
    model = importlib.import_module("diffcodec.codecs.onedc.model")
    try:
        return getattr(model, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *importlib.import_module("diffcodec.codecs.onedc.model").__all__})
