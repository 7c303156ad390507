"""Inference precision: the synthesis networks in bf16/fp16, everything that decides the file in fp32.

``diffcodec.load(name, dtype=torch.bfloat16, compile=True)`` calls :func:`set_inference_precision`::

    analysis (fp32, decides the symbols)         synthesis (``dtype``, decides only the pixels)
    ─────────────────────────────────────         ──────────────────────────────────────────────
    VAE encoder + quant_conv, ELIC / g_a,         U-Net (+ LoRA), VAE post_quant_conv + decoder,
    hyper-encoders, VQ / FSQ, latent codec,       text encoder of the caption prompt, BLIP captioner
    entropy parameters (h_s, context models)

A file therefore never depends on the dtype: a bf16 codec writes byte-identical files to the fp32 one, and
either decodes the other's files (the pixels differ by the synthesis precision, never the symbols). The low-
precision modules get a forward pre-hook that casts their floating-point inputs to their dtype and a forward
hook that casts tensor outputs back to float32, so the code around them (written for fp32) is unchanged.

Attention runs through PyTorch's ``scaled_dot_product_attention`` (diffusers' ``AttnProcessor2_0``, its
default in torch ≥ 2, and diffcodec's windowed processors): :func:`attention_processors` lists what a codec
uses. The convolutional networks of the backbone (U-Net, VAE encoder and decoder) are put in
``channels_last`` memory format on every device: faster cuDNN kernels in bf16/fp16, and 10–30 % less CPU
time for the bundled models through oneDNN (``docs/bundled.md``); the layout changes the float rounding of
the pixels only, never how a file decodes. ``compile=True`` compiles the U-Net and the VAE decoder in
place (``nn.Module.compile``, state-dict keys unchanged; the first call per shape pays the compilation).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["LOW_PRECISION", "attention_processors", "set_inference_precision", "synthesis_modules"]

#: The dtypes :func:`set_inference_precision` accepts besides float32.
LOW_PRECISION = (torch.bfloat16, torch.float16)


def synthesis_modules(codec: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) of the decoder-side networks that may run in low precision (module docstring)."""
    backbone = getattr(codec, "backbone", None)
    if backbone is not None:
        yield "unet", backbone.unet
        yield "vae.post_quant_conv", backbone.vae.post_quant_conv
        yield "vae.decoder", backbone.vae.decoder
        text_encoder = getattr(backbone.conditioning, "text_encoder", None)
        if isinstance(text_encoder, nn.Module):
            yield "text_encoder", text_encoder
    captioner = getattr(codec, "captioner", None)
    if isinstance(captioner, nn.Module):
        yield "captioner", captioner.model


def attention_processors(codec: nn.Module) -> dict[str, int]:
    """Class name → count of the attention processors in the codec's diffusers models (SDPA check)."""
    counts: dict[str, int] = {}
    for module in codec.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(module, "set_processor"):
            name = type(processor).__name__
            counts[name] = counts.get(name, 0) + 1
    return counts


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_cast(item, dtype) for item in value)
    if isinstance(value, list):
        return [_cast(item, dtype) for item in value]
    return value


def _cast_outputs(value: Any) -> Any:
    """Float32 copies of the floating-point tensors of a module's output (Tensor, tuple, ModelOutput)."""
    if isinstance(value, (torch.Tensor, tuple, list)):
        return _cast(value, torch.float32)
    if isinstance(value, dict):  # diffusers / transformers ModelOutput: update in place, keep the class
        for key, item in list(value.items()):
            if isinstance(item, torch.Tensor):
                value[key] = _cast(item, torch.float32)
        return value
    return value


def _add_casting_hooks(module: nn.Module, dtype: torch.dtype) -> None:
    if getattr(module, "_diffcodec_precision_hooks", None) is not None:
        for handle in module._diffcodec_precision_hooks:
            handle.remove()

    def cast_inputs(_: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _cast(args, dtype), {key: _cast(value, dtype) for key, value in kwargs.items()}

    def cast_outputs(_: nn.Module, args: tuple, output: Any) -> Any:
        return _cast_outputs(output)

    handles = []
    if dtype != torch.float32:
        handles.append(module.register_forward_pre_hook(cast_inputs, with_kwargs=True))
        handles.append(module.register_forward_hook(cast_outputs))
    module._diffcodec_precision_hooks = handles


def set_inference_precision(
    codec: nn.Module,
    dtype: torch.dtype | str | None = None,
    *,
    compile: bool = False,
    channels_last: bool = True,
) -> nn.Module:
    """Run the codec's synthesis networks in ``dtype`` (the analysis and entropy path stay float32).

    Args:
        codec: a loaded codec (any method; modules it lacks are skipped).
        dtype: ``torch.bfloat16``, ``torch.float16``, ``torch.float32`` (undo), their names
            (``"bf16"``, ``"fp16"``, ``"fp32"``, ``"bfloat16"``, …), or None (keep).
        compile: compile the U-Net and the VAE decoder in place with ``torch.compile``.
        channels_last: put the backbone's U-Net, VAE encoder and VAE decoder in channels_last memory format
            (default; False leaves the layout as it is).

    Returns the codec (changed in place). Raises ``ValueError`` for another dtype.
    """
    dtype = parse_dtype(dtype)
    modules = dict(synthesis_modules(codec))
    if dtype is not None:
        cast = _CASTS[dtype]
        for module in modules.values():
            cast(module)  # floating-point parameters and buffers only
            _add_casting_hooks(module, dtype)
    backbone = getattr(codec, "backbone", None)
    if channels_last and backbone is not None:
        for module in (backbone.unet, backbone.vae.encoder, backbone.vae.decoder):
            module.to(memory_format=torch.channels_last)
    if compile:
        for name in ("unet", "vae.decoder"):
            if name in modules:
                modules[name].compile()
    return codec


_CASTS = {torch.bfloat16: nn.Module.bfloat16, torch.float16: nn.Module.half, torch.float32: nn.Module.float}
_DTYPE_NAMES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
    "half": torch.float16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}  # fmt: skip


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``torch.bfloat16`` / ``"bf16"`` … → the torch dtype (None stays None); ``ValueError`` otherwise."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        if dtype.lower() not in _DTYPE_NAMES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(sorted(_DTYPE_NAMES))}")
        return _DTYPE_NAMES[dtype.lower()]
    if dtype not in (*LOW_PRECISION, torch.float32):
        raise ValueError(f"dtype must be torch.bfloat16, torch.float16 or torch.float32, got {dtype!r}")
    return dtype
