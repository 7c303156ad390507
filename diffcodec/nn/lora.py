"""LoRA on the Stable-Diffusion U-Net and VAE, through peft only.

Adapters are added with diffusers' ``add_adapter`` (which calls peft's ``inject_adapter_in_model``) and
read/written with peft's ``get_peft_model_state_dict`` / ``set_peft_model_state_dict``; nothing here
replaces a forward. Several named adapters can live on one model and are all kept active (OSCAR trains
three groups at once).

Target selection follows peft: a **list** matches a module whose full name equals an entry or ends with
``"." + entry``; a **string** is a regular expression that must match the whole module name.

The target lists of the methods are kept here because they are shared (StableCodec and CADC use the
same U-Net list) and because the parameter counts in the specs pin them:

- ``STABLECODEC_UNET_TARGETS`` — StableCodec §6.1 (r 32, alpha 8, gaussian): 257 modules on SD-2.1-base.
- ``STABLECODEC_VAE_ENCODER_TARGETS`` — StableCodec §6.4 regex (r 16, adapter ``vae_skip``): 31 modules.
- ``ONEDC_UNET_TARGETS`` / ``ONEDC_UNET_EXCLUDE`` — OneDC §4.1 (r 64, alpha 8, default init): 278 modules
  on SD-1.5.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors import safe_open
from safetensors.torch import save_file

STABLECODEC_UNET_TARGETS: tuple[str, ...] = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
    "proj_in", "proj_out", "ff.net.2", "ff.net.0.proj",
)  # fmt: skip
STABLECODEC_VAE_ENCODER_TARGETS: str = (
    r"^encoder\..*(conv1|conv2|conv_in|conv_shortcut|conv|conv_out|to_k|to_q|to_v|to_out\.0)$"
)
ONEDC_UNET_TARGETS: tuple[str, ...] = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
    "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
)  # fmt: skip
ONEDC_UNET_EXCLUDE: str = r".*(add_attentions|conv_in).*"

_METADATA_KEY = "diffcodec.lora"


@dataclass(frozen=True)
class LoraSpec:
    """What defines one adapter: where it goes and how it is shaped (saved next to its weights).

    ``init`` is peft's ``init_lora_weights``: ``"gaussian"`` (A ~ N(0, 1/r²), B = 0; StableCodec, OSCAR),
    ``True`` (A Kaiming-uniform, B = 0; OneDC), or any other peft initialisation name.
    """

    target_modules: tuple[str, ...] | str
    rank: int
    alpha: float = 8.0
    init: str | bool = "gaussian"
    exclude_modules: tuple[str, ...] | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"LoRA rank must be a positive int, got {self.rank!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be positive, got {self.alpha!r}")
        if not self.target_modules:
            raise ValueError("LoRA target_modules is empty")
        # normalise lists to tuples so that the spec is hashable and JSON round-trips to the same value
        if not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.exclude_modules is not None and not isinstance(self.exclude_modules, str):
            object.__setattr__(self, "exclude_modules", tuple(self.exclude_modules))

    @property
    def scaling(self) -> float:
        """The factor peft applies to B·A: alpha / rank."""
        return self.alpha / self.rank

    def to_peft(self) -> LoraConfig:
        def as_peft(value: tuple[str, ...] | str | None) -> list[str] | str | None:
            return list(value) if isinstance(value, tuple) else value

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            init_lora_weights=self.init,
            target_modules=as_peft(self.target_modules),
            exclude_modules=as_peft(self.exclude_modules),
            lora_dropout=0.0,
            bias="none",
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoraSpec:
        return cls(**json.loads(text))


def adapter_names(model: torch.nn.Module) -> list[str]:
    """Names of the peft adapters injected into ``model`` (in insertion order)."""
    return list(getattr(model, "peft_config", {}) or {})


def add_lora(model: torch.nn.Module, name: str, spec: LoraSpec) -> list[str]:
    """Inject adapter ``name`` into a diffusers model and keep every adapter of the model active.

    Returns the names of the modules it adapted. peft raises if no module matches the targets.
    """
    if not hasattr(model, "add_adapter"):
        raise TypeError(f"{type(model).__name__} does not support peft adapters (no add_adapter)")
    existing = adapter_names(model)
    if name in existing:
        raise ValueError(f"{type(model).__name__} already has an adapter named {name!r}")
    with warnings.catch_warnings():
        # peft warns that a second adapter makes a multi-adapter model: that is the intent here
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        model.add_adapter(spec.to_peft(), adapter_name=name)
    model.set_adapter([*existing, name])  # add_adapter activates only the new one
    return adapted_modules(model, name)


def adapted_modules(model: torch.nn.Module, name: str) -> list[str]:
    """Names of the modules of ``model`` that carry adapter ``name``."""
    return [
        module_name
        for module_name, module in model.named_modules()
        if isinstance(module, BaseTunerLayer) and name in getattr(module, "lora_A", {})
    ]


def lora_state_dict(model: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    """The weights of adapter ``name`` alone (peft keys, adapter name removed: ``….lora_A.weight``)."""
    if name not in adapter_names(model):
        raise KeyError(f"no adapter named {name!r}; adapters: {adapter_names(model)}")
    return {key: value.detach() for key, value in get_peft_model_state_dict(model, adapter_name=name).items()}


def load_lora_state_dict(model: torch.nn.Module, name: str, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load weights produced by :func:`lora_state_dict` into adapter ``name``; every key must match."""
    if name not in adapter_names(model):
        raise KeyError(f"no adapter named {name!r}; adapters: {adapter_names(model)}")
    expected = set(lora_state_dict(model, name))
    unexpected = sorted(set(state_dict) - expected)
    missing = sorted(expected - set(state_dict))
    if unexpected or missing:
        raise ValueError(
            f"LoRA weights do not fit adapter {name!r}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    set_peft_model_state_dict(model, dict(state_dict), adapter_name=name)


def save_lora(path: str | Path, state_dict: Mapping[str, torch.Tensor], spec: LoraSpec, host: str) -> None:
    """Write one adapter as safetensors, with its :class:`LoraSpec` and host model in the metadata."""
    tensors = {key: value.detach().contiguous().cpu() for key, value in state_dict.items()}
    metadata = {_METADATA_KEY: json.dumps({"host": host, "spec": spec.to_json()})}
    save_file(tensors, str(path), metadata=metadata)


def read_lora(path: str | Path) -> tuple[dict[str, torch.Tensor], LoraSpec | None, str | None]:
    """Read a file written by :func:`save_lora`: (weights, spec or None, host or None)."""
    with safe_open(str(path), framework="pt") as handle:
        metadata: dict[str, Any] = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open API
    if _METADATA_KEY not in metadata:
        return tensors, None, None
    info = json.loads(metadata[_METADATA_KEY])
    return tensors, LoraSpec.from_json(info["spec"]), info["host"]


def count_parameters(state_dict: Mapping[str, torch.Tensor]) -> int:
    return sum(tensor.numel() for tensor in state_dict.values())


__all__ = [
    "ONEDC_UNET_EXCLUDE",
    "ONEDC_UNET_TARGETS",
    "STABLECODEC_UNET_TARGETS",
    "STABLECODEC_VAE_ENCODER_TARGETS",
    "LoraSpec",
    "adapted_modules",
    "adapter_names",
    "add_lora",
    "count_parameters",
    "load_lora_state_dict",
    "lora_state_dict",
    "read_lora",
    "save_lora",
]
