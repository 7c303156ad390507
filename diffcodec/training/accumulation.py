"""Gradient accumulation and clipping for codecs that optimise manually.

Lightning applies ``Trainer(accumulate_grad_batches=…)`` and ``gradient_clip_val`` only with automatic
optimisation (it refuses them otherwise). Codecs with several optimisers (generator, discriminator,
entropy-model quantiles) optimise manually, so they use this helper, configured from their own
``accumulate_grad_batches`` argument::

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = self.loss(batch)
        self.accumulation.backward(self, loss, batch_idx)                    # loss / N, no DDP sync
        self.accumulation.step(self, opt, batch_idx, clip_norm=1.0)          # every N-th micro-batch

It mirrors accelerate's behaviour that the papers' code relies on (StableCodec: batch 1 × 4
accumulation × 2 GPUs): each micro-batch loss is divided by N; gradients are all-reduced only on the
last micro-batch of a group (DDP ``no_sync`` before it); the optimiser steps, clips and zeroes the
gradients only then (and on the last batch of an epoch, so no gradient leaks into the next epoch).
Lightning's ``global_step`` counts optimiser steps, so it advances once per N batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import ParallelStrategy


class GradientAccumulation:
    """Accumulate gradients over ``every`` micro-batches under manual optimisation."""

    def __init__(self, every: int = 1) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"accumulate_grad_batches must be a positive int, got {every!r}")
        self.every = every

    def is_step(self, module: L.LightningModule, batch_idx: int) -> bool:
        """Whether micro-batch ``batch_idx`` ends an accumulation group (the optimiser steps after it)."""
        if self.every == 1 or (batch_idx + 1) % self.every == 0:
            return True
        trainer = module._trainer
        return trainer is not None and bool(trainer.is_last_batch)

    @contextlib.contextmanager
    def _no_sync(self, module: L.LightningModule, batch_idx: int) -> Iterator[None]:
        trainer = module._trainer
        strategy = trainer.strategy if trainer is not None else None
        if isinstance(strategy, ParallelStrategy) and not self.is_step(module, batch_idx):
            with strategy.block_backward_sync():
                yield
        else:
            yield

    def backward(self, module: L.LightningModule, loss: torch.Tensor, batch_idx: int) -> None:
        """``manual_backward(loss / every)``; no DDP all-reduce before the group's last micro-batch."""
        with self._no_sync(module, batch_idx):
            module.manual_backward(loss / self.every)

    def step(
        self,
        module: L.LightningModule,
        optimizer: LightningOptimizer | torch.optim.Optimizer,
        batch_idx: int,
        *,
        clip_norm: float | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> bool:
        """At the end of a group: clip the gradient norm, step, zero the gradients, step ``scheduler``.

        Returns whether the optimiser stepped. Clipping goes through ``module.clip_gradients`` so that
        mixed-precision gradients are unscaled first.
        """
        if not self.is_step(module, batch_idx):
            return False
        if clip_norm is not None:
            module.clip_gradients(optimizer, gradient_clip_val=clip_norm, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        return True
