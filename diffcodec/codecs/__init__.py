"""Codecs: the shared contract (:mod:`.base`, :mod:`.rungs`) and one package per method.

Each method package (``oscar``, ``stablecodec``, ``onedc``, ``cadc``, ``reference``) holds ``model.py``
(the paper's modules and its :class:`Codec`), ``training.py`` (its LightningModule), ``convert.py`` (its
official-checkpoint converter, when there is one) and ``zoo.py`` (its zoo entries). Names are resolved on
first use, so importing a package (e.g. for its zoo entries) loads no torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["BaseModelRef", "Codec", "CodecOutput", "EncodedImage", "lazy_model_names"]


def lazy_model_names(package: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a method package: its names come from ``<package>.model`` on first
    use (PEP 562), so importing the package (e.g. for its zoo entries) loads no torch."""

    def module_getattr(name: str) -> Any:
        model = importlib.import_module(f"{package}.model")
        try:
            return getattr(model, name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    def module_dir() -> list[str]:
        package_module = importlib.import_module(package)
        return sorted({*vars(package_module), *importlib.import_module(f"{package}.model").__all__})

    return module_getattr, module_dir


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("diffcodec.codecs.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
