"""Tiling: StableCodec §10.3 offsets and Gaussian weights, exact blending, tiled VAE / U-Net, bounded inputs,
and OneDC's windowed VAE attention."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0
from torch import nn

from diffcodec.nn.backbone import OneStepBackbone, tiny_configs
from diffcodec.nn.memory import FIXED_BYTES, fitting_tile
from diffcodec.nn.tiling import (
    LatentTiling,
    VaeTiling,
    even_tiles,
    gaussian_weights,
    tile_offsets,
    tiled_apply,
)
from diffcodec.nn.windowed_attention import WindowedAttnProcessor

pytestmark = pytest.mark.usefixtures("single_thread")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def record_inputs(module: nn.Module) -> tuple[list[tuple[int, ...]], object]:
    """Forward pre-hook that records the shape of every input the module sees."""
    shapes: list[tuple[int, ...]] = []
    handle = module.register_forward_pre_hook(lambda _, args: shapes.append(tuple(args[0].shape)))
    return shapes, handle


# ---------------------------------------------------------------------------------------------- geometry
def test_tile_offsets_spec_examples():
    assert tile_offsets(256, 96, 32) == [0, 64, 128, 160]  # §10.3: latent 256 wide
    assert tile_offsets(192, 96, 32) == [0, 64, 96]  # §10.3: latent 192 high
    assert tile_offsets(96, 96, 32) == [0]
    assert tile_offsets(97, 96, 32) == [0, 1]


@pytest.mark.parametrize("length", [1, 95, 96, 97, 159, 160, 161, 255, 1000])
def test_tile_offsets_cover_with_the_fewest_tiles(length):
    tile, overlap = min(96, length), 32 if length > 32 else 0
    offsets = tile_offsets(length, tile, overlap)
    covered = torch.zeros(length, dtype=torch.bool)
    for offset in offsets:
        assert 0 <= offset <= length - tile
        covered[offset : offset + tile] = True
    assert covered.all()
    n = len(offsets)
    assert (n - 1) * (tile - overlap) + tile >= length  # enough tiles …
    assert n == 1 or (n - 2) * (tile - overlap) + tile < length  # … and no more than needed
    assert offsets == sorted(offsets)


def test_tile_arguments_are_validated():
    with pytest.raises(ValueError, match="overlap"):
        tile_offsets(100, 32, 32)
    with pytest.raises(ValueError, match="tile"):
        LatentTiling(tile=0)
    with pytest.raises(ValueError, match="overlap"):
        VaeTiling(decoder_tile=16, decoder_overlap=20)


@pytest.mark.parametrize("length", [1, 100, 183, 256, 384, 512, 1000, 3072, 4096])
@pytest.mark.parametrize(("tile", "overlap", "multiple"), [(182, 32, 1), (96, 32, 1), (1088, 128, 8)])
def test_even_tiles_cover_with_the_same_count_and_less_recomputation(length, tile, overlap, multiple):
    length = length * multiple
    size, offsets = even_tiles(length, tile, overlap, multiple)
    anchored = tile_offsets(length, tile, overlap)
    assert len(offsets) == len(anchored) and size <= tile
    assert offsets[0] == 0 and offsets[-1] + size == length  # covers the whole side
    assert all(b - a <= size - overlap for a, b in itertools.pairwise(offsets))  # neighbours overlap
    assert size * len(offsets) <= min(tile, length) * len(anchored)  # never more work than the spec's
    assert size % multiple == 0 and all(o % multiple == 0 for o in offsets)


def test_even_tiles_example_and_the_budget_sized_tile():
    assert even_tiles(256, 182, 32) == (144, [0, 112])  # the spec's anchored layout: 2 × 182 = 364
    per_pixel = 8 * 16 * 4  # the bundled VAE (C = 16), fp32
    assert fitting_tile(1088, 128, per_pixel, 2**40, 8) == 1088  # plenty of memory: the configured tile
    assert fitting_tile(1088, 128, per_pixel, FIXED_BYTES + 512 * 512 * per_pixel, 8) == 512
    assert fitting_tile(1088, 128, per_pixel, 0, 8) == 264  # no room: the smallest tile that still overlaps


def test_gaussian_weights_formula_and_asymmetric_centres():
    height, width = 6, 9
    w = gaussian_weights(height, width)
    assert w.dtype == torch.float64 and w.shape == (height, width)
    norm = math.sqrt(2 * math.pi * 0.01)
    for y, x in [(0, 0), (3, 4), (5, 8), (2, 7)]:
        g_x = math.exp(-((x - (width - 1) / 2) ** 2) / width**2 / 0.02) / norm
        g_y = math.exp(-((y - height / 2) ** 2) / height**2 / 0.02) / norm
        assert w[y, x].item() == pytest.approx(g_x * g_y, rel=1e-12)
    assert w[3].argmax().item() == 4  # x peak at (W−1)/2
    assert w[:, 4].argmax().item() == 3  # y peak at H/2 (not (H−1)/2)
    torch.testing.assert_close(w[:, 0], w[:, -1])  # symmetric in x …
    assert w[0, 4] < w[-1, 4]  # … but not in y


def test_latent_tiling_threshold():
    tiling = LatentTiling()
    assert not tiling.applies(64, 96)  # Kodak: no tiling
    assert not tiling.applies(96, 96)
    assert tiling.applies(96, 97)


# ---------------------------------------------------------------------------------------------- blending
def test_pointwise_functions_tile_exactly_at_any_scale():
    """Normalised weights make tiling exact for per-position maps: checks offsets, scales and sums."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 40, 56)
    mix = nn.Conv2d(4, 3, 1)
    with torch.no_grad():
        torch.testing.assert_close(tiled_apply(mix, x, tile=16, overlap=6), mix(x), rtol=1e-6, atol=1e-6)
        up = lambda t: F.interpolate(mix(t), scale_factor=8, mode="nearest")  # noqa: E731
        torch.testing.assert_close(tiled_apply(up, x, tile=16, overlap=8, scale=8), up(x), rtol=1e-6, atol=0)
        down = lambda t: F.avg_pool2d(mix(t), 8)  # noqa: E731
        torch.testing.assert_close(
            tiled_apply(down, x, tile=16, overlap=8, scale=Fraction(1, 8)), down(x), rtol=1e-6, atol=1e-6
        )
        with pytest.raises(ValueError, match="whole output positions"):
            tiled_apply(down, x, tile=20, overlap=6, scale=Fraction(1, 8))
        with pytest.raises(ValueError, match="expected"):
            tiled_apply(mix, x, tile=16, overlap=6, scale=2)


