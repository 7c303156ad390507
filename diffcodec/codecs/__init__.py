"""Codecs: the shared contract (:mod:`.base`, :mod:`.rungs`) and one package per method.

Each method package (``oscar``, ``stablecodec``, ``onedc``, ``cadc``, ``reference``) holds ``model.py``
(the paper's modules and its :class:`Codec`), ``training.py`` (its LightningModule), ``convert.py`` (its
official-checkpoint converter, when there is one) and ``zoo.py`` (its zoo entries). Names are resolved on
first use, so importing a package (e.g. for its zoo entries) loads no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["BaseModelRef", "Codec", "CodecOutput", "EncodedImage"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("diffcodec.codecs.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
