"""OneDC codec: real coding round trips (normal and z-only), rungs, the hub round trip, checkpoint conversion.

Small configs of the real classes (``TINY_LATENT_CODEC`` and a tiny random SD-like backbone, random init).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from diffcodec.bitstream import Bitstream, DecodeError
from diffcodec.codecs.base import Codec
from diffcodec.codecs.onedc import (
    EXLOW_RATE,
    OFFICIAL_LAMBDAS,
    OFFICIAL_RATES,
    TINY_LATENT_CODEC,
    OneDC,
    small_backbone_config,
)
from diffcodec.codecs.onedc.convert import codec_from_official, parse_folder_name
from diffcodec.imageio import to_tensor
from diffcodec.zoo.hub import CheckpointError

SEMANTIC = TINY_LATENT_CODEC["unet_channels"][-1]


def tiny_onedc(**kwargs) -> OneDC:
    torch.manual_seed(0)
    options = {"latent_codec": TINY_LATENT_CODEC, "backbone": small_backbone_config(SEMANTIC), **kwargs}
    return OneDC(**options).eval()


@pytest.fixture(scope="module")
def kodak_crop(kodak_dir) -> torch.Tensor:
    """A 60×100 crop of a Kodak image (padded to 64×128 by the codec)."""
    image = Image.open(kodak_dir / "kodim23.png").convert("RGB").crop((300, 200, 400, 260))
    return to_tensor(image)


@pytest.fixture(scope="module")
def codec() -> OneDC:
    """Two rungs: the z-only model and a λ model with its own (perturbed) weights."""
    model = tiny_onedc(name="onedc-test", lambdas=[8.0, 2.0], rates=[EXLOW_RATE, 0.03], z_only=[True, False])
    model.set_rung(1)
    with torch.no_grad():
        for parameter in [*model.latent_codec.parameters(), *model.vae_reduction.parameters()]:
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.set_rung(0)
    return model


def test_round_trip_normal_mode(codec: OneDC, kodak_crop: torch.Tensor) -> None:
    stream = codec.compress(kodak_crop, quality=1)
    assert len(stream.streams) == 2 and (stream.height, stream.width) == (60, 100)
    # [y, z]: the fixed-length z last, where the container stores no length
    assert len(stream.streams[1]) == codec.latent_codec.z_vq.packed_size(1 * 2) == 4  # 2 indices × 14 bits
    data = stream.to_bytes()
    assert stream.bpp == pytest.approx(8 * len(data) / (60 * 100))
    assert codec.compress(kodak_crop, quality=1).to_bytes() == data  # deterministic (VAE sample seeded)
    x_hat = codec.decompress(data, output="tensor")
    assert x_hat.shape == (1, 3, 60, 100) and x_hat.min() >= 0 and x_hat.max() <= 1
    assert torch.equal(codec.decompress(data, output="tensor"), x_hat)


def test_format_1_files_with_z_first_still_decode(codec: OneDC, kodak_crop: torch.Tensor) -> None:
    """Version-1 files held [z, y]; version 2 writes [y, z] (z's length is then implicit)."""
    from test_bitstream import legacy

    stream = codec.compress(kodak_crop, quality=1)
    y, z = stream.streams
    size = (stream.height, stream.width)
    old = Bitstream(stream.model_tag, stream.rung, *size, side=stream.side, streams=[z, y])
    assert len(z) == codec.latent_codec.z_vq.packed_size(1 * 2) and old.to_bytes() != stream.to_bytes()
    x_hat = codec.decompress(stream.to_bytes(), output="tensor")
    assert torch.equal(codec.decompress(legacy(old), output="tensor"), x_hat)


def test_round_trip_z_only_mode(codec: OneDC, kodak_crop: torch.Tensor) -> None:
    stream = codec.compress(kodak_crop, quality=0)
    assert [len(s) for s in stream.streams] == [4]  # the hyper-latent alone
    data = stream.to_bytes()
    assert len(data) < 4 + 12  # plus the container header
    x_hat = codec.decompress(data, output="tensor")
    assert x_hat.shape == (1, 3, 60, 100)
    # ŷ = Σ_k μ_k ⊙ M_k is the prior with every symbol forced to 0: coding ŷ itself gives back ŷ
    with torch.no_grad():
        common = codec.latent_codec.hyper_decode(torch.zeros(1, 7, 1, 2))[1]
        y_hat = codec.latent_codec.mean_only(common)
        model, params = codec.latent_codec.context_model(common)
        out = model(y_hat, params)
    assert torch.equal(out["y_hat"], y_hat) and torch.all(torch.round(y_hat - out["means"]) == 0)
    forged = Bitstream(model_tag=stream.model_tag, rung=1, height=60, width=100, streams=stream.streams)
    with pytest.raises(DecodeError, match="2 streams"):
        codec.decompress(forged.to_bytes())


def test_malformed_files_raise_decode_error(codec: OneDC, kodak_crop: torch.Tensor) -> None:
    stream = codec.compress(kodak_crop, quality=1)
    z_bytes, y_bytes = stream.streams
    cut = Bitstream(
        model_tag=stream.model_tag, rung=1, height=100, width=130, streams=[z_bytes[:-2], y_bytes]
    )
    with pytest.raises(DecodeError, match="index stream"):
        codec.decompress(cut.to_bytes())
    with pytest.raises(DecodeError):
        codec.decompress(stream.to_bytes()[:-5])
    other = tiny_onedc(name="another-onedc")
    with pytest.raises(DecodeError, match="another model"):
        other.decompress(stream.to_bytes())


def test_rungs_survive_save_and_load(codec: OneDC, kodak_crop: torch.Tensor, tmp_path: Path) -> None:
    data = codec.compress(kodak_crop, quality=1).to_bytes()
    codec.save_pretrained(tmp_path)
    loaded = Codec.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, OneDC) and loaded.z_only == (True, False) and loaded.rates == codec.rates
    assert loaded.quality == codec.quality == 1
    assert loaded.compress(kodak_crop, quality=1).to_bytes() == data
    # the inactive rung came back from rungs.0.* and differs from rung 1
    assert not torch.equal(
        loaded._bank[0]["vae_reduction.short_cut.weight"], loaded.vae_reduction.short_cut.weight
    )
    loaded.set_rung(0)
    codec.set_rung(0)
    assert torch.equal(loaded.vae_reduction.short_cut.weight, codec.vae_reduction.short_cut.weight)


