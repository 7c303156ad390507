"""Start a training stage from an earlier one: load its weights and freeze the modules it keeps.

A stage-2 recipe names its stage-1 checkpoint and what to freeze::

    init_from:
      checkpoint: runs/stablecodec-stage1/checkpoints/last.ckpt   # or a save_pretrained / export folder
      freeze: [codec.latent_codec]                                  # module paths (parameter-name prefixes)
      new_modules: [discriminator]                                  # trained from scratch in this stage
      ignore: []                                                    # stage-1 entries to leave out

The weights are loaded in :meth:`InitFrom.setup`, before the optimisers are built (so frozen parameters,
``requires_grad=False``, are left out of them by the codec's ``configure_optimizers``). When a run
resumes (``--ckpt_path``), the checkpoint's weights win and only the freezing is applied.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from diffcodec.training.checkpoint import load_checkpoint_file, load_training_state, trained_codec
from diffcodec.zoo.hub import WEIGHTS_NAME, CheckpointError, fetch


def read_lightning_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A Lightning ``.ckpt`` as a dict, read without unpickling code (:func:`load_checkpoint_file`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    checkpoint = load_checkpoint_file(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def read_weights(source: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a Lightning ``.ckpt``, a ``save_pretrained`` folder or a hub repo ``org/name``."""
    from safetensors.torch import load_file

    if Path(source).is_file():
        return read_lightning_checkpoint(source)["state_dict"]
    return load_file(str(fetch(os.fspath(source), WEIGHTS_NAME)), device="cpu")


def codec_relative(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` keyed for ``module``: a codec's own weights (a ``save_pretrained`` folder, or a checkpoint
    of a codec trained directly) get the ``codec.`` prefix when ``module`` is a training module."""
    if trained_codec(module) in (None, module) or any(k.startswith("codec.") for k in state):
        return state
    return {f"codec.{key}": value for key, value in state.items()}


def freeze_modules(module: torch.nn.Module, prefixes: Sequence[str]) -> int:
    """Set ``requires_grad=False`` on every parameter under the given module paths; returns how many.

    A path that matches no parameter raises, so a typo in a recipe cannot silently train everything.
    """
    names = dict(module.named_parameters())
    frozen = 0
    for prefix in prefixes:
        matched = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        if not matched:
            raise ValueError(f"freeze: {type(module).__name__} has no parameters under {prefix!r}")
        for name in matched:
            names[name].requires_grad_(False)
        frozen += len(matched)
    return frozen


class InitFrom(Callback):
    """Initialise the model from an earlier stage's checkpoint and freeze modules (see module docstring).

    Args:
        checkpoint: a Lightning ``.ckpt``, a ``save_pretrained``/``diffcodec export`` folder, or a hub repo;
            None (stage 1) loads nothing.
        freeze: module paths whose parameters stop training.
        new_modules: module paths absent from the checkpoint (new in this stage); anything else missing,
            except frozen base-model weights, is an error.
        ignore: module paths present in the checkpoint but not wanted (e.g. a stage-1-only head).
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        freeze: Sequence[str] = (),
        new_modules: Sequence[str] = (),
        ignore: Sequence[str] = (),
    ) -> None:
        self.checkpoint = checkpoint
        self.freeze = tuple(freeze)
        self.new_modules = tuple(new_modules)
        self.ignore = tuple(ignore)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.checkpoint is not None and trainer.ckpt_path is None:
            load_training_state(
                pl_module,
                codec_relative(pl_module, read_weights(self.checkpoint)),
                allow_missing=self.new_modules,
                ignore=self.ignore,
                where=f"init_from checkpoint {self.checkpoint}",
            )
        if self.freeze:
            freeze_modules(pl_module, self.freeze)
