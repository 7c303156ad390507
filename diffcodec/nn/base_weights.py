"""Which tensors are frozen base-model weights: decided from what was loaded, not from names.

A codec built on a pretrained model (SD VAE and U-Net, a text encoder, BLIP, DINOv2 …) re-loads that model
in its constructor, so its checkpoint need not hold the base weights. But a method also *replaces or
trains* tensors inside the base modules — a widened ``conv_in`` (StableCodec, OneDC), a trained
``conv_in.base_layer`` (OSCAR), LoRA — and those must be saved. Names cannot tell the two apart reliably,
so the rule is the definition itself::

    load a base module ──► record_base_weights(module): {key: digest of the tensor's bytes}
                                         │
    save / load a codec ──► base_weight_keys(codec, state): the entries whose (peft-normalised) key was
                             recorded and whose tensor is still bit-identical to the loaded one

Everything else — new modules, LoRA, replaced or trained tensors, a tensor cast to another dtype — is
written. Every loader of pretrained weights in diffcodec records (``backbone.load_component`` for diffusers
and transformers models, ``onedc.load_unet`` for DMD2's state-dict file); a user codec that loads its own
base module calls :func:`record_base_weights` after loading it.

Cost: one SHA-256 pass over the base weights when they are loaded and one when the codec is saved or loaded
(≈ 1 GB/s on one CPU core: ≈ 3.5 s for the SD U-Net).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["base_weight_keys", "record_base_weights", "tensor_digest"]

_ATTRIBUTE = "_diffcodec_base_digests"
_BASE_LAYER = re.compile(r"\.base_layer(?=\.)")  # peft's wrapper of an adapted layer


def tensor_digest(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape, dtype and bytes (bit-identical tensors, and only they, agree)."""
    tensor = tensor.detach()
    digest = hashlib.sha256(f"{tuple(tensor.shape)}|{tensor.dtype}|".encode())
    if tensor.numel():
        flat = tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8)
        digest.update(flat.numpy().data)
    return digest.hexdigest()


def normalise_key(key: str) -> str:
    """A module key without peft's ``.base_layer`` (an adapted layer keeps its base tensors there)."""
    return _BASE_LAYER.sub("", key)


def record_base_weights(module: nn.Module) -> nn.Module:
    """Record ``module``'s tensors as base-model weights, just loaded from a pretrained model; returns it.

    Call it right after loading, before adapters or replaced layers are added. The record travels with the
    module (also through ``copy.deepcopy``).
    """
    module.__dict__[_ATTRIBUTE] = {
        normalise_key(key): tensor_digest(value) for key, value in module.state_dict().items()
    }
    return module


def recorded(module: nn.Module) -> Mapping[str, str]:
    """The digests :func:`record_base_weights` stored on ``module`` (empty when none)."""
    return module.__dict__.get(_ATTRIBUTE, {})


def base_weight_keys(root: nn.Module, state: Mapping[str, torch.Tensor]) -> set[str]:
    """The entries of ``state`` (a state dict of ``root``) that are unchanged base-model weights."""
    owners = sorted(
        (
            (f"{name}." if name else "", digests)
            for name, m in root.named_modules()
            if (digests := recorded(m))
        ),
        key=lambda item: -len(item[0]),  # the innermost recorded module decides
    )
    keys = set()
    for key, value in state.items():
        for prefix, digests in owners:
            if key.startswith(prefix):
                expected = digests.get(normalise_key(key[len(prefix) :]))
                if expected is not None and expected == tensor_digest(value):
                    keys.add(key)
                break
    return keys