def test_forward_training_path(kodak_crop: torch.Tensor) -> None:
    model = tiny_onedc().train()
    x = torch.nn.functional.interpolate(kodak_crop, size=(64, 128))
    out = model(x)
    assert out.x_hat.shape == x.shape and out.likelihoods["y"].shape == (1, 16, 4, 8)
    assert out.rate_bits["z"].item() == 14 * 2
    out.x_hat.mean().backward()
    assert model.vae_reduction.short_cut.weight.grad is not None
    assert model.latent_codec.enc.pix_emb.weight.grad is not None
    assert all(p.grad is None for k, p in model.backbone.named_parameters() if k.startswith("vae."))
    with pytest.raises(ValueError, match="multiples of 64"):
        model(torch.rand(1, 3, 96, 64))


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="rates"):
        tiny_onedc(lambdas=[1.0, 2.0], rates=[0.2, 0.1])
    with pytest.raises(ValueError, match="z_only"):
        tiny_onedc(lambdas=[1.0], z_only=[True, False])
    with pytest.raises(ValueError, match="both"):
        tiny_onedc(base_unet="tianweiy/DMD2")
    with pytest.raises(ValueError, match="cross-attention"):
        tiny_onedc(backbone=small_backbone_config(64))


# ---------------------------------------------------------------------------------------------- conversion
def _write_official(model: OneDC, folder: Path) -> None:
    """The release layout (spec §8): model.safetensors (generator) + model_1.safetensors (IntraNoAR)."""
    folder.mkdir(parents=True)
    generator = dict(model.backbone.unet.state_dict())
    generator.update({f"vae_reduction.{k}": v for k, v in model.vae_reduction.state_dict().items()})
    save_file({k: v.contiguous() for k, v in generator.items()}, str(folder / "model.safetensors"))
    codec = model.latent_codec.official_state_dict()
    save_file({k: v.contiguous() for k, v in codec.items()}, str(folder / "model_1.safetensors"))


