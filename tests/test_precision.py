"""``diffcodec.load(..., dtype=, compile=)``: low-precision synthesis, files identical to float32 ones."""

from __future__ import annotations

import pytest
import torch
from test_determinism import crop

import diffcodec
from diffcodec.codecs.precision import attention_processors, parse_dtype, set_inference_precision


@pytest.mark.parametrize("name", ["stablecodec-small", "cadc-small", "onedc-small"])
def test_bf16_writes_the_float32_files_and_decodes_close_to_float32(name: str) -> None:
    image = crop(100, 50, 128)
    fp32 = diffcodec.load(name)
    bf16 = diffcodec.load(name, dtype=torch.bfloat16)
    assert bf16.backbone.unet.dtype == torch.bfloat16
    assert bf16.backbone.vae.decoder.conv_in.weight.dtype == torch.bfloat16
    assert bf16.backbone.vae.encoder.conv_in.weight.dtype == torch.float32  # analysis: decides the symbols
    if name == "cadc-small":
        assert next(bf16.captioner.model.parameters()).dtype == torch.bfloat16
        assert bf16.backbone.conditioning.text_encoder.dtype == torch.bfloat16
    data = fp32.compress(image).to_bytes()
    assert bf16.compress(image).to_bytes() == data  # the file does not depend on the dtype
    reference = fp32.decompress(data, output="tensor")
    decoded = bf16.decompress(data, output="tensor")
    assert decoded.dtype == torch.float32 and decoded.shape == reference.shape
    psnr = 10 * torch.log10(1 / ((decoded - reference) ** 2).mean())
    assert 30 < psnr < 100  # bf16 changes the pixels a little, never the symbols
    sdpa = {"AttnProcessor2_0", "WindowedAttnProcessor", "WindowedSelfAttnProcessor"}
    assert set(attention_processors(bf16)) <= sdpa


def test_precision_can_be_undone_and_rejects_other_dtypes() -> None:
    codec = diffcodec.load("oscar-small", dtype="fp16")
    assert codec.backbone.unet.dtype == torch.float16
    set_inference_precision(codec, "fp32")
    assert codec.backbone.unet.dtype == torch.float32
    assert codec.backbone.unet._forward_pre_hooks == {} and codec.backbone.unet._forward_hooks == {}
    assert parse_dtype("bfloat16") is torch.bfloat16 and parse_dtype(None) is None
    for bad in ("int8", torch.float64):
        with pytest.raises(ValueError, match="dtype"):
            diffcodec.load("oscar-small", dtype=bad)


def test_compile_compiles_the_unet_and_vae_decoder_in_place() -> None:
    """``compile=True`` wraps the modules' calls (nn.Module.compile); the state-dict keys do not change."""
    plain = diffcodec.load("oscar-small")
    codec = diffcodec.load("oscar-small", compile=True)
    assert codec.backbone.unet._compiled_call_impl is not None
    assert codec.backbone.vae.decoder._compiled_call_impl is not None
    assert plain.backbone.unet._compiled_call_impl is None
    assert codec.state_dict().keys() == plain.state_dict().keys()
