"""The reference codec (LatentHyperprior, the worked example of docs/contributing.md): :mod:`.model` (the
codec and its modules), :mod:`.training`
(:class:`~diffcodec.codecs.reference.training.LatentHyperpriorTraining`; it needs Lightning).

The model's names (``from diffcodec.codecs.reference import …``) are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
    model = importlib.import_module("diffcodec.codecs.reference.model")
    try:
        return getattr(model, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted({*globals(), *importlib.import_module("diffcodec.codecs.reference.model").__all__})
