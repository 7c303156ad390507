"""OneDC against the official goldens (``specs/golden/onedc``) and the spec's full-size counts and key lists.

The unit blocks are covered by ``test_blocks_golden.py``; here: the four-part masks, DCVC's Gaussian tables
and scale indexes, the four-part prior, and the small end-to-end ``IntraNoAR`` (analysis → FSQ → prior →
coding → decoding). Byte streams are diffcodec's own (constriction), so the official rANS bytes are not
compared; the symbols, indexes and decoded tensors are.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffcodec.codecs.onedc import (
    FULL_LATENT_CODEC,
    SMALL_LATENT_CODEC,
    DCVCGaussianConditional,
    OneDC,
    OneDCLatentCodec,
    eval_bpp_estimate,
)
from diffcodec.entropy.coder import decode_symbols, encode_symbols
from diffcodec.entropy.quadtree import quadtree_masks, squeeze_groups
from diffcodec.nn.backbone import reference_configs
from diffcodec.nn.lora import adapted_modules

ATOL, RTOL = 1e-5, 1e-4


def _golden(golden_dir, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(golden_dir / "onedc" / f"{name}.safetensors"))


def _state(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("state.") :]: v.float() for k, v in golden.items() if k.startswith("state.")}


def test_four_part_masks_are_the_shared_quadtree_masks(golden_dir) -> None:
    golden = _golden(golden_dir, "four_part_masks")
    masks = quadtree_masks(8, 5, 7)  # odd sizes: the pattern is tiled from the top-left corner
    for step in range(4):
        assert torch.equal(masks[step][None], golden[f"output.mask_{step}"])
    micro = quadtree_masks(4, 5, 7)[0]  # at step 0, channel group g codes position type m_g
    for position in range(4):
        assert torch.equal(micro[position][None, None], golden[f"output.micro_m{position}"])


def test_dcvc_gaussian_tables_and_scale_indexes(golden_dir) -> None:
    tables = _golden(golden_dir, "gaussian_cdf_table")
    gaussian = DCVCGaussianConditional()
    assert gaussian.update() and not gaussian.update()  # built once
    # the float table is the correctly rounded exp (machine-independent), the official one a float32 exp
    # whose last bit depends on the CPU: within one ulp; the integer tables below are identical
    torch.testing.assert_close(gaussian.scale_table, tables["output.scale_table"], rtol=1.2e-7, atol=0.0)
    assert torch.equal(gaussian.quantized_cdf, tables["output.quantized_cdf"])
    assert torch.equal(gaussian.cdf_length, tables["output.cdf_length"])
    assert torch.equal(gaussian.offset, tables["output.offset"])
    stream = _golden(golden_dir, "rans_gaussian_stream")
    indexes = gaussian.build_indexes(stream["input.scales"])
    assert torch.equal(indexes, stream["output.indexes"])
    # the same symbols (escapes 60 … 29999 included) round-trip through diffcodec's coder with these tables
    symbols = stream["input.symbols"].int()
    data = encode_symbols(symbols, indexes, gaussian.cdf_table())
    assert np.array_equal(decode_symbols(data, indexes, gaussian.cdf_table()), symbols.numpy())
    assert len(data) <= len(stream["output.stream"]) + 32  # same information, another coder


def test_four_part_prior_matches_forward_and_writing_order(golden_dir) -> None:
    golden = _golden(golden_dir, "four_part_prior_small")
    n = 8
    codec = OneDCLatentCodec(**{**SMALL_LATENT_CODEC, "bottleneck_channels": n}).eval()
    state = _state(golden)
    result = codec.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert {k.split(".")[0] for k in state} == {
        "y_spatial_prior", "y_spatial_prior_reduction", "y_spatial_prior_adaptor_1",
        "y_spatial_prior_adaptor_2", "y_spatial_prior_adaptor_3",
    }  # fmt: skip
    y, common = golden["input.y"], golden["input.common_params"]
    with torch.no_grad():
        model, params = codec.context_model(common)
        out = model(y, params)
    y_res = y - out["means"]
    symbols = torch.round(y_res)
    torch.testing.assert_close(y_res, golden["output.y_res"], atol=ATOL, rtol=RTOL)
    assert torch.equal(symbols, golden["output.y_q"])
    torch.testing.assert_close(out["y_hat"], golden["output.y_hat"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out["scales"], golden["output.scales_hat"], atol=ATOL, rtol=RTOL)
    masks = quadtree_masks(n, 6, 6)
    for step in range(4):  # what each step writes: 2 = N/4 channels, (c', h, w) order
        assert torch.equal(squeeze_groups(symbols, masks[step]), golden[f"output.y_q_w_{step}"])
        torch.testing.assert_close(
            squeeze_groups(out["scales"], masks[step]),
            golden[f"output.scales_w_{step}"],
            atol=ATOL,
            rtol=RTOL,
        )
    codec.update()
    with torch.no_grad():
        coded = model.compress(y, params)
        decoded = model.decompress(coded["strings"], y.shape[-2:], params)["y_hat"]
    assert torch.equal(decoded, coded["y_hat"])
    torch.testing.assert_close(decoded, golden["output.y_hat"], atol=ATOL, rtol=RTOL)


@pytest.fixture(scope="module")
def e2e(golden_dir):
    golden = _golden(golden_dir, "intranoar_small_e2e")
    ctor = json.loads(_metadata(golden_dir)["ctor"])
    codec = OneDCLatentCodec(
        cond_channels=ctor["cond_ch"], ctrl_channels=ctor["ctrl_ch"], internal_channels=ctor["internal_ch"],
        bottleneck_channels=ctor["bottleneck_ch"], unet_channels=ctor["unet_ch_config"],
        z_levels=ctor["z_fsq_levels"],
    ).eval()  # fmt: skip
    codec.load_official_state_dict(_state(golden))
    return codec, golden


def _metadata(golden_dir) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(golden_dir / "onedc" / "intranoar_small_e2e.safetensors"), "pt") as handle:
        return handle.metadata()


def test_intranoar_small_forward_matches_the_official_eval_pass(e2e) -> None:
    codec, golden = e2e
    assert sum(p.numel() for p in codec.parameters()) == 6_749_479
    x, cond = golden["input.x"], golden["input.cond"]
    with torch.no_grad():
        out = codec(x, cond)
    torch.testing.assert_close(out["y"], golden["output.y"], atol=ATOL, rtol=RTOL)
    assert torch.equal(out["z_indices"], golden["output.z_indices"])
    torch.testing.assert_close(out["y_hat"], golden["output.y_hat_forward_eval"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(out["ctrl"], golden["output.x_hat_forward_eval"], atol=ATOL, rtol=RTOL)
    bpp = eval_bpp_estimate(torch.round(out["y"] - out["means"]), out["scales"], 128 * 128)
    torch.testing.assert_close(bpp, golden["output.bpp_estimate_forward_eval"], atol=1e-5, rtol=1e-5)


def test_intranoar_small_coding_round_trip_matches_the_official_decoder(e2e) -> None:
    codec, golden = e2e
    x, cond = golden["input.x"], golden["input.cond"]
    codec.update()
    with torch.no_grad():
        coded = codec.compress(x, cond)
        decoded = codec.decompress(coded["strings"], coded["shape"])  # the z grid: (128, 128) / 64
    official = bytes(golden["output.bitstream"].numpy())
    assert coded["z_string"] == official[-7:]  # the packed z indices: 4 × 14 bits, the official bytes
    assert torch.equal(decoded["y_hat"], coded["y_hat"])
    torch.testing.assert_close(decoded["ctrl"], golden["output.x_hat_decoded"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(
        decoded["y_semantic"], golden["output.y_semantic_decoded"], atol=ATOL, rtol=RTOL
    )
    assert decoded["tokens"].shape == (1, 4, 96)
    assert len(coded["y_string"]) < int.from_bytes(official[8:12], "big") + 16  # same information, our coder


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_parameter_counts_and_official_key_lists(shared_dir) -> None:
    """Spec §2.9 and §4.1 on the meta device; keys and shapes equal the manifest of both official files."""
    manifest = json.loads((shared_dir / "specs" / "manifests" / "onedc_ckpt.json").read_text())
    with torch.device("meta"):
        codec = OneDC(latent_codec=FULL_LATENT_CODEC, backbone=reference_configs("sd-1.5"))
    latent = codec.latent_codec
    assert _count(latent) == 394_147_783
    expected = {
        "enc": 299_130_112, "hyper_enc": 14_781_063, "hyper_dec": 960_128, "semantic_adaptor": 39_185_792,
        "dec": 35_878_976, "y_prior_fusion": 1_006_976, "y_spatial_prior_reduction": 32_896,
        "y_spatial_prior_adaptor_1": 528_640, "y_spatial_prior": 1_585_920,
    }  # fmt: skip
    assert {name: _count(getattr(latent, name)) for name in expected} == expected
    assert _count(latent.enc.unet) == 285_933_184 and _count(latent.enc.unet.conv_in) == 15_898_752
    decoder_side = (
        sum(_count(getattr(latent, n)) for n in ("hyper_dec", "semantic_adaptor", "dec"))
        + sum(_count(getattr(latent, n)) for n in expected if n.startswith("y_"))
        + 2 * 528_640
    )  # adaptors 2 and 3
    assert decoder_side == 80_236_608
    unet = codec.backbone.unet
    lora = sum(p.numel() for k, p in unet.named_parameters() if ".lora_" in k)
    base = sum(
        p.numel() for k, p in unet.named_parameters() if ".lora_" not in k and not k.startswith("conv_in.")
    )
    assert (lora, base, _count(unet.conv_in), _count(codec.vae_reduction)) == (
        67_252_224, 859_509_124, 921_920, 936_008,
    )  # fmt: skip
    assert lora + base + _count(unet.conv_in) + _count(codec.vae_reduction) == 928_619_276
    assert len(adapted_modules(unet, "default")) == 278
    shapes = {k: list(v.shape) for k, v in latent.official_state_dict().items()}
    assert shapes == manifest["model_1.safetensors"]
    generator = {k: list(v.shape) for k, v in unet.state_dict().items()}
    generator.update(
        {f"vae_reduction.{k}": list(v.shape) for k, v in codec.vae_reduction.state_dict().items()}
    )
    assert generator == manifest["model.safetensors"]
