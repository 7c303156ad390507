"""Tiling: run a network tile by tile and blend the tiles, so that any resolution fits in bounded memory.

One routine, :func:`tiled_apply`, serves both tiled passes of the backbone::

    input (B, C, H, W) ──split into T×T tiles at tile_offsets()──► fn(tile) ──× gaussian_weights──► Σ
                                                         output = Σ_tiles w·fn(tile) / Σ_tiles w

- **Latent tiling of the U-Net** (StableCodec §10.3, exact): T = min(96, h, w), overlap 32, the last
  tile anchored at the end, weights w(y, x) = g_y(y)·g_x(x) with the spec's asymmetric centres.
- **Tiled VAE encode / decode**: the same overlapping tiles and weights, with the output grid scaled by
  the VAE's stride (÷8 for the encoder, ×8 for the decoder). *Deviation from StableCodec §10.2*, whose
  "Ultimate VAE Tile Optimization" hook decomposes the VAE into a task list and shares GroupNorm
  statistics across tiles. We run each tile through the unmodified diffusers encoder/decoder instead,
  because (1) memory is then bounded by the tile size alone — sharing GroupNorm statistics means keeping
  every tile's activations between two norms, i.e. a full-resolution feature map; (2) it needs no
  re-implementation of diffusers' Encoder/Decoder forward; (3) it is differentiable as is. The price: each
  tile normalises with its own statistics, so tiles can differ slightly in tone; the Gaussian blending
  over the overlap hides the seams, and the colour fix of StableCodec §10.4 corrects a global shift.
  Tiling only starts above the spec's thresholds (encoder input > 1088 px, decoder latent > 182), so
  images up to those sizes are processed exactly as without tiling.

*Whether* a pass larger than its tile is tiled is :mod:`diffcodec.nn.memory`'s decision: by default
("auto") only when the untiled pass would not fit the device's memory budget.

Windowed attention (OneDC §5's VAE mid-block, the small models' U-Net), the other way to bound a pass's
cost, is :mod:`diffcodec.nn.windowed_attention`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import torch

from diffcodec.nn.windowed_attention import WindowedAttnProcessor  # re-exported: its old home
from diffcodec.progress import progress


@dataclass(frozen=True)
class LatentTiling:
    """U-Net latent tiling (StableCodec §10.3): used when h·w > tile², tiles of min(tile, h, w)."""

    tile: int = 96
    overlap: int = 32

    def __post_init__(self) -> None:
        _check_tile(self.tile, self.overlap, "latent")

    def applies(self, height: int, width: int) -> bool:
        return height * width > self.tile * self.tile


@dataclass(frozen=True)
class VaeTiling:
    """Tiled VAE sizes. Encoder in pixels (multiples of the VAE stride), decoder in latent positions.

    A pass is tiled when the larger side exceeds the tile (the spec's thresholds: 1088 px, 182 latent).
    The overlaps are wider than the spec's 2×32 px / 2×11 latent padding because blending, unlike
    cropping, also uses the outer part of each tile.
    """

    encoder_tile: int = 1088
    encoder_overlap: int = 128
    decoder_tile: int = 182
    decoder_overlap: int = 32

    def __post_init__(self) -> None:
        _check_tile(self.encoder_tile, self.encoder_overlap, "VAE encoder")
        _check_tile(self.decoder_tile, self.decoder_overlap, "VAE decoder")


def _check_tile(tile: int, overlap: int, what: str) -> None:
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < 1:
        raise ValueError(f"{what} tile must be a positive int, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"{what} overlap must be an int in [0, tile={tile}), got {overlap!r}")


def tile_offsets(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` (StableCodec §10.3).

    n is the smallest count with (n−1)·(tile − overlap) + tile ≥ length; offsets are i·(tile − overlap)
    for all but the last tile, which is anchored at length − tile. Example: 256, 96, 32 → 0, 64, 128, 160.
    """
    _check_tile(tile, overlap, "tiling")
    if length < 1:
        raise ValueError(f"length must be positive, got {length}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return [i * stride for i in range(count - 1)] + [length - tile]


def gaussian_weights(
    height: int,
    width: int,
    *,
    variance: float = 0.01,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Blending weights w(y, x) = g_y(y)·g_x(x) of StableCodec §10.3, shape (height, width).

    g_x(x) = exp(−(x − (W−1)/2)² / W² / (2v)) / √(2πv) and g_y(y) = exp(−(y − H/2)² / H² / (2v)) / √(2πv),
    v = 0.01 — note the asymmetric centres (W−1)/2 and H/2, kept as in the official code.
    """
    norm = math.sqrt(2 * math.pi * variance)
    x = torch.arange(width, dtype=torch.float64, device=device)
    y = torch.arange(height, dtype=torch.float64, device=device)
    g_x = torch.exp(-((x - (width - 1) / 2) ** 2) / width**2 / (2 * variance)) / norm
    g_y = torch.exp(-((y - height / 2) ** 2) / height**2 / (2 * variance)) / norm
    return torch.outer(g_y, g_x).to(dtype)


def tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    tile: int,
    overlap: int,
    scale: int | Fraction = 1,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping square tiles of ``x`` (B, C, H, W) and blend the outputs.

    Tiles have side T = min(tile, H, W) (the spec's rule); the overlap shrinks to T // 2 if a side is so
    narrow that T ≤ overlap. ``fn`` maps a (B, C, T, T) tile to (B, C', T·scale, T·scale); ``scale`` may
    be a fraction (the VAE encoder's 1/8), in which case every tile size and offset must map to whole
    output positions. Weights and the running sums are float64 (float32 on devices without float64);
    the result has ``fn``'s output dtype. Each call of ``fn`` sees one tile only, so peak memory is that of
    a single tile plus the output. Two or more tiles show a progress bar (:mod:`diffcodec.progress`).
    """
    if x.ndim != 4:
        raise ValueError(f"tiled_apply expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    scale = Fraction(scale)
    height, width = x.shape[-2:]
    size = min(tile, height, width)
    overlap = overlap if overlap < size else size // 2
    out_size = size * scale
    ys, xs = tile_offsets(height, size, overlap), tile_offsets(width, size, overlap)
    for position in [out_size, *(o * scale for o in ys + xs), height * scale, width * scale]:
        if position.denominator != 1:
            raise ValueError(
                f"tile size {size}, offsets {ys} / {xs} and image size {height}×{width} must map to whole "
                f"output positions at scale {scale}"
            )
    out_size = int(out_size)
    accumulate = torch.float32 if x.device.type == "mps" else torch.float64
    weights = gaussian_weights(out_size, out_size, dtype=accumulate, device=x.device)
    total = weight_sum = None
    out_dtype = x.dtype
    tiles = [(top, left) for top in ys for left in xs]
    for top, left in progress(tiles, desc=f"{height}x{width} in {size}x{size} tiles", unit="tile"):
        result = fn(x[..., top : top + size, left : left + size])
        if result.ndim != 4 or result.shape[-2:] != (out_size, out_size):
            raise ValueError(
                f"fn mapped a {size}×{size} tile to shape {tuple(result.shape)}; expected "
                f"(B, C, {out_size}, {out_size}) at scale {scale}"
            )
        if total is None:
            out_dtype = result.dtype
            shape = (*result.shape[:2], int(height * scale), int(width * scale))
            total = result.new_zeros(shape, dtype=accumulate)
            weight_sum = torch.zeros(shape[-2:], dtype=accumulate, device=x.device)
        out_top, out_left = int(top * scale), int(left * scale)
        window = (..., slice(out_top, out_top + out_size), slice(out_left, out_left + out_size))
        total[window] = total[window] + result.to(accumulate) * weights
        weight_sum[window[1:]] += weights
    return (total / weight_sum).to(out_dtype)


__all__ = [
    "LatentTiling",
    "VaeTiling",
    "WindowedAttnProcessor",
    "gaussian_weights",
    "tile_offsets",
    "tiled_apply",
]
