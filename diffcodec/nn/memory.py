"""When to tile: only when the untiled pass would not fit the memory available.

The official OSCAR and OneDC code never tiles, StableCodec tiles above fixed sizes. Tiling changes the
output (each tile sees only its neighbourhood, and VAE tiles normalise with their own statistics), so
diffcodec tiles a pass (U-Net, VAE encoder, VAE decoder) only when it must::

    tile = "never"   never (out-of-memory is the caller's risk)
    tile = "always"  whenever the input exceeds the tile size (the StableCodec release's rule)
    tile = "auto"    (default) when the input exceeds the tile size AND
                     estimated activation bytes of the untiled pass  >  memory budget of the device

Below the budget "auto" runs exactly the untiled computation, bit for bit.

**Estimates** (inference, no gradients, PyTorch's scaled-dot-product attention, which does not materialise
the attention matrix; ``e`` = bytes per element of the model's dtype, B = batch)::

    U-Net at h×w latent positions:   B·h·w · 24·C_unet · e  + 256 MiB     C_unet = block_out_channels[0]
    VAE at H×W pixels (enc. / dec.): B·H·W ·  8·C_vae  · e  + 256 MiB     C_vae  = block_out_channels[0]

24·C_unet counts the skip connections the U-Net keeps (≈ 5 maps of the first level's width) and the
working set of its widest transformer block (≈ 18 maps: q, k, v, the 4× feed-forward with GEGLU, the
concatenated skip input); 8·C_vae the full-resolution resnet working set. Measured on the full-size SD-2.1
models (fp32, CPU, peak RSS growth, ``docs/backbone.md``): the U-Net grows by 25 KB per latent position
(formula: 30.7 KB) and the VAE decoder by 3.5 KB per output pixel (formula: 4 KB), plus ≈ 150 MB
(U-Net) / 70 MB (VAE) fixed: the estimates are upper bounds.

**Budget** per device: CUDA — free memory (``torch.cuda.mem_get_info``) plus memory PyTorch has cached but
not allocated, × 0.8; CPU (and other devices) — ``MemAvailable`` of ``/proc/meminfo`` (else free physical
pages) × 0.5. The environment variable ``DIFFCODEC_MEMORY_BUDGET`` (bytes, or e.g. ``"6GiB"``, ``"800MB"``)
overrides both.
"""

from __future__ import annotations

import os
import re
from typing import Literal, get_args

import torch

TileMode = Literal["auto", "never", "always"]
TILE_MODES: tuple[str, ...] = get_args(TileMode)
MEMORY_BUDGET_ENV = "DIFFCODEC_MEMORY_BUDGET"
UNET_MAPS_PER_POSITION = 24  # × block_out_channels[0]
VAE_MAPS_PER_PIXEL = 8  # × block_out_channels[0]
FIXED_BYTES = 256 * 2**20
CUDA_MARGIN = 0.8
CPU_MARGIN = 0.5
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}  # fmt: skip


def check_tile_mode(mode: str) -> TileMode:
    """``mode`` if it is one of "auto", "never", "always", else ``ValueError``."""
    if mode not in TILE_MODES:
        raise ValueError(f"tile must be one of {', '.join(TILE_MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def unet_activation_bytes(base_channels: int, batch: int, height: int, width: int, element_size: int) -> int:
    """Estimated activation bytes of one untiled U-Net pass at ``height × width`` latent positions."""
    return batch * height * width * UNET_MAPS_PER_POSITION * base_channels * element_size + FIXED_BYTES


def vae_bytes_per_pixel(base_channels: int, batch: int, element_size: int) -> int:
    """The slope of :func:`vae_activation_bytes`: estimated activation bytes per image pixel."""
    return batch * VAE_MAPS_PER_PIXEL * base_channels * element_size


def vae_activation_bytes(base_channels: int, batch: int, height: int, width: int, element_size: int) -> int:
    """Estimated activation bytes of one untiled VAE encoder or decoder pass at ``height × width`` pixels."""
    return height * width * vae_bytes_per_pixel(base_channels, batch, element_size) + FIXED_BYTES


def parse_bytes(text: str) -> int:
    """``"6GiB"`` → 6·2³⁰, ``"800MB"`` → 8·10⁸, ``"1234"`` → 1234."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{MEMORY_BUDGET_ENV}={text!r} is not a size (e.g. 6GiB, 800MB, 1234)")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_budget(device: torch.device | str) -> int:
    """Bytes a pass may use on ``device`` (see the module docstring)."""
    override = os.environ.get(MEMORY_BUDGET_ENV)
    if override:
        return parse_bytes(override)
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((free + cached) * CUDA_MARGIN)
    return int(_available_ram() * CPU_MARGIN)


def fitting_tile(tile: int, overlap: int, bytes_per_position: int, budget: int, multiple: int = 1) -> int:
    """The side of the largest square tile, at most ``tile``, whose pass fits ``budget`` bytes.

    ``bytes_per_position`` is the estimate's slope (e.g. 8·C_vae·e per pixel); the side never drops
    below 2·overlap + ``multiple`` (tiles must still overlap; below that memory cannot shrink) and is a
    multiple of ``multiple``.
    """
    room = max(budget - FIXED_BYTES, 0) // max(bytes_per_position, 1)
    side = int(room**0.5) // multiple * multiple
    return max(min(tile, side), 2 * overlap + multiple)


def needs_tiles(mode: TileMode, exceeds_tile: bool, estimate: int, device: torch.device | str) -> bool:
    """Whether to tile a pass: never below the tile size; above it by ``mode`` (the estimate for "auto")."""
    if not exceeds_tile or mode == "never":
        return False
    return mode == "always" or estimate > memory_budget(device)
