"""OSCAR: hyper-encoder + VQ against the official goldens, full-size layout and parameter counts (meta
device), real coding at every rung of a small config, official checkpoint conversion, calibration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file

from diffcodec.bitstream import Bitstream, DecodeError
from diffcodec.codecs.oscar import (
    OFFICIAL_TIMESTEPS,
    OSCAR,
    HyperEncoder,
    SideField,
    channel_norms,
    check_generation,
    official_lora_targets,
    rescale_to_norms,
    small_config,
)
from diffcodec.codecs.oscar.convert import codec_from_official, load_official, official_codec_kwargs
from diffcodec.entropy.vq import VectorQuantize, l2norm, pack_indices, packed_size, unpack_indices
from diffcodec.imageio import to_tensor
from diffcodec.nn.backbone import reference_configs
from diffcodec.training.calibration import (
    calibrate,
    folder_images,
    implied_similarity,
    timestep_for_similarity,
)
from diffcodec.training.calibration import main as calibration_main
from diffcodec.training.discriminators import LatentDiscriminator
from diffcodec.zoo.hub import CheckpointError

SMALL = {"hyper_channels": 32, "hyper_latent_channels": 64, "codebook_dim": 8, "embedding_length": 8}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared, oversubscribed CPU two threads spin-wait and run ~10× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def manifest(shared_dir: Path) -> dict:
    return json.loads((shared_dir / "specs/manifests/oscar_ckpt.json").read_text())


@pytest.fixture(scope="module")
def small_codec() -> OSCAR:
    torch.manual_seed(0)
    return OSCAR(**SMALL, sample_latent=False).eval()


@pytest.fixture(scope="module")
def kodak_crop(kodak_dir: Path) -> torch.Tensor:
    return to_tensor(kodak_dir / "kodim23.png")[..., 192:320, 288:480]  # 128 × 192, a multiple of 64


# -------------------------------------------------------------------------------------------- goldens
@pytest.mark.parametrize("name", ["hyper_encoder_small_ss8", "hyper_encoder_full_0p0019"])
def test_hyper_encoder_matches_golden(golden_dir: Path, name: str) -> None:
    path = golden_dir / "oscar" / f"{name}.safetensors"
    with safe_open(str(path), "pt") as handle:
        ctor = json.loads(handle.metadata()["ctor"])
    tensors = load_file(str(path))
    encoder = HyperEncoder.from_official(**ctor).eval()
    state = {k.removeprefix("state."): v.float() for k, v in tensors.items() if k.startswith("state.")}
    encoder.load_state_dict(state, strict=True)  # official parameter and codebook buffer names
    x = tensors["input.x"]
    with torch.no_grad():
        indices = encoder.encode(x)
        z_hat = encoder.decode(indices)
        train_path = encoder(x)  # eval mode: no EMA update, same values
    assert torch.equal(indices.flatten(1), tensors["output.vq_indices"])  # row-major over (h, w)
    torch.testing.assert_close(z_hat, tensors["output.z_hat"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(train_path.z_hat, z_hat, atol=0, rtol=0)
    if "output.backbone_out" in tensors:
        with torch.no_grad():
            torch.testing.assert_close(
                encoder.analysis(x), tensors["output.backbone_out"], atol=1e-5, rtol=1e-4
            )
            quantized = encoder.quantizer.decode(indices.flatten(1))
        torch.testing.assert_close(quantized, tensors["output.vq_out"], atol=1e-5, rtol=1e-4)
    assert torch.equal(encoder.quantizer._codebook.embed, state["quantizer._codebook.embed"])  # eval: no EMA


# ------------------------------------------------------------------------------------------ full size
def _meta_checkpoint(manifest: dict) -> dict:
    """An official-layout checkpoint with the manifest's keys and shapes, as meta tensors."""

    def tensors(shapes: dict) -> dict:
        return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}

    lists = manifest["unet_lora_module_lists"]
    return {
        "hyper_encoders": tensors(manifest["hyper_encoders"]),
        "embeddings": torch.nn.Parameter(torch.empty(77, 1024, device="meta")),
        "unet_lora_encoder_modules": lists["encoder"],
        "unet_lora_decoder_modules": lists["decoder"],
        "unet_lora_others_modules": lists["others"],
        "rank_unet": 16,
        "state_dict_unet": tensors(manifest["state_dict_unet"]),
    }


