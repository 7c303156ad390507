"""Training checkpoints without the frozen base model, and loading them back with the keys checked.

A codec built on a pretrained base model (:meth:`Codec.base_model_ref` set) re-loads the base weights
in its constructor, so a Lightning checkpoint need only hold what training changes: the codec's own
modules, adapters (LoRA), widened layers. :class:`TrainableCheckpoint` drops the entries
:meth:`Codec.base_weight_keys` names (the same rule as ``save_pretrained``) from every checkpoint Lightning
writes, and on resume checks that exactly those entries, and nothing else, are missing.

The codec a module trains (the module itself, or a method training module's ``codec``) records how it
was built (class and constructor arguments) in the checkpoint too, under ``"diffcodec"``; ``diffcodec
export`` rebuilds it from there.

Checkpoints are never unpickled: :func:`~diffcodec.files.load_checkpoint_file` reads them with
``torch.load(weights_only=True)``, and :class:`SafeCheckpointIO` makes Lightning's own resume
(``fit --ckpt_path``) do the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback

from diffcodec.codecs.base import Codec
from diffcodec.errors import CheckpointError
from diffcodec.files import load_checkpoint_file
from diffcodec.nn import base_weights as _base_weights
from diffcodec.zoo.hub import class_path

#: Key under which the codec's class and constructor arguments are stored in a Lightning checkpoint.
CODEC_KEY = "diffcodec"


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that loads with :func:`load_checkpoint_file` (``weights_only=True``).

    ``diffcodec fit`` / ``validate`` install it, so ``--ckpt_path`` never unpickles code (LightningCLI
    itself first reads the file's hyper-parameters with ``weights_only=True``); with your own ``Trainer``
    pass ``plugins=[SafeCheckpointIO()]``. An explicit ``trainer.fit(..., weights_only=False)`` is the one
    way back to a full pickle load, for files you trust.
    """

    def load_checkpoint(
        self, path: str | os.PathLike, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if weights_only is False:
            return super().load_checkpoint(path, map_location=map_location, weights_only=False)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint file not found: {path}")
        checkpoint = load_checkpoint_file(path, map_location=map_location or (lambda storage, loc: storage))
        if not isinstance(checkpoint, dict):
            raise CheckpointError(
                f"{path} is not a Lightning checkpoint (it holds a {type(checkpoint).__name__})"
            )
        return checkpoint


def trained_codec(module: torch.nn.Module) -> Codec | None:
    """The codec a module trains: the module itself or its ``codec`` (a method's training module)."""
    if isinstance(module, Codec):
        return module
    codec = getattr(module, "codec", None)
    return codec if isinstance(codec, Codec) else None


def base_weight_keys(module: torch.nn.Module, state_dict: Mapping[str, Any]) -> set[str]:
    """The entries of ``module``'s ``state_dict`` that are unchanged base-model weights (none unless its
    codec names a base model): the one rule of :mod:`diffcodec.nn.base_weights`, applied to the codec or
    to a method's training module (whose training-only networks, e.g. a discriminator's pretrained trunk,
    are recorded when loaded, like the codec's)."""
    codec = trained_codec(module)
    if codec is None or codec.base_model_ref() is None:
        return set()
    tensors = {key: value for key, value in state_dict.items() if isinstance(value, torch.Tensor)}
    return _base_weights.base_weight_keys(module, tensors)


def strip_base_weights(module: torch.nn.Module, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` without the base-model weights of ``module``."""
    dropped = base_weight_keys(module, state_dict)
    return {key: value for key, value in state_dict.items() if key not in dropped}


def _listing(keys: Iterable[str], limit: int = 6) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def _under(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p if p.endswith(".") else p + ".") for p in prefixes)


def check_state_keys(
    module: torch.nn.Module,
    state_dict: Mapping[str, Any],
    *,
    allow_missing: Iterable[str] = (),
    ignore: Iterable[str] = (),
    where: str = "checkpoint",
) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` fits ``module`` up to the expected gaps.

    Allowed gaps: base-model weights (stripped on save), keys under the ``allow_missing`` module prefixes
    (modules new in this stage), and checkpoint keys under ``ignore``. Shapes are checked by
    ``load_state_dict`` itself (entropy models resize their CDF tables to the stored ones).
    """
    own = module.state_dict()
    allow_missing, ignore = tuple(allow_missing), tuple(ignore)
    expected_missing = base_weight_keys(module, own)
    missing = [
        k for k in own if k not in state_dict and k not in expected_missing and not _under(k, allow_missing)
    ]
    unexpected = [k for k in state_dict if k not in own and not _under(k, ignore)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if problems:
        raise CheckpointError(f"{where} does not fit {type(module).__name__}: " + "; ".join(problems))


def load_training_state(
    module: torch.nn.Module,
    state_dict: Mapping[str, Any],
    *,
    allow_missing: Iterable[str] = (),
    ignore: Iterable[str] = (),
    where: str = "checkpoint",
) -> None:
    """Check the keys (see :func:`check_state_keys`), then load ``state_dict`` into ``module``."""
    allow_missing, ignore = tuple(allow_missing), tuple(ignore)
    check_state_keys(module, state_dict, allow_missing=allow_missing, ignore=ignore, where=where)
    kept = {k: v for k, v in state_dict.items() if not _under(k, ignore)}
    try:
        module.load_state_dict(kept, strict=False)
    except RuntimeError as error:  # size mismatches
        raise CheckpointError(f"{where} does not fit {type(module).__name__}: {error}") from error


def codec_record(module: L.LightningModule) -> dict[str, Any] | None:
    """How to rebuild the codec ``module`` trains (class path, constructor arguments, and the state-dict
    prefix of its weights in the checkpoint), or None if it trains no Codec."""
    codec = trained_codec(module)
    if codec is None:
        return None
    return {
        "class": class_path(type(codec)),
        "init_args": dict(getattr(codec, "_diffcodec_init_args", {})),
        "unsaved_args": list(getattr(codec, "_diffcodec_unsaved_args", [])),
        "prefix": "" if codec is module else "codec.",
    }


class TrainableCheckpoint(Callback):
    """Keep frozen base-model weights out of Lightning checkpoints; check the keys when resuming.

    Always installed by ``diffcodec fit`` / ``validate``. With it the model loads checkpoints
    non-strictly (``strict_loading = False``), and this callback does the strict check instead: only the
    base weights may be missing.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.strict_loading = False

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["state_dict"] = strip_base_weights(pl_module, checkpoint["state_dict"])
        record = codec_record(pl_module)
        if record is not None:
            checkpoint[CODEC_KEY] = record

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        check_state_keys(pl_module, checkpoint["state_dict"], where="the resumed checkpoint")
