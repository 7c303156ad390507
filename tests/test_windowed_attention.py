"""Windowed attention (diffcodec.nn.windowed_attention): exact per-window attention, linear cost, saved with
the codec and read back in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from diffcodec.codecs.oscar import OSCAR
from diffcodec.nn.backbone import OneStepBackbone, small_backbone, tiny_configs
from diffcodec.nn.windowed_attention import WindowedSelfAttnProcessor, in_windows, level_grid

pytestmark = pytest.mark.usefixtures("single_thread")


def test_in_windows_visits_every_window_once_whatever_the_size():
    grid = torch.randn(2, 37, 53, 3)

    def window_mean(windows: torch.Tensor) -> torch.Tensor:  # each output depends on its own window only
        return windows.mean(dim=(1, 2), keepdim=True).expand_as(windows)

    out = in_windows(window_mean, grid, 16)
    for top in range(0, 37, 16):
        for left in range(0, 53, 16):
            crop = grid[:, top : top + 16, left : left + 16]
            expected = crop.mean(dim=(1, 2), keepdim=True).expand_as(crop)
            torch.testing.assert_close(out[:, top : top + 16, left : left + 16], expected)


def test_at_most_four_window_shapes_are_batched():
    calls = []
    in_windows(lambda w: calls.append(w.shape) or w, torch.randn(1, 100, 70, 2), 16)
    assert calls == [(24, 16, 16, 2), (6, 16, 6, 2), (4, 4, 16, 2), (1, 4, 6, 2)]


def test_level_grid_finds_the_u_net_level():
    assert level_grid(37 * 53, (37, 53)) == (37, 53, 0)
    assert level_grid(19 * 27, (37, 53)) == (19, 27, 1)  # ⌈37/2⌉ × ⌈53/2⌉: stride-2 convs with padding 1
    assert level_grid(10 * 14, (37, 53)) == (10, 14, 2)
    with pytest.raises(ValueError, match="match no level"):
        level_grid(1000, (37, 53))


def test_self_attention_equals_attention_on_each_window_and_cross_attention_is_global():
    torch.manual_seed(0)
    attention = Attention(query_dim=16, heads=2, dim_head=8).eval()
    cross = Attention(query_dim=16, heads=2, dim_head=8, cross_attention_dim=12).eval()
    tokens = torch.randn(2, 20 * 36, 16)
    processor = WindowedSelfAttnProcessor(8)
    with torch.no_grad():
        out = processor(attention, tokens, latent_size=(20, 36)).reshape(2, 20, 36, 16)
        grid = tokens.reshape(2, 20, 36, 16)
        for top in range(0, 20, 8):
            for left in range(0, 36, 8):
                crop = grid[:, top : top + 8, left : left + 8]
                expected = AttnProcessor2_0()(attention, crop.reshape(2, -1, 16)).reshape(crop.shape)
                torch.testing.assert_close(out[:, top : top + 8, left : left + 8], expected)
        # the next U-Net level (10 × 18 tokens) uses windows of 4: the same field of view in pixels
        coarse = torch.randn(1, 10 * 18, 16)
        windowed = processor(attention, coarse, latent_size=(20, 36)).reshape(1, 10, 18, 16)
        first = AttnProcessor2_0()(attention, coarse.reshape(1, 10, 18, 16)[:, :4, :4].reshape(1, 16, 16))
        torch.testing.assert_close(windowed[:, :4, :4].reshape(1, 16, 16), first)
        context = torch.randn(2, 5, 12)
        expected = AttnProcessor2_0()(cross, tokens, context)
        torch.testing.assert_close(processor(cross, tokens, context, latent_size=(20, 36)), expected)


def make_backbone(window: int | None) -> OneStepBackbone:
    torch.manual_seed(0)
    return small_backbone(
        {**tiny_configs(), "unet_attention_window": window}, tiny_configs(), conditioning="learned"
    ).eval()


def test_one_window_is_exactly_global_attention_and_larger_latents_differ():
    windowed, plain = make_backbone(8), make_backbone(None)
    assert isinstance(windowed.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.processor,
                      WindowedSelfAttnProcessor)  # fmt: skip
    with torch.no_grad():
        small = torch.randn(1, 4, 8, 8)
        torch.testing.assert_close(windowed.predict(small, 500), plain.predict(small, 500))
        large = torch.randn(1, 4, 16, 24)
        assert not torch.allclose(windowed.predict(large, 500), plain.predict(large, 500), atol=1e-4)
        windowed.set_unet_attention_window(None)  # back to global: the same as never windowed
        torch.testing.assert_close(windowed.predict(large, 500), plain.predict(large, 500))


class AttentionCost(AttnProcessor2_0):
    """The stock processor, counting query × key positions of every self-attention it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.scores = 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        if encoder_hidden_states is None:
            self.scores += hidden_states.shape[0] * hidden_states.shape[1] ** 2
        return super().__call__(attn, hidden_states, encoder_hidden_states, *args, **kwargs)