def test_convolutions_tile_almost_exactly_when_the_overlap_covers_the_receptive_field():
    """Zero padding at tile borders only reaches r = 4 positions; the Gaussian weights keep it out."""
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(4)])
    x = torch.randn(1, 4, 40, 56)
    with torch.no_grad():
        tiled, full = tiled_apply(net, x, tile=16, overlap=12), net(x)
    assert relative_error(tiled, full) < 5e-3


# ---------------------------------------------------------------------------------------------- backbone
@pytest.fixture(scope="module")
def backbone() -> OneStepBackbone:
    torch.manual_seed(0)
    return OneStepBackbone.from_config(
        **tiny_configs(), conditioning="learned", conv_in_channels=8, tile="always"
    )  # tiles above the tile size, whatever the memory (the default "auto": test_tile_policy.py)


def test_tiled_vae_decode_bounds_inputs_and_matches_untiled(backbone):
    backbone.vae_tiling = VaeTiling(encoder_tile=64, encoder_overlap=32, decoder_tile=48, decoder_overlap=24)
    torch.manual_seed(1)
    latent = torch.randn(1, 4, 48, 80) * 0.18215
    shapes, handle = record_inputs(backbone.vae.decoder)
    try:
        with torch.no_grad():
            tiled = backbone.decode(latent, clamp=False)  # 80 > 48: tiled automatically
            tiles = list(shapes)
            full = backbone.decode(latent, clamp=False, tiled=False)
            first_tile = backbone.decode(latent[..., :43], clamp=False, tiled=False)
    finally:
        handle.remove()
    # VAE tiles are laid out evenly (even_tiles): 80 wide in three tiles of 43 at 0, 18, 37
    assert len(tiles) == 3 and all(s[-2:] == (48, 43) for s in tiles)
    # where only the first tile has weight, the blend is that tile's output exactly
    torch.testing.assert_close(tiled[..., : 18 * 8], first_tile[..., : 18 * 8], rtol=1e-5, atol=1e-6)
    # elsewhere, tiles normalise with their own GroupNorm statistics: close, not equal (tiling.py docstring).
    # Random tiny VAEs measure 6–11 % (seeds 0–2); a wrong offset or weight normalisation gives ~100 %.
    assert relative_error(tiled, full) < 0.2


