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


def even_tiles(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """(size, offsets) of the fewest tiles of at most ``tile`` covering ``length``, spread evenly.

    Same count n as :func:`tile_offsets`, but every tile has the smallest size that still overlaps its
    neighbour by ``overlap``: size = ⌈(length − overlap)/n⌉ + overlap, offsets evenly spaced from 0 to
    length − size. The anchored layout of :func:`tile_offsets` can compute up to 2× the pixels (256 in
    tiles of 182: 364); this one at most the overlaps (2 × 144 = 288). Sizes and offsets are multiples of
    ``multiple`` (the VAE encoder's stride) when ``length`` is. Example: 256, 182, 32 → 144, [0, 112].
    """
    _check_tile(tile, overlap, "tiling")
    if length <= tile:
        return length, [0]
    count = len(tile_offsets(length, tile, overlap))
    size = min(tile, -(-math.ceil((length - overlap) / count + overlap) // multiple) * multiple)
    slack = (length - size) // multiple
    return size, [round(i * slack / (count - 1)) * multiple for i in range(count)]


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
    even: bool = False,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping tiles of ``x`` (B, C, H, W) and blend the outputs.

    Default (the spec's rule, StableCodec §10.3): square tiles of side T = min(tile, H, W) at
    :func:`tile_offsets`; the overlap shrinks to T // 2 if a side is so narrow that T ≤ overlap.
    ``even=True``: per side the layout of :func:`even_tiles` (rectangular tiles, less recomputation).
    ``fn`` maps a (B, C, h, w) tile to (B, C', h·scale, w·scale); ``scale`` may be a fraction (the VAE
    encoder's 1/8), in which case every tile size and offset must map to whole output positions. The
    running sums are float64 (float32 on devices without float64) and divided in place; the result has
    ``fn``'s output dtype. Each call of ``fn`` sees one tile only, so peak memory is that of a single tile
    plus the output. Two or more tiles show a progress bar (:mod:`diffcodec.progress`).
    """
    if x.ndim != 4:
        raise ValueError(f"tiled_apply expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
    scale = Fraction(scale)
    height, width = x.shape[-2:]
    if even:
        multiple = scale.denominator
        size_y, ys = even_tiles(height, tile, overlap, multiple)
        size_x, xs = even_tiles(width, tile, overlap, multiple)
    else:
        size_y = size_x = min(tile, height, width)
        overlap = overlap if overlap < size_y else size_y // 2
        ys, xs = tile_offsets(height, size_y, overlap), tile_offsets(width, size_x, overlap)
    sizes = [size_y, size_x, *ys, *xs, height, width]
    for position in (size * scale for size in sizes):
        if position.denominator != 1:
            raise ValueError(
                f"tiles of {size_y}×{size_x}, offsets {ys} / {xs} and image size {height}×{width} must map "
                f"to whole output positions at scale {scale}"
            )
    out_y, out_x = int(size_y * scale), int(size_x * scale)
    accumulate = torch.float32 if x.device.type == "mps" else torch.float64
    weights = gaussian_weights(out_y, out_x, dtype=accumulate, device=x.device)
    total = weight_sum = None
    out_dtype = x.dtype
    tiles = [(top, left) for top in ys for left in xs]
    for top, left in progress(tiles, desc=f"{height}x{width} in {size_y}x{size_x} tiles", unit="tile"):
        result = fn(x[..., top : top + size_y, left : left + size_x])
        if result.ndim != 4 or result.shape[-2:] != (out_y, out_x):
            raise ValueError(
                f"fn mapped a {size_y}×{size_x} tile to shape {tuple(result.shape)}; expected "
                f"(B, C, {out_y}, {out_x}) at scale {scale}"
            )
        if total is None:
            out_dtype = result.dtype
            shape = (*result.shape[:2], int(height * scale), int(width * scale))
            total = result.new_zeros(shape, dtype=accumulate)
            weight_sum = torch.zeros(shape[-2:], dtype=accumulate, device=x.device)
        out_top, out_left = int(top * scale), int(left * scale)
        window = (..., slice(out_top, out_top + out_y), slice(out_left, out_left + out_x))
        total[window] += result.to(accumulate) * weights
        weight_sum[window[1:]] += weights
        del result
    return total.div_(weight_sum).to(out_dtype)


__all__ = [
    "LatentTiling",
    "VaeTiling",
    "even_tiles",
    "gaussian_weights",
    "tile_offsets",
    "tiled_apply",
]