def test_folder_names_give_lambda_and_mode() -> None:
    assert parse_folder_name("/x/lambda4.6") == (4.6, False)
    assert parse_folder_name("onedc_lambda12.2_ckpt") == (12.2, False)
    assert parse_folder_name("exlow_bpp0034") == (None, True)
    assert dict(zip(OFFICIAL_LAMBDAS, OFFICIAL_RATES))[4.6] == 0.0245


def test_synthetic_official_checkpoints_convert_cleanly(kodak_crop: torch.Tensor, tmp_path: Path) -> None:
    source = tiny_onedc(name="src")
    with torch.no_grad():  # LoRA B is zero at init: make the adapters matter
        for key, parameter in source.backbone.unet.named_parameters():
            if ".lora_B." in key:
                parameter.normal_(0, 0.01)
    exlow = tiny_onedc(name="src")
    exlow.backbone.unet.load_state_dict(source.backbone.unet.state_dict())  # one shared base U-Net
    with torch.no_grad():
        exlow.latent_codec.dec.conv_out.block[0].conv2.weight.mul_(0.5)
    _write_official(source, tmp_path / "lambda4.6")
    _write_official(exlow, tmp_path / "exlow_bpp0034")

    torch.manual_seed(0)  # the same random VAE as the source (the VAE is not in the official files)
    converted = codec_from_official(
        [tmp_path / "lambda4.6", tmp_path / "exlow_bpp0034"], name="src",
        latent_codec=TINY_LATENT_CODEC, backbone=small_backbone_config(SEMANTIC),
    )  # fmt: skip
    assert converted.z_only == (True, False) and converted.rates == (EXLOW_RATE, 0.0245)
    assert converted.lambdas[1] == 4.6
    converted.set_rung(1)
    assert torch.equal(converted.backbone.unet.conv_in.weight, source.backbone.unet.conv_in.weight)
    reference = source.compress(kodak_crop).streams
    assert converted.compress(kodak_crop, quality=1).streams == reference
    exlow.z_only = (True,)
    assert converted.compress(kodak_crop, quality=0).streams == exlow.compress(kodak_crop).streams

    broken = tmp_path / "lambda2.9"
    _write_official(source, broken)
    from safetensors.torch import load_file

    state = load_file(str(broken / "model.safetensors"))
    state.pop("vae_reduction.short_cut.bias")
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(CheckpointError, match="vae_reduction"):
        codec_from_official(
            [broken], latent_codec=TINY_LATENT_CODEC, backbone=small_backbone_config(SEMANTIC)
        )
    other_base = tiny_onedc()
    torch.manual_seed(1)
    other_base.backbone.unet.conv_out.weight.data.normal_()
    _write_official(other_base, tmp_path / "lambda1.0")
    with pytest.raises(CheckpointError, match="differ from the base"):
        codec_from_official(
            [tmp_path / "lambda4.6", tmp_path / "lambda1.0"], latent_codec=TINY_LATENT_CODEC,
            backbone=small_backbone_config(SEMANTIC),
        )  # fmt: skip
    with pytest.raises(FileNotFoundError, match="model_1"):
        (tmp_path / "lambda4.6" / "model_1.safetensors").unlink()
        codec_from_official([tmp_path / "lambda4.6"])
