"""Per-stage timing: the codec's stages report to a :class:`StageTimer` while one is active.

::

    timer = StageTimer(device)              # what `diffcodec bench` does
    with timer:                             # activates it (a context variable)
        with stage("latent_codec"):         # the catch-all: whatever no inner stage claims
            stream = codec.compress(image)  # backbone.encode → "vae_enc", the coder → "entropy", …
    timer.seconds                           # {"latent_codec": 0.01, "vae_enc": 0.20, "entropy": 0.003}

Stages nest and are **exclusive**: a stage's time excludes the stages opened inside it, so the times of one
call add up to its wall time. The library's stages are :data:`STAGES`; library functions report with the
:func:`timed` decorator. With no active timer, :func:`stage` is a no-op costing a context-variable read, so
the instrumented code paths pay nothing in normal use. On CUDA the timer synchronises the device at each
stage boundary (kernels are asynchronous; without it a stage would be charged for its predecessor's work),
which serialises the pipeline: the times are per stage, not overlapped.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import torch

__all__ = ["STAGES", "StageTimer", "stage", "timed"]

_F = TypeVar("_F", bound=Callable[..., Any])

#: The stages the library reports, in pipeline order. ``latent_codec`` is what the caller of a codec wraps
#: around compress/decompress: the analysis/synthesis of the latent codec, hyper-networks, context models,
#: quantisation, padding and conversion — everything the inner stages do not claim.
STAGES: tuple[str, ...] = (
    "vae_enc", "latent_codec", "entropy", "captioner", "text_encoder", "unet", "vae_dec",
)  # fmt: skip

_ACTIVE: ContextVar[StageTimer | None] = ContextVar("diffcodec_stage_timer", default=None)


class StageTimer:
    """Accumulates exclusive wall time per stage name while active (``with timer:``).

    Args:
        device: the device the timed code runs on; on CUDA every stage boundary calls
            ``torch.cuda.synchronize(device)`` so that asynchronous kernels are charged to their stage.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._stack: list[list[Any]] = []  # [name, start, time claimed by nested stages]
        self._token: Any = None

    def __enter__(self) -> StageTimer:
        if self._token is not None:
            raise RuntimeError("this StageTimer is already active")
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.reset(self._token)
        self._token = None

    def reset(self) -> None:
        """Forget the accumulated times (e.g. after a warm-up run)."""
        if self._stack:
            raise RuntimeError("cannot reset a StageTimer inside an open stage")
        self.seconds.clear()
        self.calls.clear()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _open(self, name: str) -> None:
        self._sync()
        self._stack.append([name, time.perf_counter(), 0.0])

    def _close(self) -> None:
        self._sync()
        name, start, nested = self._stack.pop()
        elapsed = time.perf_counter() - start
        self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - nested
        self.calls[name] = self.calls.get(name, 0) + 1
        if self._stack:
            self._stack[-1][2] += elapsed


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Charge the block's time to ``name`` on the active :class:`StageTimer`; a no-op when none is active."""
    timer = _ACTIVE.get()
    if timer is None:
        yield
        return
    timer._open(name)
    try:
        yield
    finally:
        timer._close()


def timed(name: str) -> Callable[[_F], _F]:
    """Decorator: every call of the function is charged to stage ``name`` (see :func:`stage`)."""

    def decorate(function: _F) -> _F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _ACTIVE.get() is None:
                return function(*args, **kwargs)
            with stage(name):
                return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