@pytest.fixture(scope="module")
def full_codec(manifest: dict) -> OSCAR:
    """The full-size codec converted from a synthetic official checkpoint, on the meta device."""
    with torch.device("meta"):
        return codec_from_official(
            _meta_checkpoint(manifest), base_model=None, backbone=reference_configs("sd-2.1")
        )


def test_full_size_conversion_and_parameter_counts(full_codec: OSCAR, manifest: dict) -> None:
    counts = manifest["param_counts"]
    assert full_codec.rates == pytest.approx([0.001953125, 0.009765625, 0.03125, 0.04296875, 0.0625,
                                              0.078125, 0.09375, 0.125])  # fmt: skip
    assert full_codec.timesteps == OFFICIAL_TIMESTEPS
    per_rate = list(counts["hyper_encoder_per_rate_params_incl_vq_projections"].values())
    for rung, encoder in enumerate(full_codec.hyper_encoders):
        assert sum(p.numel() for p in encoder.parameters()) == per_rate[rung]
        cfg_ss = 64 // encoder.latent_stride
        assert (
            sum(p.numel() for p in encoder.backbone.parameters())
            == counts["hyper_encoder_backbone_only"][f"cfg_ss={cfg_ss}"]
        )
        assert (
            sum(p.numel() for p in encoder.proj.parameters())
            == counts["hyper_encoder_proj_only"][f"cfg_ss={cfg_ss}"]
        )
        assert sum(b.numel() for b in encoder.buffers()) == list(counts["vq_buffers_per_rate"].values())[rung]
    assert sum(p.numel() for p in full_codec.hyper_encoders.parameters()) == counts["all_8_hyper_encoders"]
    assert full_codec.backbone.conditioning.embedding.numel() == counts["embeddings"]
    state = full_codec.state_dict()
    for group in ("encoder", "decoder", "others"):
        spec = full_codec.backbone.lora_adapters[f"default_{group}"][1]
        assert list(spec.target_modules) == manifest["unet_lora_module_lists"][group]
        assert (spec.rank, spec.scaling) == (16, 0.5)
        lora = sum(v.numel() for k, v in state.items() if f".default_{group}." in k)
        assert lora == counts[f"unet_lora_default_{group}"]
    base = sum(p.numel() for n, p in full_codec.backbone.unet.named_parameters() if ".lora_" not in n)
    assert base == counts["sd21_unet_base"]


def test_official_lora_scan_and_discriminator_size(manifest: dict) -> None:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(reference_configs("sd-2.1")["unet_config"])
        assert official_lora_targets(unet) == manifest["unet_lora_module_lists"]
        discriminator = LatentDiscriminator(unet)
    expected = manifest["param_counts"]["discriminator_training_only"]
    named = dict(discriminator.unet.named_parameters())
    assert (
        sum(p.numel() for n, p in named.items() if ".lora_" not in n)
        == expected["sd21_unet_without_up_blocks_and_conv_out"]
    )
    assert sum(p.numel() for n, p in named.items() if ".lora_" in n) == expected["lora_r16"]
    assert sum(p.numel() for p in discriminator.cls_pred_branch.parameters()) == expected["cls_pred_branch"]


def test_legacy_checkpoints_are_refused(manifest: dict) -> None:
    legacy = manifest["legacy_hyper_encoder_2025_10_11_commit_5bb805c"]["keys_cfg_ss_8_cs_256"]
    with pytest.raises(ValueError, match=r"legacy.*5bb805c"):
        check_generation({f"0.{key}": None for key in legacy})
    with pytest.raises(ValueError, match="does not hold OSCAR hyper-encoders"):
        check_generation({"0.weight": None})
    check_generation({key: None for key in manifest["hyper_encoders"]})


