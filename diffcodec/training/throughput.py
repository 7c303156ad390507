"""Throughput options shared by every training module: ``channels_last`` and ``compile``.

Both are constructor arguments of :class:`~diffcodec.training.module.CodecTraining` and of the small-base
modules (:mod:`diffcodec.training.small_base`), off by default; a recipe turns them on with
``--model.init_args.channels_last true`` / ``--model.init_args.compile true``. Mixed precision is not one
of them: it is Lightning's ``--trainer.precision bf16-mixed`` (``torch.autocast``); the entropy models
keep their likelihoods and quantiser decisions in float32 under it
(:func:`diffcodec.entropy.ops.full_precision`).

:class:`ThroughputOptions` (a mixin placed before ``LightningModule``) applies them through Lightning hooks:

- ``channels_last`` — in ``configure_model`` every 4-D parameter and buffer of the module (the convolution
  weights) is put in ``torch.channels_last`` memory format, and :meth:`ThroughputOptions.images` (how every
  ``training_step`` / ``validation_step`` takes the images out of its batch) returns them in it too, so
  cuDNN runs its NHWC kernels (faster with bf16 tensor cores). (Not in ``on_after_batch_transfer``: a data
  module that defines that hook would silently take it over.) Only the layout changes, never a name;
  values agree to float rounding (another summation order), except that noise drawn with ``*_like`` on a
  channels_last tensor (the entropy models' uniform training noise) fills it in memory order, so a run
  with the option draws different noise than one without. Checkpoints store ordinary contiguous tensors
  (``on_save_checkpoint``), so a run with the option resumes without it and vice versa.
- ``compile`` — in ``configure_model`` the heavy networks (:func:`compile_targets`: every diffusers U-Net
  and every VAE's encoder and decoder, including training-only ones such as a discriminator's or a DMD
  teacher's U-Net) are compiled **in place** with :meth:`torch.nn.Module.compile`, which keeps the module
  objects and therefore the state-dict keys (no ``_orig_mod.`` prefix): checkpoints, ``--init_from`` and
  ``diffcodec export`` are unchanged. The first step per input shape pays the compilation. The codecs' own
  latent codecs (context models, quadtrees, VQ) are not compiled: their Python control flow depends on
  the rung and the data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn

from diffcodec.errors import UsageError

__all__ = ["ThroughputOptions", "batch_images", "compile_targets", "to_channels_last"]


def batch_images(batch: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The image tensor of a batch: ``x`` itself or the first element of ``(x, …)``."""
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def compile_targets(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, network) of what ``compile=True`` compiles: each ``UNet2DConditionModel`` and the
    ``encoder`` / ``decoder`` of each ``AutoencoderKL`` inside ``module``, in ``named_modules`` order."""
    targets: list[tuple[str, nn.Module]] = []
    for name, child in module.named_modules():
        if isinstance(child, UNet2DConditionModel):
            targets.append((name, child))
        elif isinstance(child, AutoencoderKL):
            prefix = f"{name}." if name else ""
            targets += [(f"{prefix}encoder", child.encoder), (f"{prefix}decoder", child.decoder)]
    return targets


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D floating-point ``x`` in ``torch.channels_last`` memory format (same values); any other
    tensor unchanged."""
    if x.ndim == 4 and x.is_floating_point():
        return x.contiguous(memory_format=torch.channels_last)
    return x


class ThroughputOptions:
    """Mixin of a ``LightningModule`` whose hyper-parameters hold ``channels_last`` and ``compile`` (module
    docstring). Put it before ``LightningModule`` in the bases; the constructor must take both arguments
    and call ``save_hyperparameters``."""

    def _throughput_option(self, name: str) -> bool:
        return bool(self.hparams.get(name, False))  # type: ignore[attr-defined]

    def configure_model(self) -> None:
        """Apply the options once (Lightning calls this hook before every fit / validate)."""
        super().configure_model()  # type: ignore[misc]
        if getattr(self, "_throughput_applied", False):
            return
        if self._throughput_option("channels_last"):
            self.to(memory_format=torch.channels_last)  # type: ignore[attr-defined]
        if self._throughput_option("compile"):
            targets = compile_targets(self)  # type: ignore[arg-type]
            if not targets:
                raise UsageError(
                    f"compile=True: {type(self).__name__} has no U-Net or VAE to compile; leave compile off"
                )
            for _, network in targets:
                network.compile()
        self._throughput_applied = True

    def images(self, batch: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """The batch's images (:func:`batch_images`), in channels_last format when the option is on."""
        x = batch_images(batch)
        return to_channels_last(x) if self._throughput_option("channels_last") else x

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Checkpoints hold contiguous tensors whatever the training layout."""
        super().on_save_checkpoint(checkpoint)  # type: ignore[misc]
        state = checkpoint.get("state_dict")
        if state is not None and self._throughput_option("channels_last"):
            checkpoint["state_dict"] = type(state)(
                (key, value.contiguous() if isinstance(value, torch.Tensor) else value)
                for key, value in state.items()
            )
