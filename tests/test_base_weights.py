"""What a checkpoint leaves out (diffcodec/nn/base_weights.py): exactly the tensors recorded when the base
model was loaded and still bit-identical, through peft's wrappers and copies."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig
from torch import nn

from diffcodec.nn.backbone import OneStepBackbone, load_component, tiny_configs
from diffcodec.nn.base_weights import base_weight_keys, tensor_digest


def test_base_weights_are_the_loaded_tensors_while_unchanged(tmp_path: Path) -> None:
    torch.manual_seed(0)
    OneStepBackbone.from_config(**tiny_configs()).unet.save_pretrained(tmp_path / "unet")
    holder = nn.Module()
    holder.unet = load_component(UNet2DConditionModel.from_pretrained, tmp_path, "unet")
    holder.head = nn.Conv2d(4, 4, 1)  # not from the base model
    keys = base_weight_keys(holder, holder.state_dict())
    assert keys == {k for k in holder.state_dict() if k.startswith("unet.")}

    holder.unet.add_adapter(LoraConfig(r=4, target_modules=["to_q"]))  # peft: ….to_q.base_layer.weight
    state = holder.state_dict()
    keys = base_weight_keys(holder, state)
    assert any(k.endswith(".to_q.base_layer.weight") for k in keys)
    assert not any(".lora_" in k for k in keys) and "head.weight" not in keys
    with torch.no_grad():
        holder.unet.conv_out.bias.add_(1e-6)  # trained
    holder.unet.conv_in = nn.Conv2d(8, 32, 3, padding=1)  # replaced (widened)
    keys = base_weight_keys(holder, holder.state_dict())
    assert not {"unet.conv_out.bias", "unet.conv_in.weight", "unet.conv_in.bias"} & keys
    assert "unet.conv_out.weight" in keys

    twin = copy.deepcopy(holder)  # the record travels with the module
    assert base_weight_keys(twin, twin.state_dict()) == keys
    assert not base_weight_keys(twin.half(), twin.state_dict())  # another dtype is not bit-identical


def test_digests_tell_bits_apart() -> None:
    x = torch.randn(3, 4)
    assert tensor_digest(x) == tensor_digest(x.clone())
    assert tensor_digest(x) != tensor_digest(x.double())
    assert tensor_digest(x) != tensor_digest(x.reshape(4, 3))
    y = x.clone()
    y.view(torch.int32)[0, 0] ^= 1  # one bit
    assert tensor_digest(x) != tensor_digest(y)
    assert tensor_digest(torch.zeros(0)) != tensor_digest(torch.zeros(0, 1))