# ------------------------------------------------------------------------------------------------- VQ
def test_vq_ema_update_follows_the_library_formula() -> None:
    torch.manual_seed(1)
    vq = VectorQuantize(12, 5, 4).train()
    book = vq._codebook
    before_avg, before_size = book.embed_avg.clone(), book.cluster_size.clone()
    x = torch.randn(2, 7, 12, requires_grad=True)
    out = vq(x)
    unit = l2norm(vq.project_in(x)).detach().reshape(-1, 4)
    onehot = torch.nn.functional.one_hot(out.indices.reshape(-1), 5).float()
    size = 0.8 * before_size + 0.2 * onehot.sum(0)
    avg = 0.8 * before_avg + 0.2 * (onehot.t() @ unit)
    smoothed = (size + 1e-5) / (size.sum() + 5 * 1e-5) * size.sum()
    torch.testing.assert_close(book.cluster_size, size)
    torch.testing.assert_close(book.embed, l2norm(avg / smoothed[..., None]))
    # value = the selected code (projected out); gradients reach the input through the rotation trick
    codes = before_avg  # embed == embed_avg at init
    torch.testing.assert_close(out.quantized, vq.project_out(codes[0][out.indices]), atol=1e-5, rtol=1e-5)
    (out.quantized.sum() + out.commit_loss).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert out.commit_loss > 0
    vq.eval()
    frozen = book.embed.clone()
    assert vq(x).commit_loss == 0 and torch.equal(book.embed, frozen)


@settings(max_examples=30, deadline=None)
@given(
    st.integers(2, 5000),
    st.lists(st.integers(0, 2**31), min_size=1, max_size=40),
    st.sampled_from(["end", "start"]),
)
def test_index_packing_round_trip(num_symbols: int, raw: list[int], padding: str) -> None:
    indices = np.array([value % num_symbols for value in raw])
    data = pack_indices(indices, num_symbols, padding=padding)
    assert (
        len(data)
        == packed_size(len(indices), num_symbols)
        == math.ceil(len(indices) * math.ceil(math.log2(num_symbols)) / 8)
    )
    assert np.array_equal(unpack_indices(data, len(indices), num_symbols, padding=padding), indices)


def test_index_packing_rejects_malformed_streams(golden_dir: Path) -> None:
    with pytest.raises(DecodeError, match="need 2"):
        unpack_indices(b"\x00", 3, 16)
    with pytest.raises(DecodeError, match="padding bits"):
        unpack_indices(b"\x00\x01", 3, 16)  # 12 bits of indices, the 4 pad bits must be zero
    with pytest.raises(DecodeError, match="outside the codebook"):
        unpack_indices(bytes([0b1111_0000]), 1, 10)  # 4-bit field 15 ≥ 10
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        pack_indices(np.array([16]), 16)
    # the generic packer also writes OneDC's official z packing (big-endian integer, leading pad bits)
    onedc = load_file(str(golden_dir / "onedc/fsq_and_packing.safetensors"))
    expected = bytes(onedc["output.packed_bytes"].tolist())
    assert pack_indices(onedc["output.indices"], 4**7, padding="start") == expected


