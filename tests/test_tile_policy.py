"""Tiling only where it must (diffcodec/nn/memory.py): "auto" runs the untiled pass, bit for bit, while
its estimated activation memory fits the device's budget, and tiles beyond; "never" / "always"; the
``tile`` setting of codecs and the ``--tile`` option of the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from diffcodec.cli import main as cli_main
from diffcodec.codecs.latent_hyperprior import LatentHyperprior
from diffcodec.nn.backbone import OneStepBackbone, tiny_configs
from diffcodec.nn.memory import (
    MEMORY_BUDGET_ENV,
    check_tile_mode,
    memory_budget,
    needs_tiles,
    parse_bytes,
    unet_activation_bytes,
    vae_activation_bytes,
)
from diffcodec.nn.tiling import LatentTiling, VaeTiling

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_sizes_modes_and_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_bytes("6GiB") == 6 * 2**30 and parse_bytes("800 MB") == 8 * 10**8
    assert parse_bytes("1234") == 1234 and parse_bytes("1.5kib") == 1536
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes("lots")
    with pytest.raises(ValueError, match="auto, never, always"):
        check_tile_mode("sometimes")
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    assert 0 < memory_budget("cpu") < 2**50  # half the available RAM
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "3GiB")
    assert memory_budget("cpu") == 3 * 2**30
    # the SD U-Net (C = 320) at a 128² latent (1024² px), fp32: 128²·24·320·4 B + 256 MiB ≈ 0.75 GiB
    assert unet_activation_bytes(320, 1, 128, 128, 4) == 128 * 128 * 24 * 320 * 4 + 256 * 2**20
    # the SD VAE (C = 128) decoding 1024² px, fp32: 1024²·8·128·4 B + 256 MiB = 4.25 GiB
    assert vae_activation_bytes(128, 1, 1024, 1024, 4) == 4 * 2**30 + 256 * 2**20
    assert not needs_tiles("always", False, 2**60, "cpu")  # never below the tile size
    assert not needs_tiles("never", True, 2**60, "cpu")
    assert needs_tiles("always", True, 0, "cpu")
    assert needs_tiles("auto", True, 3 * 2**30 + 1, "cpu") and not needs_tiles("auto", True, 3 * 2**30, "cpu")


def count_calls(module: nn.Module) -> tuple[list[int], object]:
    calls: list[int] = []
    return calls, module.register_forward_pre_hook(lambda *_: calls.append(1))


@pytest.fixture(scope="module")
def backbone() -> OneStepBackbone:
    torch.manual_seed(0)
    return OneStepBackbone.from_config(
        **tiny_configs(), conditioning="learned", latent_tiling=LatentTiling(tile=16, overlap=8),
        vae_tiling=VaeTiling(encoder_tile=64, encoder_overlap=32, decoder_tile=8, decoder_overlap=4),
    )  # fmt: skip


@pytest.mark.parametrize("part", ["unet", "vae_decoder", "vae_encoder"])
def test_auto_equals_the_untiled_pass_below_the_budget_and_tiles_above(
    backbone: OneStepBackbone, part: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    generator = torch.Generator()
    latent, image = (
        torch.randn(1, 4, 16, 24, generator=generator),
        torch.rand(1, 3, 64, 96, generator=generator),
    )
    run, module = {
        "unet": (lambda: backbone.predict(latent), backbone.unet),
        "vae_decoder": (lambda: backbone.decode(latent[..., :8, :12]), backbone.vae.decoder),
        "vae_encoder": (lambda: backbone.encode(image * 2 - 1), backbone.vae.encoder),
    }[part]
    assert backbone.tile == "auto"  # the default

    def outputs(mode: str, budget: str) -> tuple[torch.Tensor, int]:
        monkeypatch.setenv(MEMORY_BUDGET_ENV, budget)
        backbone.tile = mode
        calls, handle = count_calls(module)
        try:
            with torch.no_grad():
                return run(), len(calls)
        finally:
            handle.remove()
            backbone.tile = "auto"

    plenty, none = "1TiB", "1"
    untiled, calls = outputs("never", none)
    assert calls == 1
    auto, calls = outputs("auto", plenty)
    assert calls == 1 and torch.equal(auto, untiled)  # bit for bit
    tiled, calls = outputs("always", plenty)
    assert calls > 1 and not torch.equal(tiled, untiled)
    auto, calls = outputs("auto", none)  # does not fit: tiles
    assert calls > 1 and torch.equal(auto, tiled)


def test_codec_tile_setting_and_the_command_line(tmp_path: Path, kodak_dir: Path) -> None:
    torch.manual_seed(0)
    codec = LatentHyperprior(channels=16, latent_channels=16, hyper_channels=8)
    assert codec.tile == "auto"
    codec.tile = "never"
    assert codec.backbone.tile == "never"
    with pytest.raises(ValueError, match="auto, never, always"):
        codec.tile = "maybe"
    codec.save_pretrained(tmp_path / "model")  # a runtime setting: not in config.json
    assert "tile" not in (tmp_path / "model" / "config.json").read_text()

    image = kodak_dir / "kodim01.png"
    out = tmp_path / "k.dcb"
    assert (
        cli_main(["compress", str(image), "-m", str(tmp_path / "model"), "--tile", "never", "-o", str(out)])
        == 0
    )
    assert cli_main(["decompress", str(out), "-m", str(tmp_path / "model"), "--tile", "always",
                     "-o", str(tmp_path / "k.png")]) == 0  # fmt: skip
    assert (tmp_path / "k.png").is_file()
    assert cli_main(["compress", str(image), "-m", str(tmp_path / "model"), "--tile", "sometimes"]) == 2
