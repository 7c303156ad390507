"""Learning-rate schedules and loss-weight warm-ups as YAML-configurable objects.

A :class:`Schedule` maps the optimisation step to a value. Two callbacks apply schedules during training,
for any codec and any optimisation mode, from the recipe alone::

    trainer:
      callbacks:
        - class_path: diffcodec.training.LearningRateSchedule      # StableCodec stage II (paper §4.1)
          init_args:
            schedule:
              class_path: diffcodec.training.Piecewise
              init_args: {boundaries: [5000, 10000, 15000], values: [5.0e-5, 2.0e-5, 1.0e-5, 1.0e-6]}
        - class_path: diffcodec.training.HyperparameterSchedule    # λ warm-up
          init_args:
            name: rate_weight
            schedule: {class_path: diffcodec.training.LinearWarmup, init_args: {value: 1.0, steps: 2000}}

The step is the number of *optimisation steps* taken: training batches seen divided by the
micro-batches per optimiser step — the training module's ``accumulate_grad_batches`` (every
:class:`~diffcodec.training.module.CodecTraining` has it), else the trainer's. It is a pure function of the
restored loop progress, so a resumed run continues the schedule exactly without any scheduler state in
the checkpoint.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class Schedule:
    """A value as a function of the optimisation step (subclasses implement ``__call__``)."""

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError


class Constant(Schedule):
    """The same ``value`` at every step."""

    def __init__(self, value: float) -> None:
        self.value = float(value)

    def __call__(self, step: int) -> float:
        return self.value


class Piecewise(Schedule):
    """``values[i]`` from step ``boundaries[i-1]`` (inclusive) to ``boundaries[i]``: a step schedule."""

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]) -> None:
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"need one more value than boundaries, got {len(values)} and {len(boundaries)}")
        if list(boundaries) != sorted(boundaries):
            raise ValueError(f"boundaries must ascend, got {list(boundaries)}")
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]

    def __call__(self, step: int) -> float:
        return self.values[bisect.bisect_right(self.boundaries, step)]


class LinearWarmup(Schedule):
    """From ``start`` to ``value`` linearly over ``steps`` steps after ``delay`` steps, then ``value``.

    ``LinearWarmup(5e-5, steps=500)`` is diffusers' ``constant_with_warmup`` (OneDC's official stage-1
    config).
    """

    def __init__(self, value: float, steps: int, start: float = 0.0, delay: int = 0) -> None:
        if steps < 0 or delay < 0:
            raise ValueError("steps and delay must be >= 0")
        self.value, self.steps, self.start, self.delay = float(value), int(steps), float(start), int(delay)

    def __call__(self, step: int) -> float:
        if step < self.delay:
            return self.start
        if self.steps == 0 or step >= self.delay + self.steps:
            return self.value
        return self.start + (self.value - self.start) * (step - self.delay) / self.steps


class Cosine(Schedule):
    """Cosine decay from ``value`` to ``final`` over ``steps`` steps, after an optional linear warm-up."""

    def __init__(self, value: float, steps: int, final: float = 0.0, warmup: int = 0) -> None:
        if steps <= warmup:
            raise ValueError(f"steps ({steps}) must exceed warmup ({warmup})")
        self.value, self.steps, self.final, self.warmup = float(value), int(steps), float(final), int(warmup)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.value * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / (self.steps - self.warmup))
        return self.final + 0.5 * (self.value - self.final) * (1 + math.cos(math.pi * progress))


def optimisation_step(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    """Optimisation steps taken before the current batch: batches done // ``accumulate_grad_batches``.

    Called from ``on_train_batch_start``, where ``total_batch_idx`` is the index of the current batch.
    """
    accumulate = getattr(pl_module, "accumulate_grad_batches", None) or trainer.accumulate_grad_batches
    return max(0, trainer.fit_loop.total_batch_idx) // max(1, int(accumulate))


class LearningRateSchedule(Callback):
    """Set the learning rate of optimiser ``optimizer`` (index into ``configure_optimizers``) each batch."""

    def __init__(self, schedule: Schedule, optimizer: int = 0, log_name: str | None = None) -> None:
        self.schedule = schedule
        self.optimizer = optimizer
        self.log_name = log_name or f"lr/optimizer{optimizer}"

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        if self.optimizer >= len(trainer.optimizers):
            raise IndexError(
                f"LearningRateSchedule(optimizer={self.optimizer}): the model has "
                f"{len(trainer.optimizers)} optimiser(s)"
            )
        lr = self.schedule(optimisation_step(trainer, pl_module))
        optimizer: torch.optim.Optimizer = trainer.optimizers[self.optimizer]
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        lr = self._apply(trainer, pl_module)
        pl_module.log(self.log_name, lr, on_step=True, on_epoch=False, batch_size=1)


class HyperparameterSchedule(Callback):
    """Set attribute ``name`` of the codec from ``schedule`` each batch (a λ or loss-weight warm-up).

    The codec reads the attribute in its loss (e.g. ``self.rate_weight``); it must already exist, so a
    typo in the recipe fails at the start instead of silently training without the warm-up.
    """

    def __init__(self, name: str, schedule: Schedule) -> None:
        self.name = name
        self.schedule = schedule

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not hasattr(pl_module, self.name):
            raise AttributeError(
                f"HyperparameterSchedule: {type(pl_module).__name__} has no attribute {self.name!r}"
            )

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx
    ) -> None:
        value = self.schedule(optimisation_step(trainer, pl_module))
        setattr(pl_module, self.name, value)
        pl_module.log(f"schedule/{self.name}", value, on_step=True, on_epoch=False, batch_size=1)