def attention_cost(window: int | None, side: int) -> int:
    backbone = make_backbone(None)
    cost = AttentionCost()
    backbone.unet.set_attn_processor(cost if window is None else WindowedSelfAttnProcessor(window, cost))
    backbone.unet_attention_window = window  # (what set_unet_attention_window records)
    with torch.no_grad():
        backbone.predict(torch.randn(1, 4, side, side), 500, tiled=False)
    return cost.scores


def test_windowed_u_net_attention_cost_is_linear_in_pixels():
    assert attention_cost(8, 64) == 4 * attention_cost(8, 32)  # 4× the pixels: 4× the attention
    assert attention_cost(None, 64) == 16 * attention_cost(None, 32)  # global attention: quadratic


def test_windows_are_saved_with_the_codec_and_reloaded_in_a_fresh_process(tmp_path):
    backbone = {**tiny_configs(), "unet_attention_window": 8, "vae_attention_window": 4}
    torch.manual_seed(0)
    codec = OSCAR(name="tiny", backbone=backbone, rungs=[{"latent_stride": 2, "codebook_size": 16}],
                  timesteps=[400], hyper_channels=8, hyper_latent_channels=8, codebook_dim=4,
                  embedding_length=4).eval()  # fmt: skip
    codec.backbone.set_unet_attention_window(4)  # changed after construction: the saved config follows
    codec.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["init_args"]["backbone"]
    assert (saved["unet_attention_window"], saved["vae_attention_window"]) == (4, 4)
    script = (
        "import sys, diffcodec; b = diffcodec.load(sys.argv[1]).backbone; "
        "print(b.unet_attention_window, b.vae_attention_window, "
        "type(b.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.processor).__name__)"
    )
    command = [sys.executable, "-c", script, str(tmp_path)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4", "4", "WindowedSelfAttnProcessor"]


def test_unknown_backbone_keys_are_refused():
    with pytest.raises(ValueError, match="may set unet_attention_window"):
        small_backbone({**tiny_configs(), "unet_window": 8}, tiny_configs())


def test_a_base_folder_brings_its_windows_and_the_codec_argument_wins(tmp_path):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    configs = tiny_configs()
    AutoencoderKL.from_config(configs["vae_config"]).save_pretrained(tmp_path / "vae")
    UNet2DConditionModel.from_config(configs["unet_config"]).save_pretrained(tmp_path / "unet")
    DDPMScheduler.from_config(configs["scheduler_config"]).save_pretrained(tmp_path / "scheduler")
    assert small_backbone(tmp_path, configs).unet_attention_window is None  # no backbone.json: global
    (tmp_path / "backbone.json").write_text('{"unet_attention_window": 16, "vae_attention_window": 16}')
    backbone = small_backbone(tmp_path, configs, vae_attention_window=8)
    assert (backbone.unet_attention_window, backbone.vae_attention_window) == (16, 8)
    assert backbone.base_configs()["unet_attention_window"] == 16  # what a saved codec records
    (tmp_path / "backbone.json").write_text('{"attention_window": 16}')
    with pytest.raises(ValueError, match="may only set unet_attention_window"):
        small_backbone(tmp_path, configs)