# --------------------------------------------------------------------------------------------- coding
def test_round_trip_at_every_rung_counts_every_bit(small_codec: OSCAR, kodak_crop: torch.Tensor) -> None:
    height, width = kodak_crop.shape[-2:]
    for rung in range(small_codec.num_rungs):
        stream = small_codec.compress(kodak_crop, quality=rung)  # one model, any rung, no reloading
        data = stream.to_bytes()
        (indices,) = stream.streams
        s = 8 * small_codec.rung_table[rung].latent_stride
        count = (height // s) * (width // s)
        index_bits = count * small_codec.rung_table[rung].bits_per_index
        assert len(indices) == math.ceil(index_bits / 8)
        norms = stream.side[SideField.CHANNEL_NORMS]
        assert norms.dtype == np.float16 and norms.shape == (4,)
        framing = len(Bitstream(stream.model_tag, rung, height, width, {}, [indices]).to_bytes()) - len(
            indices
        )
        side_framing = 3  # field count, type/key tag, array length: 1 byte each
        assert 8 * len(data) == 8 * len(indices) + 64 + 8 * (framing + side_framing)
        assert stream.bpp == pytest.approx(8 * len(data) / (height * width))
        x_hat = small_codec.decompress(data, output="tensor")
        assert x_hat.shape == kodak_crop.shape and torch.isfinite(x_hat).all()
        assert (
            small_codec.compress(kodak_crop, quality=rung).to_bytes() == data
        )  # posterior mean: deterministic
        if rung == 0:
            torch.testing.assert_close(small_codec.decompress(data, output="tensor"), x_hat, atol=0, rtol=0)


def test_decoder_rebuilds_the_encoder_latent(small_codec: OSCAR, kodak_crop: torch.Tensor) -> None:
    rung = 4
    small_codec.set_rung(rung)
    with torch.no_grad():
        z0 = small_codec.encode_latent(kodak_crop)
        out = small_codec(kodak_crop)  # eval: the training path without EMA
        z_hat = small_codec.hyper_encoders[rung].decode(out.aux["indices"])
    torch.testing.assert_close(out.aux["z_hat"], z_hat)
    z_tilde = rescale_to_norms(z_hat, channel_norms(z0))
    torch.testing.assert_close(channel_norms(z_tilde), channel_norms(z0))
    bits = out.bits()
    assert bits.item() == (16 * 24) * 4 + 64  # 16×24 grid of 4-bit indices + 4 fp16 norms


def test_bad_files_and_inputs_raise_clear_errors(small_codec: OSCAR, kodak_crop: torch.Tensor) -> None:
    stream = small_codec.compress(kodak_crop, quality=2)
    truncated = Bitstream(
        stream.model_tag, 2, stream.height, stream.width, stream.side, [stream.streams[0][:-1]]
    )
    with pytest.raises(DecodeError, match="index stream"):
        small_codec.decompress(truncated)
    no_norms = Bitstream(stream.model_tag, 2, stream.height, stream.width, {}, stream.streams)
    with pytest.raises(DecodeError, match="missing"):
        small_codec.decompress(no_norms)
    bad_norms = {SideField.CHANNEL_NORMS: np.array([1, 2, 3], dtype=np.float16)}
    with pytest.raises(DecodeError, match="4 float16"):
        small_codec.decompress(
            Bitstream(stream.model_tag, 2, stream.height, stream.width, bad_norms, stream.streams)
        )
    other = OSCAR(
        **SMALL, name="oscar-other", rungs=[{"latent_stride": 1, "codebook_size": 16}], timesteps=[200]
    )
    with pytest.raises(DecodeError, match="another model"):
        other.decompress(stream)
    with pytest.raises(ValueError, match="multiples of 8"):
        small_codec.hyper_encoders[0].encode(torch.zeros(1, 4, 12, 16))
    fine, coarse = {"latent_stride": 1, "codebook_size": 16}, {"latent_stride": 8, "codebook_size": 16}
    with pytest.raises(ValueError, match="ascend"):
        OSCAR(**SMALL, rungs=[fine, coarse], timesteps=[200, 500])
    with pytest.raises(ValueError, match="2 rungs need 2 timesteps"):
        OSCAR(**SMALL, rungs=[coarse, fine], timesteps=[200])
    assert small_codec.select_rung(bpp=0.03) == 2


# ----------------------------------------------------------------------------------------- conversion
def _official_small_checkpoint(path: Path) -> dict:
    """An official-layout oscar.pkl for the small config, built the way the official code builds it."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(3)
    unet = UNet2DConditionModel.from_config(small_config()["unet_config"])
    lists = official_lora_targets(unet)
    for group, modules in lists.items():
        unet.add_adapter(LoraConfig(r=16, init_lora_weights="gaussian", target_modules=modules),
                         adapter_name=f"default_{group}")  # fmt: skip
    for name, parameter in unet.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.01)  # trained adapters are not zero
    encoders = torch.nn.ModuleList(
        HyperEncoder.from_official(4, 32, 64, 8, 64 // s, k)
        for s, k in [(8, 256), (4, 1024), (2, 256), (2, 2048), (1, 16), (1, 32), (1, 64), (1, 256)]
    )
    checkpoint = {
        "hyper_encoders": encoders.state_dict(),
        "embeddings": torch.nn.Parameter(torch.randn(8, 32) * 0.02),
        **{f"unet_lora_{group}_modules": modules for group, modules in lists.items()},
        "rank_unet": 16,
        "state_dict_unet": {k: v for k, v in unet.state_dict().items() if "lora" in k or "conv_in" in k},
    }
    torch.save(checkpoint, path)
    return checkpoint


def test_convert_official_checkpoint(tmp_path: Path, kodak_crop: torch.Tensor) -> None:
    checkpoint = _official_small_checkpoint(tmp_path / "oscar.pkl")
    codec = load_official(tmp_path / "oscar.pkl", base_model=None, backbone=small_config())
    state = codec.state_dict()
    for key, value in checkpoint["hyper_encoders"].items():
        assert torch.equal(state[f"hyper_encoders.{key}"], value)
    for key, value in checkpoint["state_dict_unet"].items():
        assert torch.equal(state[f"backbone.unet.{key}"], value)
    assert torch.equal(state["backbone.conditioning.embedding"], checkpoint["embeddings"].detach())
    assert official_codec_kwargs(checkpoint)["rungs"][0] == {"latent_stride": 8, "codebook_size": 256}
    stream = codec.compress(kodak_crop, quality=7)
    assert codec.decompress(stream, output="tensor").shape == kodak_crop.shape
    # a file of another kind, and a checkpoint with a stray tensor, are refused with the reason
    torch.save({"hyper_encoders": {}}, tmp_path / "bad.pkl")
    with pytest.raises(CheckpointError, match="missing"):
        load_official(tmp_path / "bad.pkl", base_model=None, backbone=small_config())
    checkpoint["state_dict_unet"]["conv_out.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="neither a LoRA"):
        codec_from_official(checkpoint, base_model=None, backbone=small_config())


# ---------------------------------------------------------------------------------------- calibration
def test_timestep_mapping_matches_the_spec_tables(small_codec: OSCAR) -> None:
    alphas = small_codec.backbone.alphas_cumprod  # SD's scaled-linear schedule
    inverse = {
        0.95: 93,
        0.90: 162,
        0.85: 220,
        0.80: 270,
        0.75: 317,
        0.70: 360,
        0.65: 401,
        0.60: 441,
        0.50: 520,
    }
    assert {c: timestep_for_similarity(alphas, c) for c in inverse} == inverse
    implied = [0.526, 0.652, 0.757, 0.790, 0.859, 0.877, 0.894, 0.910]
    assert [round(implied_similarity(alphas, t), 3) for t in OFFICIAL_TIMESTEPS] == implied
    with pytest.raises(ValueError):
        timestep_for_similarity(alphas, 1.5)


def test_calibration_produces_a_table_stored_in_the_config(
    small_codec: OSCAR, kodak_dir: Path, tmp_path: Path
) -> None:
    images = list(folder_images(kodak_dir, 64, crop=128, max_images=2))
    assert [tuple(x.shape[-2:]) for x in images] == [(128, 128)] * 2
    result = calibrate(small_codec, images)
    assert result.images == 2 and len(result.timesteps) == small_codec.num_rungs
    alphas = small_codec.backbone.alphas_cumprod
    for similarity, timestep in zip(result.similarities, result.timesteps):
        assert -1 <= similarity <= 1
        gaps = (alphas.sqrt() - similarity).abs()
        assert gaps[timestep] == gaps.min()
    # the command: load a saved model, calibrate, write the model with the table in its config.json
    small_codec.save_pretrained(tmp_path / "model")
    args = ["-m", str(tmp_path / "model"), str(kodak_dir), "--max-images", "2", "--crop", "128"]
    assert calibration_main([*args, "--output", str(tmp_path / "calibrated")]) == 0
    config = json.loads((tmp_path / "calibrated/config.json").read_text())
    assert config["init_args"]["timesteps"] == list(result.timesteps)
    assert OSCAR.from_pretrained(tmp_path / "calibrated").timesteps == result.timesteps
    assert small_codec.timesteps == OFFICIAL_TIMESTEPS  # calibrate() itself changes nothing
