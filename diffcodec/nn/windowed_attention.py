"""Windowed self-attention: attention restricted to non-overlapping windows, so its cost grows linearly
with the number of pixels instead of quadratically.

Two diffusers attention processors (installed with ``Attention.set_processor`` /
``UNet2DConditionModel.set_attn_processor``; no forward is replaced) share one partition,
:func:`in_windows`::

    (B, H, W, C) ──cut into w×w windows, row-major from the top-left──► (B·n, w·w, C) ──fn──► back in place

The last row / column of windows is narrower when a side is not a multiple of w; windows of one shape
are batched, so there are at most four calls of ``fn`` whatever the size.

- :class:`WindowedAttnProcessor` — the VAE mid-block attention on a (B, C, H, W) map, group norm and
  residual inside each window: OneDC §5 (window 16), and the bundled small models.
- :class:`WindowedSelfAttnProcessor` — the self-attention (``attn1``) of the U-Net's transformer blocks,
  whose tokens arrive flattened (B, h·w, C). The backbone passes the latent size through
  ``cross_attention_kwargs={"latent_size": (h, w)}``; a block at U-Net level k (tokens
  ⌈h/2ᵏ⌉·⌈w/2ᵏ⌉) uses windows of max(1, w >> k), i.e. the same field of view in pixels at every level.
  Cross-attention (``attn2``) is unchanged. *Deviation, small models only*: SD's U-Net attends
  globally; diffcodec's small bundled models were trained on 128-px crops (16×16 latents), so a
  16-latent window gives every window the context it was trained with, at linear cost (the speed
  issue's "no full-resolution global attention"). The full-size methods keep global attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


def in_windows(fn: Callable[[torch.Tensor], torch.Tensor], grid: torch.Tensor, window: int) -> torch.Tensor:
    """Apply ``fn`` to the ``window``×``window`` windows of a channels-last ``grid`` (B, H, W, C).

    ``fn`` maps windows (N, w_h, w_w, C) to (N, w_h, w_w, C') and sees every window of one shape in a
    single batch. Returns (B, H, W, C').
    """
    batch, height, width, _ = grid.shape
    out_rows = []
    for top, count_y, size_y in _bands(height, window):
        out_row = []
        for left, count_x, size_x in _bands(width, window):
            part = grid[:, top : top + count_y * size_y, left : left + count_x * size_x]
            windows = part.reshape(batch, count_y, size_y, count_x, size_x, -1).permute(0, 1, 3, 2, 4, 5)
            result = fn(windows.reshape(batch * count_y * count_x, size_y, size_x, -1))
            result = result.reshape(batch, count_y, count_x, size_y, size_x, -1).permute(0, 1, 3, 2, 4, 5)
            out_row.append(result.reshape(batch, count_y * size_y, count_x * size_x, -1))
        out_rows.append(torch.cat(out_row, dim=2))
    return torch.cat(out_rows, dim=1)


def _bands(length: int, window: int) -> list[tuple[int, int, int]]:
    """(start, count, size) runs of equal windows covering ``length``: full windows, then the rest."""
    full, rest = divmod(length, window)
    bands = [(0, full, window)] if full else []
    return [*bands, (full * window, 1, rest)] if rest else bands


def _check_window(window: int) -> int:
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"attention window must be a positive int, got {window!r}")
    return window


class _Windowed:
    """A window size and the processor that runs inside each window (diffusers' SDPA one by default)."""

    def __init__(self, window: int, processor: object | None = None) -> None:
        self.window = _check_window(window)
        self.processor = processor if processor is not None else AttnProcessor2_0()


class WindowedAttnProcessor(_Windowed):
    """Attention over non-overlapping windows of a (B, C, H, W) feature map (OneDC §5).

    Windows of ``window``×``window`` positions are laid out row-major from the top-left corner; the last
    row/column of windows may be smaller (the official eval path; for sides divisible by ``window`` this
    equals its training path). Each window runs the wrapped processor on its own — group norm,
    single-head attention and residual included — exactly as the unpatched attention would on that crop.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        if hidden_states.ndim != 4 or encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("WindowedAttnProcessor handles spatial self-attention on (B, C, H, W) maps only")

        def attend(windows: torch.Tensor) -> torch.Tensor:  # (N, h, w, C) ↔ the processor's (N, C, h, w)
            crop = windows.permute(0, 3, 1, 2).contiguous()
            return self.processor(attn, crop, temb=temb).permute(0, 2, 3, 1)

        grid = hidden_states.permute(0, 2, 3, 1)
        return in_windows(attend, grid, self.window).permute(0, 3, 1, 2).contiguous()


class WindowedSelfAttnProcessor(_Windowed):
    """U-Net transformer self-attention restricted to windows; cross-attention left global.

    Needs ``latent_size=(h, w)`` (the U-Net input's spatial size) from ``cross_attention_kwargs``; without
    it, or for cross-attention, the wrapped processor runs unchanged.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        latent_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        plain = encoder_hidden_states is not None or attention_mask is not None or latent_size is None
        if plain or hidden_states.ndim != 3:
            return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        batch, length, channels = hidden_states.shape
        height, width, level = level_grid(length, latent_size)
        window = max(1, self.window >> level)
        if height <= window and width <= window:
            return self.processor(attn, hidden_states, None, None, temb)

        def attend(windows: torch.Tensor) -> torch.Tensor:  # (N, h, w, C) ↔ tokens (N, h·w, C)
            count, size_y, size_x, _ = windows.shape
            tokens = windows.reshape(count, size_y * size_x, channels)
            return self.processor(attn, tokens, None, None, temb).reshape(count, size_y, size_x, -1)

        grid = hidden_states.reshape(batch, height, width, channels)
        return in_windows(attend, grid, window).reshape(batch, length, -1)


def level_grid(tokens: int, latent_size: Sequence[int]) -> tuple[int, int, int]:
    """(height, width, level k) of the U-Net level whose ⌈h/2ᵏ⌉·⌈w/2ᵏ⌉ grid holds ``tokens`` positions."""
    height, width = (int(side) for side in latent_size)
    for level in range(64):
        scale = 2**level
        grid_h, grid_w = math.ceil(height / scale), math.ceil(width / scale)
        if grid_h * grid_w == tokens:
            return grid_h, grid_w, level
        if grid_h * grid_w < tokens or (grid_h == 1 and grid_w == 1):
            break
    raise ValueError(f"{tokens} attention tokens match no level of a {height}×{width} latent")


__all__ = ["WindowedAttnProcessor", "WindowedSelfAttnProcessor", "in_windows", "level_grid"]
