"""Autograd helpers of the entropy models: a gradient-friendly lower bound and straight-through rounding.

Both follow CompressAI (``compressai.ops``) so that trained weights behave identically:

- :class:`LowerBound` — ``max(x, bound)`` whose gradient passes where ``x ≥ bound`` *or* where the incoming
  gradient would increase ``x`` (Ballé et al. 2018, "Variational image compression with a scale hyperprior",
  appendix 6.1). It keeps its bound in a buffer named ``bound`` (checkpoint key ``….bound``).
- :func:`ste_round` — ``round(x)`` (round-half-to-even, ``torch.round``) with an identity gradient.
- :func:`full_precision` — runs an entropy model's method in float32 even inside an autocast region
  (bf16 mixed-precision training): likelihoods, rate terms and quantiser decisions never see bf16.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

__all__ = ["LowerBound", "full_precision", "ste_round"]

_Method = TypeVar("_Method", bound=Callable[..., Any])
_LOW_PRECISION = (torch.bfloat16, torch.float16)


class _LowerBoundFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, bound: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        x, bound = ctx.saved_tensors
        pass_through = (x >= bound) | (grad_output < 0)
        return pass_through.to(grad_output.dtype) * grad_output, None


class LowerBound(nn.Module):
    """``max(x, bound)`` with CompressAI's gradient rule (see the module docstring)."""

    bound: Tensor

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)], dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return _LowerBoundFunction.apply(x, self.bound.to(x.dtype))


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:  # type: ignore[override]
        return grad_output


def ste_round(x: Tensor) -> Tensor:
    """Straight-through rounding: the value of ``torch.round(x)``, the gradient of the identity.

    CompressAI writes this as ``(round(x) − x).detach() + x``, which can differ from ``round(x)`` by one ulp;
    here the forward value is exactly ``round(x)`` (so it equals the value the real coder reconstructs).
    """
    return _RoundSTE.apply(x)


def full_precision(method: _Method) -> _Method:
    """Decorate a module method so that it runs in float32 whatever autocast region calls it.

    Under mixed-precision training (Lightning ``precision: bf16-mixed``, i.e. ``torch.autocast``) the
    networks that *predict* entropy parameters may run in bf16, but the likelihoods, the rate
    ``−log₂ p`` and the quantiser's decisions must not: a bf16 likelihood has 8 bits of mantissa, so
    ``−log₂ p`` of small probabilities and the nearest-code argmax of a VQ would be wrong. Inside the
    decorated method autocast is off on the devices of its tensor arguments, and bf16 / fp16 tensor
    arguments are cast to float32 (float32 and float64 ones pass unchanged, so outside autocast nothing
    changes). The devices are those of the tensor arguments and of the module's own weights.
    """

    def upcast(value: Any) -> Any:
        if isinstance(value, Tensor) and value.dtype in _LOW_PRECISION:
            return value.float()
        return value

    @functools.wraps(method)
    def wrapper(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, Tensor)]
        tensors += [t for t in (next(self.parameters(), None), next(self.buffers(), None)) if t is not None]
        devices = {t.device.type for t in tensors}
        with contextlib.ExitStack() as stack:
            for device in devices:
                if torch.is_autocast_enabled(device):
                    stack.enter_context(torch.autocast(device, enabled=False))
            args = tuple(upcast(v) for v in args)
            kwargs = {k: upcast(v) for k, v in kwargs.items()}
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
