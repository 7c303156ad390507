"""Autograd helpers of the entropy models: a gradient-friendly lower bound and straight-through rounding.

Both follow CompressAI (``compressai.ops``) so that trained weights behave identically:

- :class:`LowerBound` — ``max(x, bound)`` whose gradient passes where ``x ≥ bound`` *or* where the incoming
  gradient would increase ``x`` (Ballé et al. 2018, "Variational image compression with a scale hyperprior",
  appendix 6.1). It keeps its bound in a buffer named ``bound`` (checkpoint key ``….bound``).
- :func:`ste_round` — ``round(x)`` (round-half-to-even, ``torch.round``) with an identity gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LowerBound", "ste_round"]


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
