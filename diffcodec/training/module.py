"""The one base class of every method's training module: a LightningModule that wraps a codec.

A :class:`~diffcodec.codecs.base.Codec` is a plain ``torch.nn.Module`` holding the architecture (what
``config.json`` records). Everything that is only needed to train it lives in its method's training module
(``diffcodec.codecs.<method>.training``), a subclass of :class:`CodecTraining`::

    OSCARTraining(codec=OSCAR(...), stage=2, learning_rate=5e-5, gan_weight=5e-3, ...)
        ├── self.codec              the codec being trained (``diffcodec export`` saves exactly this)
        ├── self.discriminator      training-only networks (GAN heads, teachers, tokenizers)
        └── losses, optimisers, stage handling

What the base class does once for all methods:

- **stages**: ``stage`` is checked against the method's :attr:`CodecTraining.stages`;
- **batches**: :meth:`CodecTraining.images` unpacks ``x`` or ``(x, …)`` batches (channels_last when asked);
- **gradient accumulation and clipping** (:meth:`CodecTraining.update`): every method accumulates over
  ``accumulate_grad_batches`` micro-batches (loss / N, DDP gradient sync on the last micro-batch only)
  and clips the gradient norm at ``gradient_clip`` before each optimiser step;
- **generator / discriminator alternation** (:meth:`CodecTraining.toggled`): only the optimiser whose
  turn it is receives gradients;
- **the optimisation step** (:attr:`CodecTraining.optimizer_step_count`): the step the LR schedules
  (:mod:`diffcodec.training.schedules`) see counts optimiser steps, i.e. micro-batches // N;
- **logging** (:meth:`CodecTraining.log_terms`);
- **throughput options** ``channels_last`` and ``compile`` (:mod:`diffcodec.training.throughput`).

A stage with one optimiser uses Lightning's **automatic optimisation** (``training_step`` returns the loss
through :meth:`CodecTraining.optimize`; the module's ``accumulate_grad_batches`` becomes the trainer's, and
:meth:`CodecTraining.configure_gradient_clipping` clips at ``gradient_clip``). A stage that steps several
optimisers (the G/D and DMD alternations, the reference codec's quantile optimiser) says so through
:meth:`CodecTraining.steps_several_optimizers` and optimises manually through
:class:`~diffcodec.training.accumulation.GradientAccumulation` (Lightning refuses ``accumulate_grad_batches``
with manual optimisation). Either way accumulation and clipping are configured in one place, the module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer

from diffcodec.codecs.base import Codec, CodecOutput
from diffcodec.training.accumulation import GradientAccumulation
from diffcodec.training.throughput import ThroughputOptions
from diffcodec.training.throughput import batch_images as images

__all__ = ["CodecTraining", "images"]


class CodecTraining(ThroughputOptions, L.LightningModule):
    """Base of the methods' training modules (see the module docstring).

    Args:
        codec: the codec to train (a recipe gives it as ``{class_path: …, init_args: …}``).
        stage: the training stage (one of :attr:`stages`).
        learning_rate: the generator's (codec's) learning rate.
        weight_decay: AdamW weight decay.
        gradient_clip: the gradient-norm limit applied before every optimiser step (None: no clipping).
        accumulate_grad_batches: micro-batches per optimiser step.
        channels_last: convolution weights and batch images in ``torch.channels_last`` memory format.
        compile: compile the U-Nets and VAE encoders / decoders in place (``nn.Module.compile``).
            Both: see :mod:`diffcodec.training.throughput`.

    Subclasses set :attr:`stages` and implement ``training_step`` / ``configure_optimizers`` with the
    helpers below. Frozen pretrained weights of training-only networks (a discriminator's trunk, a teacher
    U-Net) are left out of checkpoints by the same rule as the codec's own base weights
    (:mod:`diffcodec.nn.base_weights`: recorded when loaded, still bit-identical).
    """

    #: the stages this method trains in
    stages: ClassVar[tuple[int, ...]] = (1, 2)

    def __init__(
        self,
        codec: Codec,
        *,
        stage: int = 1,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.0,
        gradient_clip: float | None = 1.0,
        accumulate_grad_batches: int = 1,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(codec, Codec):
            raise TypeError(f"codec must be a diffcodec Codec, got {type(codec).__name__}")
        if stage not in self.stages:
            stages = ", ".join(str(s) for s in self.stages)
            raise ValueError(f"{type(self).__name__} trains stage {stages}; got stage={stage!r}")
        self.save_hyperparameters(ignore=["codec"])
        self.codec = codec
        self.stage = stage
        self.accumulation = GradientAccumulation(accumulate_grad_batches)

    # ------------------------------------------------------------------ the codec
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> CodecOutput:
        return self.codec(x, *args, **kwargs)

    @property
    def pad_multiple(self) -> int:
        """The codec's: whole validation images are padded to it (the data modules ask the module)."""
        return self.codec.pad_multiple

    # ------------------------------------------------------------------ optimisation
    def steps_several_optimizers(self) -> bool:
        """Whether this stage steps more than one optimiser per batch (then optimisation is manual)."""
        return False

    @property
    def automatic_optimization(self) -> bool:  # type: ignore[override]
        """Lightning's automatic optimisation exactly when the stage has a single optimiser."""
        return not self.steps_several_optimizers()

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        raise AttributeError("a training module's optimisation mode follows steps_several_optimizers()")

    def setup(self, stage: str) -> None:
        """Automatic optimisation: the trainer accumulates ``accumulate_grad_batches`` micro-batches."""
        if stage != "fit" or not self.automatic_optimization or self.accumulation.every == 1:
            return
        trainer = self.trainer
        if trainer.accumulate_grad_batches not in (1, self.accumulation.every):
            raise ValueError(
                f"Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}) and the module's "
                f"accumulate_grad_batches={self.accumulation.every} disagree; set it on the module only"
            )
        trainer.accumulate_grad_batches = self.accumulation.every

    def optimize(
        self,
        loss: torch.Tensor,
        batch_idx: int,
        *,
        optimizer: LightningOptimizer | None = None,
        clip_groups: Sequence[Iterable[torch.nn.Parameter]] | None = None,
    ) -> torch.Tensor:
        """What a single-optimiser ``training_step`` returns: the loss for Lightning's automatic optimisation
        (clipped per ``clip_groups`` when given), or, under manual optimisation, :meth:`update` with
        ``optimizer`` (default: the only one) and the detached loss."""
        self._clip_groups = None if clip_groups is None else [list(group) for group in clip_groups]
        if self.automatic_optimization:
            return loss
        self.update(optimizer or self.optimizers(), loss, batch_idx, clip_groups=self._clip_groups)
        return loss.detach()

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Automatic optimisation: clip the gradient norm at ``gradient_clip`` (per group when the step
        named ``clip_groups``), before every optimiser step."""
        clip = self.hparams.gradient_clip
        if not clip:
            return
        groups = getattr(self, "_clip_groups", None)
        if groups:
            for group in groups:
                torch.nn.utils.clip_grad_norm_(group, clip)
        else:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    @property
    def accumulate_grad_batches(self) -> int:
        """Micro-batches per optimiser step (what the LR schedules divide the batch count by)."""
        return self.accumulation.every

    @property
    def optimizer_step_count(self) -> int:
        """Optimiser steps taken before the current micro-batch (its whole group shares the number)."""
        trainer = self._trainer
        if trainer is None:
            return 0
        return max(0, int(trainer.fit_loop.total_batch_idx)) // self.accumulation.every

    def adamw(self, parameters: Iterable[torch.nn.Parameter], lr: float, **kwargs: Any) -> torch.optim.AdamW:
        """AdamW over the trainable ``parameters`` with the module's weight decay."""
        trainable = [p for p in parameters if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=lr, weight_decay=self.hparams.weight_decay, **kwargs)

    def optimizer_pair(self) -> tuple[LightningOptimizer, LightningOptimizer | None]:
        """(generator optimiser, discriminator optimiser or None)."""
        optimizers = self.optimizers()
        if isinstance(optimizers, (list, tuple)):
            return optimizers[0], (optimizers[1] if len(optimizers) > 1 else None)
        return optimizers, None

    def update(
        self,
        optimizer: LightningOptimizer,
        loss: torch.Tensor,
        batch_idx: int,
        *,
        clip_groups: Sequence[Iterable[torch.nn.Parameter]] | None = None,
    ) -> bool:
        """Backward ``loss`` / N; at the end of an accumulation group clip, step and zero the gradients.

        The gradient norm is clipped at ``gradient_clip`` over the optimiser's parameters, or per group
        of ``clip_groups`` (independent sub-networks clipped separately). Returns whether it stepped.
        """
        self.accumulation.backward(self, loss, batch_idx)
        clip = self.hparams.gradient_clip
        if clip_groups is not None and clip and self.accumulation.is_step(self, batch_idx):
            for group in clip_groups:
                torch.nn.utils.clip_grad_norm_(list(group), clip)
            clip = None
        return self.accumulation.step(self, optimizer, batch_idx, clip_norm=clip or None)

    @contextlib.contextmanager
    def toggled(self, optimizer: LightningOptimizer | None, alternating: bool = True) -> Iterator[None]:
        """Inside: only ``optimizer``'s parameters require gradients (G/D alternation); a no-op when the
        stage has a single optimiser (``alternating`` False or ``optimizer`` None)."""
        if optimizer is None or not alternating:
            yield
            return
        with self.toggled_optimizer(optimizer):
            yield

    # ------------------------------------------------------------------ logging
    def log_terms(self, terms: Mapping[str, Any], prefix: str = "train/", **kwargs: Any) -> None:
        """Log the scalar tensors of ``terms`` (detached) under ``prefix``."""
        logs = {
            f"{prefix}{key}": value.detach().float()
            for key, value in terms.items()
            if isinstance(value, torch.Tensor) and value.ndim == 0
        }
        self.log_dict(logs, **kwargs)