def test_tiled_vae_encode_bounds_inputs_and_matches_untiled(backbone):
    backbone.vae_tiling = VaeTiling(encoder_tile=128, encoder_overlap=64, decoder_tile=48, decoder_overlap=24)
    torch.manual_seed(2)
    x = torch.rand(1, 3, 128, 256) * 2 - 1
    shapes, handle = record_inputs(backbone.vae.encoder)
    try:
        with torch.no_grad():
            tiled = backbone.encode(x)
            tiles = list(shapes)
            full = backbone.encode(x, tiled=False)
    finally:
        handle.remove()
    assert tiled.shape == full.shape == (1, 4, 16, 32)
    assert len(tiles) == 3 and all(s[-2:] == (128, 128) for s in tiles)
    assert relative_error(tiled, full) < 0.2  # measured 7.7–8.0 % (seeds 0–2), see the decode test
    with pytest.raises(ValueError, match="multiples of 8"):
        backbone.vae_tiling = VaeTiling(encoder_tile=100, encoder_overlap=20)
        backbone.encode(x)


def test_latent_tiling_of_the_unet_bounds_inputs_and_matches_untiled(backbone):
    backbone.latent_tiling = LatentTiling(tile=48, overlap=32)
    torch.manual_seed(3)
    l_t = torch.randn(1, 8, 48, 64)
    shapes, handle = record_inputs(backbone.unet)
    try:
        with torch.no_grad():
            tiled = backbone.denoise(l_t)  # 48·64 > 48²: tiled automatically
            tiles = list(shapes)
            full = backbone.denoise(l_t, tiled=False)
    finally:
        handle.remove()
    assert len(tiles) == 2 and all(s == (1, 8, 48, 48) for s in tiles)  # offsets 0 and 16
    assert relative_error(tiled, full) < 0.05  # measured 1.4–1.6 % (seeds 0–2)
    backbone.latent_tiling = None
    shapes, handle = record_inputs(backbone.unet)
    with torch.no_grad():
        backbone.predict(l_t)
    handle.remove()
    assert shapes == [(1, 8, 48, 64)]


def test_tiled_paths_are_differentiable(backbone):
    backbone.latent_tiling = LatentTiling(tile=16, overlap=8)
    l_t = torch.randn(1, 8, 16, 24, requires_grad=True)
    backbone.denoise(l_t).square().mean().backward()
    assert l_t.grad is not None and l_t.grad.abs().sum() > 0
    assert backbone.unet.conv_in.weight.grad is not None


# ---------------------------------------------------------------------------------------------- windowed attn
def test_windowed_attention_equals_attention_on_each_window(backbone):
    attention = backbone.vae.decoder.mid_block.attentions[0]
    torch.manual_seed(4)
    h = torch.randn(1, 32, 10, 12)
    with torch.no_grad():
        plain = AttnProcessor2_0()(attention, h)
        assert torch.allclose(WindowedAttnProcessor(16)(attention, h), plain, atol=1e-6)  # one window
        windowed = WindowedAttnProcessor(4)(attention, h)
        for top in range(0, 10, 4):  # the last row / column of windows is smaller (2 wide)
            for left in range(0, 12, 4):
                crop = h[..., top : top + 4, left : left + 4].contiguous()
                expected = AttnProcessor2_0()(attention, crop)
                torch.testing.assert_close(windowed[..., top : top + 4, left : left + 4], expected)
    assert not torch.allclose(windowed, plain, atol=1e-4)


def test_backbone_switches_vae_attention_window(backbone):
    backbone.vae_tiling = None
    latent = torch.randn(1, 4, 6, 8)
    with torch.no_grad():
        global_attention = backbone.decode(latent, clamp=False)
        backbone.set_vae_attention_window(4)
        processors = [a.processor for a in backbone.vae.decoder.mid_block.attentions]
        assert all(isinstance(p, WindowedAttnProcessor) and p.window == 4 for p in processors)
        windowed = backbone.decode(latent, clamp=False)
        backbone.set_vae_attention_window(None)
        torch.testing.assert_close(backbone.decode(latent, clamp=False), global_attention)
    assert not torch.allclose(windowed, global_attention, atol=1e-4)
