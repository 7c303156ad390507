"""Finite scalar quantisation (FSQ) of a hyper-latent, with fixed-length index coding.

Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple" (ICLR 2024). Each of the ``d`` channels of
``z`` is bounded with a shifted tanh and rounded to one of ``L_i`` levels; the tuple of levels is one index
of a codebook of ``Π L_i`` implicit codes, so the index costs ``⌈log₂ Π L_i⌉`` bits without an entropy
model. This reproduces vector-quantize-pytorch's ``FSQ`` (1.21.2, the OneDC pin; no projections, no noise
dropout, channel-first maps) — OneDC's z quantiser (the official OneDC code, golden ``fsq_and_packing``)::

    z (B, d, h, w) ─bound─► b_i = tanh(z_i + atanh(o_i/h_i))·h_i − o_i      h_i = (L_i − 1)(1 + ε)/2,
                                                                            o_i = ½ if L_i even else 0
                   ─round (straight-through)─► q_i ∈ {−⌊L_i/2⌋, …}       code_i = q_i / ⌊L_i/2⌋
    index = Σ_i (q_i + ⌊L_i/2⌋)·Π_{j<i} L_j        (channel 0 is the least significant digit)

The bound and rounding run in float32 whatever the input dtype (as the library does), and the codes are
returned in the input dtype. FSQ has no parameters and no persistent buffers (so no checkpoint keys).

:meth:`FSQ.pack` / :meth:`FSQ.unpack` write the indices as fixed-length fields through
:func:`diffcodec.entropy.vq.pack_indices` (shared with OSCAR's VQ). OneDC packs the fields as one
big-endian integer (``padding="start"``: the pad bits are the leading bits of byte 0, as the
official OneDC code packs them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from diffcodec.entropy.ops import ste_round
from diffcodec.entropy.vq import index_bits, pack_indices, packed_size, unpack_indices
from diffcodec.timing import timed

__all__ = ["FSQ"]


class FSQ(nn.Module):
    """Finite scalar quantiser over the channel axis of ``(B, d, h, w)`` maps (see the module docstring).

    Args:
        levels: number of levels per channel, ``d = len(levels)`` (OneDC: ``[4] * 7``, 16384 codes).
        eps: the bound's margin ε (1e-3, the library's default).
        padding: where :meth:`pack` puts the pad bits: ``"start"`` (OneDC) or ``"end"``.
    """

    _levels: Tensor
    _basis: Tensor

    def __init__(
        self, levels: Sequence[int], eps: float = 1e-3, padding: Literal["start", "end"] = "start"
    ) -> None:
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or any(v < 2 for v in levels):
            raise ValueError(f"FSQ needs at least one channel and >= 2 levels per channel, got {levels}")
        if padding not in ("start", "end"):
            raise ValueError(f"padding must be 'start' or 'end', got {padding!r}")
        self.levels = tuple(levels)
        self.eps = float(eps)
        self.padding = padding
        self.codebook_size = int(np.prod(levels))
        basis = np.cumprod([1, *levels[:-1]])
        self.register_buffer("_levels", torch.tensor(levels, dtype=torch.int32), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.int64), persistent=False)

    @property
    def dim(self) -> int:
        """Channels of the quantised map (``len(levels)``)."""
        return len(self.levels)

    @property
    def index_bits(self) -> int:
        """Bits of one packed index: ⌈log₂ Π L_i⌉ (14 for OneDC)."""
        return index_bits(self.codebook_size)

    def _view(self, values: Tensor, like: Tensor) -> Tensor:
        """Per-channel constants shaped to broadcast over ``(B, d, h, w)``."""
        return values.view(1, -1, *([1] * (like.dim() - 2)))

    def _check(self, z: Tensor) -> None:
        if not isinstance(z, Tensor) or z.dim() < 2 or z.shape[1] != self.dim:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"FSQ expects a (B, {self.dim}, ...) tensor, got {shape}")

    def bound(self, z: Tensor) -> Tensor:
        """``tanh(z + atanh(o/h))·h − o`` per channel, in float32 (the pre-rounding value)."""
        self._check(z)
        levels = self._view(self._levels, z)
        half_l = (levels - 1) * (1 + self.eps) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        shift = (offset / half_l).atanh()
        return (z.float() + shift).tanh() * half_l - offset

    def quantize(self, z: Tensor) -> Tensor:
        """Codes ``round(bound(z)) / ⌊L/2⌋`` (straight-through gradient), in ``z``'s dtype."""
        half_width = self._view(self._levels // 2, z)
        return (ste_round(self.bound(z)) / half_width).to(z.dtype)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """``(B, d, h, w)`` codes → ``(B, h, w)`` int64 indices (channel 0 least significant)."""
        self._check(codes)
        half_width = self._view(self._levels // 2, codes)
        digits = codes.float() * half_width + half_width
        return (digits * self._view(self._basis, codes)).sum(dim=1).round().to(torch.int64)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """``(B, h, w)`` integer indices → ``(B, d, h, w)`` float32 codes."""
        if indices.is_floating_point():
            raise TypeError(f"indices must be integers, got {indices.dtype}")
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size})")
        indices = indices.to(torch.int64).unsqueeze(1)
        levels = self._view(self._levels, indices).to(torch.int64)
        digits = (indices // self._view(self._basis, indices)) % levels
        half_width = levels // 2
        return (digits - half_width).float() / half_width.float()

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes, indices)`` of ``z``: codes like ``z`` (straight-through), indices ``(B, h, w)`` int64."""
        codes = self.quantize(z)
        return codes, self.codes_to_indices(codes)

    # ------------------------------------------------------------------ fixed-length coding
    def packed_size(self, count: int) -> int:
        """Bytes of :meth:`pack` for ``count`` indices: ⌈count·bits/8⌉."""
        return packed_size(count, self.codebook_size)

    @timed("entropy")
    def pack(self, indices: Tensor | np.ndarray) -> bytes:
        """Row-major indices (one image) as ``index_bits``-bit big-endian fields (the official OneDC code)."""
        return pack_indices(indices, self.codebook_size, padding=self.padding)

    @timed("entropy")
    def unpack(self, data: bytes, shape: Sequence[int]) -> Tensor:
        """Inverse of :meth:`pack`: an int64 tensor of ``shape`` (e.g. ``(1, h, w)``).

        Raises :class:`~diffcodec.bitstream.DecodeError` for a wrong length or non-zero pad bits.
        """
        count = int(np.prod(shape))
        values = unpack_indices(data, count, self.codebook_size, padding=self.padding)
        return torch.from_numpy(values).reshape(tuple(shape))
