"""Vector quantisation with a cosine-similarity EMA codebook, and fixed-length index packing.

:class:`VectorQuantize` reproduces the maths of vector-quantize-pytorch 1.22.3's ``VectorQuantize`` in the
configuration OSCAR uses (``use_cosine_sim=True``, one head, ``codebook_dim`` < ``dim``, defaults otherwise;
as the official OSCAR code), under the library's parameter and buffer names, so official state dicts
load strictly::

    x (B, N, dim) ─project_in─► u (B, N, d) ─l2norm─► û ─argmax_k ⟨û, e_k⟩─► index (B, N)
                                                                              │
    x̂ (B, N, dim) ◄─project_out─ e_index (unit-norm codebook row) ◄───────────┘

- **Codebook** (``CosineSimCodebook``): ``embed`` (1, K, d) is kept unit-norm; the nearest code is the one
  with the largest dot product (cosine similarity). Initialised as an L2-normalised Kaiming-uniform draw,
  ``initted`` = 1 (no k-means), ``cluster_size`` = 1.
- **EMA update** (train mode only; van den Oord et al. 2017 App. A.1, Razavi et al. 2019): with one-hot
  assignments n_k and sums s_k = Σ_{i→k} û_i of the batch, ``cluster_size ← γ·cluster_size + (1−γ)·n``,
  ``embed_avg ← γ·embed_avg + (1−γ)·s``,
  ``embed ← l2norm(embed_avg / (laplace(cluster_size)·Σ cluster_size))``
  with γ = ``decay`` = 0.8 and Laplace smoothing (n_k + ε)/(Σn + K·ε), ε = 1e-5. Under DDP the counts and
  sums are all-reduced first (the library's ``sync_codebook``). No dead-code replacement (threshold 0).
- **Gradients** (train mode, when the input requires grad): the rotation trick (Fifty et al. 2024, §4.2,
  the library default) or a plain straight-through estimator. The forward value is the code either way.
- **Commitment loss**: ``MSE(sg(e_index), û)`` (the library's; OSCAR's paper Eq. 7–8 use it, the official
  training code discards it — the caller decides its weight).

:func:`pack_indices` / :func:`unpack_indices` write indices as fixed-length ⌈log₂ K⌉-bit fields, which is
what a VQ hyper-latent costs without an entropy model (OSCAR §1.3; OneDC's FSQ indices can use them too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from diffcodec.bitstream import DecodeError
from diffcodec.timing import timed

__all__ = [
    "CosineSimCodebook",
    "VQOutput",
    "VectorQuantize",
    "index_bits",
    "l2norm",
    "pack_indices",
    "packed_size",
    "rotate_to",
    "unpack_indices",
]


def l2norm(t: torch.Tensor, dim: int = -1, eps: float = 1e-6) -> torch.Tensor:
    """``t / max(‖t‖₂, eps)`` along ``dim`` (the library's ``l2norm``, eps 1e-6)."""
    return F.normalize(t, p=2, dim=dim, eps=eps)


def rotate_to(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Rotation-trick estimator (Fifty et al. 2024, "Restructuring vector quantization with the rotation
    trick", §4.2): the value of ``tgt`` with gradients that rotate and rescale those of ``src``.

    With u = src/‖src‖, q = tgt/‖tgt‖ and w = (u+q)/‖u+q‖ (all constants), the output is
    (src − 2(src·w)w + 2(src·u)q)·‖tgt‖/‖src‖, which equals ``tgt`` in value and is linear in ``src``.
    """
    shape = src.shape
    src, tgt = src.reshape(-1, shape[-1]), tgt.reshape(-1, shape[-1])
    norm_src = src.norm(dim=-1, keepdim=True)
    norm_tgt = tgt.norm(dim=-1, keepdim=True)
    u = (src / norm_src.clamp(min=1e-6)).detach()
    q = (tgt / norm_tgt.clamp(min=1e-6)).detach()
    w = l2norm(u + q, dim=1).detach()
    e = src.unsqueeze(1)
    rotated = (
        e - 2 * (e @ w.unsqueeze(2) @ w.unsqueeze(1)) + 2 * (e @ u.unsqueeze(2) @ q.unsqueeze(1))
    ).squeeze(1)
    rotated = rotated * (norm_tgt / norm_src.clamp(min=1e-6)).detach()
    return rotated.reshape(shape)


class CosineSimCodebook(nn.Module):
    """A unit-norm codebook with EMA updates; buffers ``initted``, ``cluster_size``, ``embed_avg``, ``embed``.

    Names and shapes follow vector-quantize-pytorch (one codebook: a leading axis of size 1).
    """

    def __init__(self, dim: int, codebook_size: int, decay: float = 0.8, eps: float = 1e-5) -> None:
        super().__init__()
        if codebook_size < 2:
            raise ValueError(f"a codebook needs at least 2 entries, got {codebook_size}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.dim = dim
        self.codebook_size = codebook_size
        self.decay = decay
        self.eps = eps
        embed = torch.empty(1, codebook_size, dim)
        nn.init.kaiming_uniform_(embed)
        embed = l2norm(embed)
        self.register_buffer("initted", torch.ones(1))
        self.register_buffer("cluster_size", torch.ones(1, codebook_size))
        self.register_buffer("embed_avg", embed.clone())
        self.register_buffer("embed", embed)

    def nearest(self, unit: torch.Tensor) -> torch.Tensor:
        """Index of the code with the largest cosine similarity to each unit vector (…, d) → (…)."""
        return (unit.float() @ self.embed[0].detach().t()).argmax(dim=-1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook rows (…, d) of integer ``indices`` (…), which must lie in [0, K)."""
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"VQ indices must lie in [0, {self.codebook_size}), got [{int(indices.min())}, "
                f"{int(indices.max())}]"
            )
        return F.embedding(indices.long(), self.embed[0].detach())

    @torch.no_grad()
    def ema_update(self, unit: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step from the unit vectors (…, d) of a batch and their assigned ``indices`` (…)."""
        flat = unit.detach().float().reshape(-1, self.dim)
        onehot = F.one_hot(indices.reshape(-1), self.codebook_size).to(flat.dtype)
        bins = onehot.sum(dim=0)[None]
        embed_sum = (onehot.t() @ flat)[None].contiguous()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(bins)
            dist.all_reduce(embed_sum)
        self.cluster_size.lerp_(bins, 1 - self.decay)
        self.embed_avg.lerp_(embed_sum, 1 - self.decay)
        total = self.cluster_size.sum(dim=-1, keepdim=True)
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.embed.copy_(l2norm(self.embed_avg / smoothed.unsqueeze(-1)))


@dataclass
class VQOutput:
    """``quantized`` (B, N, dim) after project_out, ``indices`` (B, N), ``commit_loss`` (scalar)."""

    quantized: torch.Tensor
    indices: torch.Tensor
    commit_loss: torch.Tensor


class VectorQuantize(nn.Module):
    """Cosine-similarity VQ with EMA codebook, vector-quantize-pytorch names (see the module docstring).

    Args:
        dim: feature width of the input and output (OSCAR: M = 320).
        codebook_size: number of codes K.
        codebook_dim: width of the code space (OSCAR: 32); ``project_in`` / ``project_out`` are Linear
            layers when it differs from ``dim``, identities otherwise.
        decay, eps: EMA decay and Laplace smoothing.
        rotation_trick: gradient estimator in training (True: rotation trick; False: straight-through).
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        *,
        decay: float = 0.8,
        eps: float = 1e-5,
        rotation_trick: bool = True,
    ) -> None:
        super().__init__()
        codebook_dim = dim if codebook_dim is None else codebook_dim
        for name, value in (("dim", dim), ("codebook_dim", codebook_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        projected = codebook_dim != dim
        self.dim = dim
        self.codebook_dim = codebook_dim
        self.rotation_trick = rotation_trick
        self.project_in: nn.Module = nn.Linear(dim, codebook_dim) if projected else nn.Identity()
        self.project_out: nn.Module = nn.Linear(codebook_dim, dim) if projected else nn.Identity()
        self._codebook = CosineSimCodebook(codebook_dim, codebook_size, decay=decay, eps=eps)

    @property
    def codebook_size(self) -> int:
        return self._codebook.codebook_size

    @property
    def bits_per_index(self) -> int:
        return index_bits(self.codebook_size)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"VQ input must be (B, N, {self.dim}), got {tuple(x.shape)}")

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The unit vectors û = l2norm(project_in(x)) that are matched against the codebook."""
        self._check(x)
        return l2norm(self.project_in(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Indices (B, N) of the nearest codes; no EMA update, no gradient."""
        return self._codebook.nearest(self.project(x))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """project_out(codebook[indices]): (B, N) → (B, N, dim)."""
        return self.project_out(self._codebook.lookup(indices))

    def forward(self, x: torch.Tensor) -> VQOutput:
        """Quantise (B, N, dim); in train mode also update the codebook by EMA and return the commitment
        loss with gradients through the rotation trick (or straight-through)."""
        unit = self.project(x)
        indices = self._codebook.nearest(unit)
        codes = self._codebook.lookup(indices)
        commit_loss = unit.new_zeros(())
        if self.training:
            commit_loss = F.mse_loss(codes.detach(), unit)
            if unit.requires_grad:
                codes = rotate_to(unit, codes) if self.rotation_trick else unit + (codes - unit).detach()
            self._codebook.ema_update(unit, indices)
        return VQOutput(self.project_out(codes), indices, commit_loss)


# ---------------------------------------------------------------------------------------------- packing
def index_bits(num_symbols: int) -> int:
    """Bits of one fixed-length index: ⌈log₂ num_symbols⌉ (at least 1)."""
    if isinstance(num_symbols, bool) or not isinstance(num_symbols, int) or num_symbols < 2:
        raise ValueError(f"an index alphabet needs at least 2 symbols, got {num_symbols!r}")
    return max(1, math.ceil(math.log2(num_symbols)))


def packed_size(count: int, num_symbols: int) -> int:
    """Bytes :func:`pack_indices` writes for ``count`` indices: ⌈count·bits/8⌉."""
    return -(-count * index_bits(num_symbols) // 8)


@timed("entropy")
def pack_indices(
    indices: torch.Tensor | np.ndarray, num_symbols: int, *, padding: Literal["end", "start"] = "end"
) -> bytes:
    """Pack integer indices in [0, num_symbols) as ⌈log₂ num_symbols⌉-bit fields, most significant bit
    first, in the given (row-major) order, into ⌈count·bits/8⌉ bytes.

    ``padding`` places the zero pad bits after the last field (``"end"``, OSCAR) or before the first
    (``"start"``: the fields read as one big-endian integer, OneDC's z packing, the official OneDC code).
    """
    bits = index_bits(num_symbols)
    if isinstance(indices, torch.Tensor):
        if indices.is_floating_point():
            raise TypeError(f"indices must be integers, got {indices.dtype}")
        indices = indices.detach().cpu().numpy()
    values = np.asarray(indices).reshape(-1)
    if not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"indices must be integers, got {values.dtype}")
    if values.size and (values.min() < 0 or values.max() >= num_symbols):
        raise ValueError(f"indices must lie in [0, {num_symbols}), got [{values.min()}, {values.max()}]")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    fields = ((values.astype(np.int64)[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)
    pad = np.zeros(-fields.size % 8, dtype=np.uint8)
    stream = np.concatenate([pad, fields] if _padding_first(padding) else [fields, pad])
    return np.packbits(stream).tobytes()


@timed("entropy")
def unpack_indices(
    data: bytes, count: int, num_symbols: int, *, padding: Literal["end", "start"] = "end"
) -> np.ndarray:
    """Inverse of :func:`pack_indices`: ``count`` indices (int64). Raises :class:`DecodeError` if the
    data has the wrong length, non-zero padding bits, or an index outside [0, num_symbols)."""
    bits = index_bits(num_symbols)
    expected = packed_size(count, num_symbols)
    if len(data) != expected:
        raise DecodeError(
            f"the index stream holds {len(data)} bytes; {count} indices of {bits} bits need {expected}"
        )
    flat = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    pad = flat.size - count * bits
    pad_bits, fields = (
        (flat[:pad], flat[pad:]) if _padding_first(padding) else (flat[count * bits :], flat[: count * bits])
    )
    if pad_bits.any():
        raise DecodeError("the padding bits of the index stream are not zero")
    values = fields.reshape(count, bits).astype(np.int64) @ (1 << np.arange(bits - 1, -1, -1, dtype=np.int64))
    if values.size and values.max() >= num_symbols:
        raise DecodeError(f"an index ({values.max()}) lies outside the codebook of {num_symbols} entries")
    return values


def _padding_first(padding: str) -> bool:
    if padding not in ("end", "start"):
        raise ValueError(f"padding must be 'end' or 'start', got {padding!r}")
    return padding == "start"
