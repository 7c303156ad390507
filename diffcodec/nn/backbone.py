"""OneStepBackbone: the Stable-Diffusion part that OSCAR, OneDC, StableCodec and CADC share.

::

    x ∈ [−1, 1] ──encode()──► z₀·s (4, H/8, W/8)      VAE encoder (+ LoRA), posterior mean or sample
    latent codec ──► l_T (C ≥ 4, H/8, W/8)             C > 4 feeds a widened conv_in (StableCodec, OneDC)
    l_T, t, e ──predict()──► ε or v (4, H/8, W/8)      U-Net (+ LoRA); latent-tiled when large
    l_T[:, :4] (or noisy=), ε/v ──x0 formula──► l̂₀     denoise() = predict() + x0_from_prediction()
    l̂₀ ──decode()──► x̂ ∈ [−1, 1]                      VAE decoder of l̂₀ / s; tiled when large

``e`` (``encoder_hidden_states``, shape (B, L, cross_attention_dim)) comes from the conditioning source:
:class:`LearnedEmbedding` (OSCAR), :class:`FixedPrompt` (StableCodec), :class:`CaptionPrompt` (CADC) or
:class:`ExternalTokens` (OneDC). ``s`` is the VAE scaling factor (0.18215 for SD).

The one-step x0 (DDPM, paper Eq. 3 of StableCodec, Eq. 4 of OSCAR; ᾱ = alphas_cumprod[t]):

- epsilon prediction: x̂₀ = (x_t − √(1−ᾱ)·ε) / √ᾱ
- v prediction:       x̂₀ = √ᾱ·x_t − √(1−ᾱ)·v

Frozen base weights (VAE, U-Net, text encoder) are never written into checkpoints: by default the
backbone's ``state_dict()`` holds only the trainable part (LoRA, a widened conv_in, the conditioning
embedding) and ``load_state_dict`` accepts state dicts without the base (see :meth:`is_base_key`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from huggingface_hub.errors import HFValidationError
from torch import nn

from diffcodec.errors import BaseModelNotFoundError
from diffcodec.nn import lora as lora_utils
from diffcodec.nn.base_weights import record_base_weights
from diffcodec.nn.lora import LoraSpec
from diffcodec.nn.memory import (
    TileMode,
    check_tile_mode,
    fitting_tile,
    memory_budget,
    needs_tiles,
    unet_activation_bytes,
    vae_activation_bytes,
    vae_bytes_per_pixel,
)
from diffcodec.nn.tiling import LatentTiling, VaeTiling, tiled_apply
from diffcodec.nn.windowed_attention import WindowedAttnProcessor, WindowedSelfAttnProcessor
from diffcodec.timing import timed

#: StableCodec §6.3's fixed prompt (also CADC's c_fix), verbatim with the final period.
DEFAULT_PROMPT = (
    "A high-resolution, 8K, ultra-realistic image with sharp focus, vibrant colors, and natural lighting."
)

PredictionType = Literal["epsilon", "v_prediction"]
DEFAULT_LATENT_TILING = LatentTiling()
DEFAULT_VAE_TILING = VaeTiling()
#: Backbone arguments that :meth:`OneStepBackbone.base_configs` records beside the configs when set.
ATTENTION_WINDOWS = ("unet_attention_window", "vae_attention_window")
ConditioningKind = Literal["learned", "prompt", "caption", "tokens"]

DEFAULT_SUBFOLDERS: dict[str, str] = {
    "vae": "vae",
    "unet": "unet",
    "scheduler": "scheduler",
    "text_encoder": "text_encoder",
    "tokenizer": "tokenizer",
}


# ---------------------------------------------------------------------------------------------- configs
_SCALED_LINEAR = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012}
_SD_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2, "norm_num_groups": 32, "act_fn": "silu", "sample_size": 768,
    "scaling_factor": 0.18215,
}  # fmt: skip
_SD_UNET = {
    "in_channels": 4, "out_channels": 4, "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "flip_sin_to_cos": True, "freq_shift": 0, "norm_num_groups": 32, "norm_eps": 1e-5, "act_fn": "silu",
}  # fmt: skip
_REFERENCE = {
    # StableCodec §1 / §6: SD-2.1-base architecture, epsilon prediction, no upcast attention
    "sd-turbo": {
        "unet": {**_SD_UNET, "sample_size": 64, "attention_head_dim": [5, 10, 20, 20],
                 "cross_attention_dim": 1024, "use_linear_projection": True, "upcast_attention": False},
        "scheduler": {**_SCALED_LINEAR, "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
                      "clip_sample": False, "timestep_spacing": "trailing"},
    },
    # OSCAR §5.1: SD-2.1 768-v
    "sd-2.1": {
        "unet": {**_SD_UNET, "sample_size": 96, "attention_head_dim": [5, 10, 20, 20],
                 "cross_attention_dim": 1024, "use_linear_projection": True, "upcast_attention": True},
        "scheduler": {**_SCALED_LINEAR, "beta_schedule": "scaled_linear", "prediction_type": "v_prediction",
                      "clip_sample": False},
    },
    # OneDC §4.1: SD-1.5 (the DMD2 generator has the same architecture)
    "sd-1.5": {
        "unet": {**_SD_UNET, "sample_size": 64, "attention_head_dim": 8, "cross_attention_dim": 768,
                 "use_linear_projection": False},
        "scheduler": {**_SCALED_LINEAR, "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
                      "clip_sample": False},
    },
}  # fmt: skip


def reference_configs(name: Literal["sd-turbo", "sd-2.1", "sd-1.5"]) -> dict[str, dict[str, Any]]:
    """Full-size configs of the base models (``vae_config``, ``unet_config``, ``scheduler_config``).

    Architecture only (for parameter counts, meta-device builds and converters); the scheduler entry
    holds the noise schedule and prediction type. All three use the same kl-f8 VAE architecture.
    """
    if name not in _REFERENCE:
        raise ValueError(f"unknown reference model {name!r}; known: {sorted(_REFERENCE)}")
    return copy.deepcopy(
        {
            "vae_config": _SD_VAE,
            "unet_config": _REFERENCE[name]["unet"],
            "scheduler_config": _REFERENCE[name]["scheduler"],
        }
    )


def tiny_configs(
    *, cross_attention_dim: int = 32, prediction_type: PredictionType = "epsilon"
) -> dict[str, dict[str, Any]]:
    """Small configs of the real classes (random init in a second): a kl-f8 VAE with widths 8–32 and a
    two-level U-Net (32, 64) with cross-attention, SD's noise schedule. For tests and CPU experiments::

        backbone = OneStepBackbone.from_config(**tiny_configs(), conditioning="learned")
    """
    return {
        "vae_config": {
            **_SD_VAE, "block_out_channels": [8, 16, 32, 32], "layers_per_block": 1, "norm_num_groups": 8,
            "sample_size": 64,
        },
        "unet_config": {
            **_SD_UNET, "block_out_channels": [32, 64], "layers_per_block": 1, "sample_size": 8,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "attention_head_dim": 8,
            "cross_attention_dim": cross_attention_dim, "use_linear_projection": True,
        },
        "scheduler_config": {
            **_SCALED_LINEAR, "beta_schedule": "scaled_linear", "prediction_type": prediction_type,
            "clip_sample": False, "timestep_spacing": "trailing",
        },
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------- conditioning
class Conditioning(nn.Module):
    """A source of ``encoder_hidden_states`` (B, L, dim) for the U-Net's cross-attention."""

    dim: int

    def forward(self, batch_size: int, cond: Any = None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LearnedEmbedding(Conditioning):
    """A trained (L, dim) embedding broadcast over the batch (OSCAR §5.4: 77×1024, init N(0, 0.02²))."""

    def __init__(self, length: int = 77, dim: int = 1024, init_std: float = 0.02) -> None:
        super().__init__()
        self.dim = dim
        self.embedding = nn.Parameter(torch.randn(length, dim) * init_std)

    def forward(self, batch_size: int, cond: Any = None) -> torch.Tensor:
        if cond is not None:
            raise ValueError("a learned embedding takes no per-call conditioning input (cond must be None)")
        return self.embedding.unsqueeze(0).expand(batch_size, -1, -1)


class FixedPrompt(Conditioning):
    """A fixed text prompt, encoded once (StableCodec §6.3); only its (1, L, dim) output is kept.

    Build it with :meth:`encode` (needs the tokenizer and text encoder, which are not kept) or, when the
    embedding will come from a checkpoint, with :meth:`placeholder` (no text encoder needed; using it
    before loading raises). The embedding is a persistent buffer, so checkpoints carry it.
    """

    def __init__(self, embedding: torch.Tensor, prompt: str = "") -> None:
        super().__init__()
        if embedding.ndim == 2:
            embedding = embedding.unsqueeze(0)
        if embedding.ndim != 3 or embedding.shape[0] != 1:
            raise ValueError(f"prompt embedding must be (L, dim) or (1, L, dim): {tuple(embedding.shape)}")
        self.prompt = prompt
        self.dim = embedding.shape[-1]
        self.register_buffer("embedding", embedding.detach().clone())

    @classmethod
    def encode(cls, prompt: str, tokenizer: Any, text_encoder: nn.Module) -> FixedPrompt:
        return cls(encode_text(tokenizer, text_encoder, [prompt]), prompt)

    @classmethod
    def placeholder(cls, prompt: str, length: int, dim: int) -> FixedPrompt:
        return cls(torch.full((1, length, dim), float("nan")), prompt)

    def forward(self, batch_size: int, cond: Any = None) -> torch.Tensor:
        if cond is not None:
            raise ValueError("a fixed prompt takes no per-call conditioning input (cond must be None)")
        if torch.isnan(self.embedding).any():
            raise RuntimeError(
                "the prompt embedding was never computed: load a checkpoint that holds it, or build the "
                "backbone with the text encoder (encode_prompt=True)"
            )
        return self.embedding.expand(batch_size, -1, -1)


class CaptionPrompt(Conditioning):
    """Per-image text ``caption + separator + prompt`` encoded at decode time (CADC §6, BFATC).

    The tokenizer and the frozen text encoder are kept (they are decoder components). ``cond`` is one
    caption per batch item (a str is used for every item; None or "" means the prompt alone).
    """

    def __init__(
        self, tokenizer: Any, text_encoder: nn.Module, prompt: str = DEFAULT_PROMPT, separator: str = ", "
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False)
        self.prompt = prompt
        self.separator = separator
        self.dim = text_encoder.config.hidden_size

    def train(self, mode: bool = True) -> CaptionPrompt:
        super().train(mode)
        self.text_encoder.eval()  # frozen: no dropout, deterministic captions → embeddings
        return self

    def compose(self, caption: str | None) -> str:
        caption = (caption or "").strip()
        return f"{caption}{self.separator}{self.prompt}" if caption else self.prompt

    def forward(self, batch_size: int, cond: Sequence[str] | str | None = None) -> torch.Tensor:
        captions = [cond] * batch_size if cond is None or isinstance(cond, str) else list(cond)
        if len(captions) != batch_size:
            raise ValueError(f"got {len(captions)} captions for a batch of {batch_size}")
        return encode_text(self.tokenizer, self.text_encoder, [self.compose(c) for c in captions])


class ExternalTokens(Conditioning):
    """Tokens produced by the codec itself and passed per call (OneDC §2.6: (h/64·w/64) × 768)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, batch_size: int, cond: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(cond, torch.Tensor):
            raise ValueError("external-token conditioning needs cond = a (B, L, dim) tensor of tokens")
        if cond.ndim != 3 or cond.shape[-1] != self.dim or cond.shape[0] not in (1, batch_size):
            raise ValueError(f"tokens must be (B={batch_size}, L, {self.dim}), got {tuple(cond.shape)}")
        return cond.expand(batch_size, -1, -1)


@timed("text_encoder")
def encode_text(tokenizer: Any, text_encoder: nn.Module, texts: Sequence[str]) -> torch.Tensor:
    """CLIP text embedding as in StableCodec §6.3: pad/truncate to the tokenizer's max length, input ids
    only (no attention mask), last hidden state. Returns (len(texts), L, hidden) in the encoder's dtype."""
    length = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
    ids = tokenizer(
        list(texts), padding="max_length", max_length=length, truncation=True, return_tensors="pt"
    ).input_ids
    device = next(text_encoder.parameters()).device
    with torch.no_grad():
        return text_encoder(ids.to(device))[0]


# ---------------------------------------------------------------------------------------------- loading
def _is_local(repo_or_path: str | os.PathLike) -> bool:
    text = str(repo_or_path)
    return Path(text).expanduser().exists() or text.startswith((".", "/", "~")) or "\\" in text


def _download_hint(repo: str, revision: str | None, subfolders: Sequence[str]) -> str:
    include = " ".join(f"'{sub}/*'" if sub else "'*'" for sub in subfolders)
    rev = f" --revision {revision}" if revision else ""
    return (
        f"On a machine with internet access run\n"
        f"    hf download {repo}{rev} --include {include}\n"
        f"(or the older `huggingface-cli download {repo}{rev} --include {include}`), then copy the hub "
        f"cache to this machine (point HF_HUB_CACHE at it), or save the model as a diffusers folder and "
        f"pass its path instead of the hub id, e.g. "
        f"OneStepBackbone.from_pretrained('/path/to/{repo.split('/')[-1]}')."
    )


def load_component(
    loader: Any,
    repo_or_path: str | os.PathLike,
    subfolder: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    all_subfolders: Sequence[str] = (),
    **kwargs: Any,
) -> Any:
    """``loader(repo_or_path, subfolder=..., revision=...)`` with an actionable error when it is missing.

    ``loader`` is a ``from_pretrained``/``load_config`` bound method (diffusers or transformers).
    Raises :class:`BaseModelNotFoundError` naming the repo, how to download it and how to pass a path.
    A loaded module's weights are recorded as base weights (:func:`~diffcodec.nn.base_weights.
    record_base_weights`): checkpoints leave them out while they stay bit-identical.
    """
    name = str(repo_or_path)
    local = _is_local(repo_or_path)
    if local and not Path(name).expanduser().is_dir():
        raise BaseModelNotFoundError(
            f"local model folder {name!r} does not exist (expected a diffusers folder with "
            f"{', '.join(all_subfolders or [subfolder])}/ inside)"
        )
    source = str(Path(name).expanduser()) if local else name
    options: dict[str, Any] = {"subfolder": subfolder or None, **kwargs}
    if not local:
        options["revision"] = revision
        if cache_dir is not None:
            options["cache_dir"] = str(cache_dir)
    try:
        loaded = loader(source, **options)
    except (OSError, HFValidationError) as error:
        where = f"{name!r}" + ("" if local else f" (revision {revision or 'main'})")
        hint = (
            f"Check that {name}/{subfolder} holds a saved model."
            if local
            else _download_hint(name, revision, all_subfolders or [subfolder])
        )
        raise BaseModelNotFoundError(
            f"could not load the {subfolder or 'model'} of {where}: {type(error).__name__}: {error}\n{hint}"
        ) from error
    return record_base_weights(loaded) if isinstance(loaded, nn.Module) else loaded


# ---------------------------------------------------------------------------------------------- backbone
class OneStepBackbone(nn.Module):
    """SD VAE + U-Net + noise schedule + conditioning + LoRA + tiling, for one-step decoding.

    Args:
        vae, unet: diffusers models (their base weights are frozen here).
        scheduler_config: a diffusers scheduler config (dict, or a scheduler): only its noise schedule
            (``alphas_cumprod``, float32, as ``DDPMScheduler`` computes it) and prediction type are used.
        conditioning: the ``encoder_hidden_states`` source; None means callers pass them explicitly.
        prediction_type: "epsilon" or "v_prediction"; default from the scheduler config.
        timestep: default timestep (999 for SD-Turbo / DMD2; OSCAR passes its per-rate one per call).
        conv_in_channels: if set and different from the U-Net's, ``conv_in`` is replaced by a fresh
            Conv2d(conv_in_channels → block_out_channels[0]) (StableCodec §6.1, OneDC §4.1).
        latent_tiling, vae_tiling: tiling settings (None disables); see :mod:`diffcodec.nn.tiling`.
        tile: when a pass larger than its tile is tiled: "auto" (only when the untiled pass would not fit
            the device's memory budget), "never" or "always"; see :mod:`diffcodec.nn.memory`.
        vae_attention_window: windowed VAE mid-block attention (OneDC §5: 16); None = global.
        unet_attention_window: windowed U-Net self-attention, in latent positions (halved per U-Net
            level); None = global (SD). Linear cost in pixels; the small models' choice
            (:mod:`diffcodec.nn.windowed_attention`).
        persist_base: include the frozen base weights in ``state_dict()`` (default False).
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        scheduler_config: Mapping[str, Any] | Any,
        *,
        conditioning: Conditioning | None = None,
        prediction_type: PredictionType | None = None,
        timestep: int = 999,
        conv_in_channels: int | None = None,
        latent_tiling: LatentTiling | None = DEFAULT_LATENT_TILING,
        vae_tiling: VaeTiling | None = DEFAULT_VAE_TILING,
        vae_attention_window: int | None = None,
        unet_attention_window: int | None = None,
        persist_base: bool = False,
        tile: TileMode = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(vae, AutoencoderKL) or not isinstance(unet, UNet2DConditionModel):
            raise TypeError(
                f"vae must be a diffusers AutoencoderKL and unet a UNet2DConditionModel, got "
                f"{type(vae).__name__} and {type(unet).__name__}"
            )
        self.vae = vae
        self.unet = unet
        self.conditioning = conditioning
        config = dict(getattr(scheduler_config, "config", scheduler_config))
        if config.get("clip_sample") or config.get("thresholding"):
            warnings.warn(
                "the scheduler config clips/thresholds x0; the one-step backbone never does (SD-2.x, "
                "SD-Turbo and SD-1.5 configs set clip_sample=false)",
                stacklevel=2,
            )
        self.scheduler_config = config
        alphas_cumprod = DDPMScheduler.from_config(config).alphas_cumprod.to(torch.float32)
        self.register_buffer("alphas_cumprod", alphas_cumprod, persistent=False)
        self._alphas_cumprod_fp32 = alphas_cumprod.clone()  # survives a .to(bfloat16) of the module
        self.prediction_type: PredictionType = prediction_type or config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be epsilon or v_prediction, got {self.prediction_type!r}")
        self.timestep = self._check_timestep(timestep)
        self.latent_tiling = latent_tiling
        self.vae_tiling = vae_tiling
        self.tile = tile
        self.persist_base = persist_base
        self._conv_in_replaced = False
        self._lora: dict[str, tuple[str, LoraSpec]] = {}  # adapter name → (host "unet"/"vae", spec)
        if conv_in_channels is not None and conv_in_channels != self.unet_in_channels:
            self.widen_conv_in(conv_in_channels)
        self.set_vae_attention_window(vae_attention_window)
        self.set_unet_attention_window(unet_attention_window)
        self.freeze_base()
        self.register_state_dict_post_hook(_drop_base_keys)
        self.register_load_state_dict_pre_hook(_fill_base_keys)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(
        cls,
        vae_config: Mapping[str, Any],
        unet_config: Mapping[str, Any],
        scheduler_config: Mapping[str, Any],
        *,
        conditioning: ConditioningKind | Conditioning | None = None,
        tokenizer: Any = None,
        text_encoder: nn.Module | None = None,
        prompt: str = DEFAULT_PROMPT,
        prompt_length: int = 77,
        **kwargs: Any,
    ) -> OneStepBackbone:
        """Randomly initialised backbone from config dicts (tests, small embedded models).

        ``conditioning`` "prompt" / "caption" need ``tokenizer`` and ``text_encoder``.
        """
        vae = AutoencoderKL.from_config(dict(vae_config))
        unet = UNet2DConditionModel.from_config(dict(unet_config))
        source = _make_conditioning(conditioning, unet, tokenizer, text_encoder, prompt, prompt_length, True)
        return cls(vae, unet, dict(scheduler_config), conditioning=source, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        repo_or_path: str | os.PathLike,
        revision: str | None = None,
        *,
        subfolders: Mapping[str, str] | None = None,
        torch_dtype: torch.dtype = torch.float32,
        conditioning: ConditioningKind | Conditioning | None = None,
        prompt: str = DEFAULT_PROMPT,
        encode_prompt: bool = True,
        prompt_length: int = 77,
        vae: AutoencoderKL | None = None,
        unet: UNet2DConditionModel | None = None,
        cache_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> OneStepBackbone:
        """Load the base model from a hub id (at ``revision``; offline: the hub cache) or a diffusers folder.

        Loads ``vae/``, ``unet/`` and ``scheduler/`` (``subfolders`` renames them; "" = the root), plus
        ``tokenizer/`` and ``text_encoder/`` when ``conditioning`` is "prompt" (encoded once, then dropped;
        with ``encode_prompt=False`` nothing is loaded and the embedding must come from a checkpoint) or
        "caption" (kept). Pass ``vae=`` / ``unet=`` to use models from elsewhere (OneDC: SD-2.1 VAE with
        an SD-1.5 U-Net). Other keyword arguments go to the constructor. A missing model raises
        :class:`BaseModelNotFoundError` with download instructions.
        """
        folders = {**DEFAULT_SUBFOLDERS, **(subfolders or {})}
        unknown = set(folders) - set(DEFAULT_SUBFOLDERS)
        if unknown:
            raise ValueError(f"unknown subfolder keys {sorted(unknown)}; known: {sorted(DEFAULT_SUBFOLDERS)}")
        needs_text = conditioning == "caption" or (conditioning == "prompt" and encode_prompt)
        wanted = [
            folders[key]
            for key, use in [
                ("vae", vae is None),
                ("unet", unet is None),
                ("scheduler", True),
                ("text_encoder", needs_text),
                ("tokenizer", needs_text),
            ]
            if use
        ]

        def load(loader: Any, key: str, **extra: Any) -> Any:
            return load_component(
                loader, repo_or_path, folders[key], revision=revision, cache_dir=cache_dir,
                all_subfolders=wanted, **extra,
            )  # fmt: skip

        if vae is None:
            vae = load(AutoencoderKL.from_pretrained, "vae", torch_dtype=torch_dtype)
        if unet is None:
            unet = load(UNet2DConditionModel.from_pretrained, "unet", torch_dtype=torch_dtype)
        scheduler_config = load(DDPMScheduler.load_config, "scheduler")
        tokenizer = text_encoder = None
        if needs_text:
            from transformers import AutoTokenizer, CLIPTextModel

            tokenizer = load(AutoTokenizer.from_pretrained, "tokenizer")
            text_encoder = load(CLIPTextModel.from_pretrained, "text_encoder", dtype=torch_dtype)
        source = _make_conditioning(
            conditioning, unet, tokenizer, text_encoder, prompt, prompt_length, encode_prompt
        )
        return cls(vae, unet, scheduler_config, conditioning=source, **kwargs)

    def base_configs(self) -> dict[str, dict[str, Any]]:
        """The configs that rebuild this backbone's architecture with :meth:`from_config` (JSON values).

        The U-Net config keeps its original ``in_channels`` (a widened ``conv_in`` is re-created by the
        owner's ``conv_in_channels``). Attention windows, where set, are recorded with them.
        """
        configs: dict[str, Any] = {
            "vae_config": _plain_config(self.vae.config),
            "unet_config": _plain_config(self.unet.config),
            "scheduler_config": _plain_config(self.scheduler_config),
        }
        for key in ATTENTION_WINDOWS:
            if getattr(self, key) is not None:
                configs[key] = getattr(self, key)
        return configs

    # ------------------------------------------------------------------ properties
    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def vae_scale_factor(self) -> int:
        """Pixel stride of the VAE latent (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def shift_factor(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @property
    def cross_attention_dim(self) -> int:
        dim = self.unet.config.cross_attention_dim
        return int(dim if isinstance(dim, int) else dim[0])

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def unet_in_channels(self) -> int:
        """Channels the U-Net's conv_in takes (320 when widened for StableCodec / OneDC)."""
        conv = self.unet.conv_in
        return int(conv.get_base_layer().in_channels if hasattr(conv, "get_base_layer") else conv.in_channels)

    # ------------------------------------------------------------------ noise schedule, x0
    def _check_timestep(self, timestep: int) -> int:
        if isinstance(timestep, bool) or not isinstance(timestep, int):
            raise TypeError(f"timestep must be an int, got {timestep!r}")
        if not 0 <= timestep < self.num_train_timesteps:
            raise ValueError(f"timestep must be in [0, {self.num_train_timesteps}), got {timestep}")
        return timestep

    def _timesteps(
        self, timestep: int | torch.Tensor | None, batch_size: int, device: torch.device
    ) -> torch.Tensor:
        """(B,) long tensor of timesteps from None (the default), an int, or a () / (B,) tensor."""
        if timestep is None:
            timestep = self.timestep
        if isinstance(timestep, torch.Tensor):
            if timestep.is_floating_point() or timestep.ndim > 1 or timestep.numel() not in (1, batch_size):
                raise ValueError(
                    f"timestep tensor must be integer, of shape () or ({batch_size},); got "
                    f"{timestep.dtype} {tuple(timestep.shape)}"
                )
            steps = timestep.to(device=device, dtype=torch.long).reshape(-1).expand(batch_size)
            if steps.min() < 0 or steps.max() >= self.num_train_timesteps:
                raise ValueError(f"timesteps must be in [0, {self.num_train_timesteps}): {steps.tolist()}")
            return steps
        return torch.full((batch_size,), self._check_timestep(timestep), dtype=torch.long, device=device)

    def alpha_bar(self, timestep: int | torch.Tensor | None, batch_size: int = 1) -> torch.Tensor:
        """ᾱ_t = alphas_cumprod[t] as a (B, 1, 1, 1) float32 tensor."""
        table = self.alphas_cumprod
        if table.dtype != torch.float32:  # the module was cast: use the float32 master copy
            table = self._alphas_cumprod_fp32.to(table.device)
        steps = self._timesteps(timestep, batch_size, table.device)
        return table[steps].view(-1, 1, 1, 1)

    def x0_from_prediction(
        self, sample: torch.Tensor, model_output: torch.Tensor, timestep: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        """One-step x̂₀ from the U-Net output (the DDPM ``pred_original_sample``, without clipping).

        epsilon: x̂₀ = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t;  v: x̂₀ = √ᾱ_t·x_t − √(1−ᾱ_t)·v.
        Computed in float32 (float64 if the inputs are): at t = 999, 1/√ᾱ ≈ 14.6 amplifies rounding.
        """
        if sample.shape != model_output.shape:
            raise ValueError(
                f"sample {tuple(sample.shape)} and model output {tuple(model_output.shape)} differ in shape"
            )
        dtype = torch.promote_types(torch.promote_types(sample.dtype, model_output.dtype), torch.float32)
        alpha = self.alpha_bar(timestep, sample.shape[0]).to(device=sample.device, dtype=dtype)
        x_t, out = sample.to(dtype), model_output.to(dtype)
        beta = 1 - alpha
        if self.prediction_type == "epsilon":
            return (x_t - beta**0.5 * out) / alpha**0.5
        return alpha**0.5 * x_t - beta**0.5 * out

    def add_noise(
        self, x0: torch.Tensor, noise: torch.Tensor, timestep: int | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Forward diffusion x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (for distillation / GAN losses on noised latents)."""
        alpha = self.alpha_bar(timestep, x0.shape[0]).to(device=x0.device, dtype=x0.dtype)
        return alpha**0.5 * x0 + (1 - alpha) ** 0.5 * noise

    # ------------------------------------------------------------------ U-Net
    def encoder_hidden_states(self, batch_size: int, cond: Any = None) -> torch.Tensor:
        """(B, L, cross_attention_dim) from the conditioning source (``cond``: captions / tokens / None)."""
        if self.conditioning is None:
            raise ValueError("this backbone has no conditioning source: pass encoder_hidden_states")
        return self.conditioning(batch_size, cond)

    @timed("unet")
    def predict(
        self,
        sample: torch.Tensor,
        timestep: int | torch.Tensor | None = None,
        cond: Any = None,
        *,
        encoder_hidden_states: torch.Tensor | None = None,
        tiled: bool | None = None,
    ) -> torch.Tensor:
        """The raw U-Net output (ε or v, ``out_channels`` wide) for ``sample`` (B, unet_in_channels, h, w).

        ``tiled``: None = latent tiling (StableCodec §10.3) when h·w > tile² and :attr:`tile` says so,
        True/False to force.
        """
        _check_map(sample, self.unet_in_channels, "U-Net input")
        batch = sample.shape[0]
        if encoder_hidden_states is None:
            encoder_hidden_states = self.encoder_hidden_states(batch, cond)
        elif cond is not None:
            raise ValueError("pass either cond or encoder_hidden_states, not both")
        context = encoder_hidden_states
        dim = self.cross_attention_dim
        if context.ndim != 3 or context.shape[0] not in (1, batch) or context.shape[-1] != dim:
            raise ValueError(f"encoder_hidden_states must be (B={batch}, L, {dim}): {tuple(context.shape)}")
        dtype = self.unet.dtype
        context = context.expand(batch, -1, -1).to(dtype)
        steps = self._timesteps(timestep, batch, sample.device)

        def run(latent: torch.Tensor) -> torch.Tensor:
            windows = {"latent_size": tuple(latent.shape[-2:])} if self.unet_attention_window else None
            return self.unet(
                latent.to(dtype), steps, encoder_hidden_states=context, cross_attention_kwargs=windows
            ).sample

        height, width = sample.shape[-2:]
        tiling = self.latent_tiling or DEFAULT_LATENT_TILING
        exceeds = self.latent_tiling is not None and tiling.applies(height, width)
        width0 = self.unet.config.block_out_channels[0]
        estimate = unet_activation_bytes(width0, batch, height, width, dtype.itemsize)
        if self._use_tiles(tiled, exceeds, estimate, sample.device):
            return tiled_apply(run, sample, tile=tiling.tile, overlap=tiling.overlap)
        return run(sample)

    def denoise(
        self,
        l_t: torch.Tensor,
        timestep: int | torch.Tensor | None = None,
        cond: Any = None,
        *,
        noisy: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        tiled: bool | None = None,
    ) -> torch.Tensor:
        """One-step x̂₀ latent (B, 4, h, w) from the U-Net input ``l_t``.

        The noisy latent x_t of the x0 formula is ``noisy`` if given (OneDC: vae_reduction(c)), else the
        first ``latent_channels`` channels of ``l_t`` (StableCodec §3 step 5: channels 4… only condition
        the U-Net through the widened conv_in).
        """
        output = self.predict(l_t, timestep, cond, encoder_hidden_states=encoder_hidden_states, tiled=tiled)
        x_t = l_t[:, : self.latent_channels] if noisy is None else noisy
        return self.x0_from_prediction(x_t, output, timestep)

    def widen_conv_in(self, in_channels: int) -> None:
        """Replace ``unet.conv_in`` by a fresh, trainable Conv2d(in_channels → block_out_channels[0]).

        Same kernel/padding as the original (3×3, padding 1), PyTorch default init, with bias. The U-Net
        config keeps its ``in_channels`` (StableCodec §6.1).
        """
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        old = self.unet.conv_in
        if hasattr(old, "get_base_layer"):
            raise ValueError("conv_in carries a LoRA adapter; widen it before adding adapters that target it")
        new = nn.Conv2d(
            in_channels, old.out_channels, kernel_size=old.kernel_size, stride=old.stride, padding=old.padding
        ).to(device=old.weight.device, dtype=old.weight.dtype)
        self.unet.conv_in = new
        self._conv_in_replaced = True
        self.freeze_base()

    # ------------------------------------------------------------------ VAE
    def set_vae_attention_window(self, window: int | None) -> None:
        """Windowed VAE mid-block attention (OneDC §5, window 16) or global attention (None)."""
        self.vae_attention_window = window
        processor = AttnProcessor2_0() if window is None else WindowedAttnProcessor(window)
        for part in (self.vae.encoder, self.vae.decoder):
            for attention in getattr(part.mid_block, "attentions", []) if part.mid_block is not None else []:
                if attention is not None:
                    attention.set_processor(processor)

    def set_unet_attention_window(self, window: int | None) -> None:
        """Windowed U-Net self-attention (``window`` latents wide at the finest level) or global (None)."""
        if window is None and getattr(self, "unet_attention_window", None) is None:
            self.unet_attention_window = None  # diffusers' default processors stay as they are
            return
        self.unet_attention_window = window
        processor = AttnProcessor2_0() if window is None else WindowedSelfAttnProcessor(window)
        self.unet.set_attn_processor(processor)

    def latent_distribution(
        self, x: torch.Tensor, *, tiled: bool | None = None
    ) -> DiagonalGaussianDistribution:
        """The VAE posterior of an image x ∈ [−1, 1] (B, 3, H, W), H and W multiples of 8 (unscaled)."""
        _check_map(x, int(self.vae.config.in_channels), "image")
        factor = self.vae_scale_factor
        if x.shape[-2] % factor or x.shape[-1] % factor:
            raise ValueError(f"image sides must be multiples of {factor} (pad first): {tuple(x.shape[-2:])}")
        x = x.to(self.vae.dtype)
        tiling = self.vae_tiling or DEFAULT_VAE_TILING
        exceeds = self.vae_tiling is not None and max(x.shape[-2:]) > tiling.encoder_tile
        if not self._use_tiles(tiled, exceeds, self._vae_estimate(x.shape[0], *x.shape[-2:]), x.device):
            return self.vae.encode(x).latent_dist
        if tiling.encoder_tile % factor or tiling.encoder_overlap % factor:
            raise ValueError(f"encoder tile and overlap must be multiples of {factor}, got {tiling}")
        moments = tiled_apply(
            lambda tile: self.vae.encode(tile).latent_dist.parameters,
            x,
            tile=self._vae_tile(tiling.encoder_tile, tiling.encoder_overlap, x, decoder=False),
            overlap=tiling.encoder_overlap,
            scale=Fraction(1, factor),
            even=True,
        )
        return DiagonalGaussianDistribution(moments)

    @timed("vae_enc")
    def encode(
        self,
        x: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        tiled: bool | None = None,
    ) -> torch.Tensor:
        """Scaled latent (z − shift)·s of x ∈ [−1, 1]: posterior mean (StableCodec) or sample (OSCAR)."""
        posterior = self.latent_distribution(x, tiled=tiled)
        z = posterior.sample(generator) if sample else posterior.mode()
        return (z - self.shift_factor) * self.scaling_factor

    @timed("vae_dec")
    def decode(self, latent: torch.Tensor, *, clamp: bool = True, tiled: bool | None = None) -> torch.Tensor:
        """Image in [−1, 1] from a scaled latent: D(latent / s + shift), clamped unless ``clamp=False``."""
        _check_map(latent, self.latent_channels, "latent")
        z = (latent / self.scaling_factor + self.shift_factor).to(self.vae.dtype)
        tiling = self.vae_tiling or DEFAULT_VAE_TILING
        exceeds = self.vae_tiling is not None and max(z.shape[-2:]) > tiling.decoder_tile
        pixels = [side * self.vae_scale_factor for side in z.shape[-2:]]
        if self._use_tiles(tiled, exceeds, self._vae_estimate(z.shape[0], *pixels), z.device):
            image = tiled_apply(
                lambda tile: self.vae.decode(tile).sample,
                z,
                tile=self._vae_tile(tiling.decoder_tile, tiling.decoder_overlap, z, decoder=True),
                overlap=tiling.decoder_overlap,
                scale=self.vae_scale_factor,
                even=True,
            )
        else:
            image = self.vae.decode(z).sample
        return image.clamp(-1.0, 1.0) if clamp else image

    # ------------------------------------------------------------------ tiling decisions
    @property
    def tile(self) -> TileMode:
        """When a pass larger than its tile is tiled: "auto", "never" or "always" (:mod:`~diffcodec.codecs.
        memory`)."""
        return self._tile

    @tile.setter
    def tile(self, mode: TileMode) -> None:
        self._tile = check_tile_mode(mode)

    def _use_tiles(self, tiled: bool | None, exceeds_tile: bool, estimate: int, device: torch.device) -> bool:
        """``tiled`` forces tiling on/off; None leaves it to :attr:`tile` (:func:`memory.needs_tiles`)."""
        return needs_tiles(self.tile, exceeds_tile, estimate, device) if tiled is None else bool(tiled)

    def _vae_tile(self, tile: int, overlap: int, x: torch.Tensor, *, decoder: bool) -> int:
        """The VAE tile side in input positions (decoder: latents, encoder: pixels in whole latents): at most
        ``tile``, small enough for the memory budget."""
        width0 = self.vae.config.block_out_channels[0]
        per_pixel = vae_bytes_per_pixel(width0, x.shape[0], self.vae.dtype.itemsize)
        factor = self.vae_scale_factor
        if decoder:  # each latent position becomes factor² pixels
            return fitting_tile(tile, overlap, per_pixel * factor**2, memory_budget(x.device))
        return fitting_tile(tile, overlap, per_pixel, memory_budget(x.device), multiple=factor)

    def _vae_estimate(self, batch: int, height: int, width: int) -> int:
        width0 = self.vae.config.block_out_channels[0]
        return vae_activation_bytes(width0, batch, height, width, self.vae.dtype.itemsize)

    # ------------------------------------------------------------------ LoRA
    def add_lora(
        self,
        name: str,
        target_modules: Sequence[str] | str,
        *,
        rank: int,
        alpha: float = 8.0,
        init: str | bool = "gaussian",
        exclude_modules: Sequence[str] | str | None = None,
        on: Literal["unet", "vae"] = "unet",
    ) -> list[str]:
        """Add a named peft LoRA adapter to the U-Net or the VAE; returns the adapted module names.

        ``target_modules``: list = exact or suffix match on module names, str = full-match regex (peft).
        All adapters stay active. Base weights stay frozen; the adapter is trainable.
        """
        if on not in ("unet", "vae"):
            raise ValueError(f"on must be 'unet' or 'vae', got {on!r}")
        if name in self._lora:
            raise ValueError(f"an adapter named {name!r} already exists (on the {self._lora[name][0]})")
        spec = LoraSpec(
            target_modules=target_modules if isinstance(target_modules, str) else tuple(target_modules),
            rank=rank,
            alpha=alpha,
            init=init,
            exclude_modules=exclude_modules,
        )
        modules = lora_utils.add_lora(getattr(self, on), name, spec)
        self._lora[name] = (on, spec)
        self.freeze_base()  # peft marks only adapters trainable; restore conv_in / conditioning
        return modules

    @property
    def lora_adapters(self) -> dict[str, tuple[str, LoraSpec]]:
        """Adapter name → (host model "unet" / "vae", its :class:`LoraSpec`)."""
        return dict(self._lora)

    def _host(self, name: str) -> nn.Module:
        if name not in self._lora:
            raise KeyError(f"no LoRA adapter named {name!r}; adapters: {sorted(self._lora)}")
        return getattr(self, self._lora[name][0])

    def lora_state_dict(self, name: str) -> dict[str, torch.Tensor]:
        """Weights of one adapter (peft ``get_peft_model_state_dict`` keys, relative to its host model)."""
        return lora_utils.lora_state_dict(self._host(name), name)

    def load_lora_state_dict(self, name: str, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`lora_state_dict` output into adapter ``name`` (peft ``set_peft_model_state_dict``)."""
        lora_utils.load_lora_state_dict(self._host(name), name, state_dict)

    def save_lora(self, name: str, path: str | os.PathLike) -> None:
        """Write adapter ``name`` alone to a safetensors file (weights + spec + host in the metadata)."""
        weights = self.lora_state_dict(name)
        host, spec = self._lora[name]
        lora_utils.save_lora(path, weights, spec, host)

    def load_lora(self, path: str | os.PathLike, name: str | None = None) -> str:
        """Load an adapter file written by :meth:`save_lora`, creating the adapter if it does not exist.

        ``name`` defaults to the file's stem. Returns the adapter name.
        """
        tensors, spec, host = lora_utils.read_lora(path)
        name = name or Path(path).stem
        if name not in self._lora:
            if spec is None:
                raise ValueError(f"{path} has no diffcodec LoRA metadata: add the adapter, then load it")
            self.add_lora(
                name, spec.target_modules, rank=spec.rank, alpha=spec.alpha, init=spec.init,
                exclude_modules=spec.exclude_modules, on=host,
            )  # fmt: skip
        elif spec is not None and (host, spec) != self._lora[name]:
            raise ValueError(f"{path} holds another adapter ({host}, {spec}) than {name!r}")
        self.load_lora_state_dict(name, tensors)
        return name

    # ------------------------------------------------------------------ base vs trainable
    def is_base_key(self, key: str) -> bool:
        """True for frozen base-model weights (relative state-dict key), never written into checkpoints.

        Not base: LoRA tensors (``….lora_A/lora_B…``), the widened ``unet.conv_in``, and the conditioning
        source's own weights (learned / prompt embedding). Base: everything else in ``vae.``, ``unet.``
        and the caption text encoder.
        """
        if _LORA_KEY.search(key):
            return False
        if key.startswith("conditioning."):
            return key.startswith("conditioning.text_encoder.")
        return not (self._conv_in_replaced and key.startswith("unet.conv_in."))

    def freeze_base(self) -> None:
        """requires_grad False on base weights, True on adapters, a widened conv_in and the embedding."""
        for key, parameter in self.named_parameters():
            parameter.requires_grad_(not self.is_base_key(key))

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for key, p in self.named_parameters() if not self.is_base_key(key))

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything a method checkpoint needs from the backbone: adapters, conv_in, embedding."""
        return {key: value for key, value in self._full_state_dict().items() if not self.is_base_key(key)}

    def load_trainable_state_dict(self, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Load :meth:`trainable_state_dict` output; with ``strict``, keys must match exactly."""
        expected = set(self.trainable_state_dict())
        unexpected = sorted(set(state_dict) - expected)
        missing = sorted(expected - set(state_dict))
        if unexpected or (strict and missing):
            raise ValueError(
                f"trainable weights do not fit this backbone: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        self.load_state_dict(dict(state_dict), strict=False)

    def _full_state_dict(self) -> dict[str, torch.Tensor]:
        persist, self.persist_base = self.persist_base, True
        try:
            return self.state_dict()
        finally:
            self.persist_base = persist


_LORA_KEY = re.compile(r"\.lora_(A|B|embedding_A|embedding_B|magnitude_vector)\.")


def _drop_base_keys(module: OneStepBackbone, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """state_dict post-hook: remove frozen base weights unless ``persist_base``."""
    if module.persist_base:
        return
    for key in [k for k in state_dict if k.startswith(prefix) and module.is_base_key(k[len(prefix) :])]:
        del state_dict[key]


def _fill_base_keys(
    module: OneStepBackbone, state_dict: dict, prefix: str, local_metadata: Any, strict: bool, *_: Any
) -> None:
    """load_state_dict pre-hook: base weights absent from ``state_dict`` keep their current values."""
    if module.persist_base:
        return
    for key, value in module._full_state_dict().items():
        if module.is_base_key(key) and prefix + key not in state_dict:
            state_dict[prefix + key] = value


BackboneSource = Mapping[str, Any] | str | os.PathLike | None


def small_backbone(
    source: BackboneSource, default_configs: Mapping[str, Any], **kwargs: Any
) -> OneStepBackbone:
    """The backbone of a small model (not a full-size SD one), base weights persisted in its checkpoints.

    ``source`` is None (random init from ``default_configs``), a mapping of configs (``vae_config``,
    ``unet_config``, ``scheduler_config``; random init), or the folder of a small base model trained by
    :mod:`diffcodec.training.small_base` (``vae/``, ``unet/``, ``scheduler/``). ``kwargs`` go to
    :meth:`OneStepBackbone.from_config` / :meth:`~OneStepBackbone.from_pretrained` (conditioning, conv_in, …).
    A saved codec records :meth:`OneStepBackbone.base_configs` instead of the folder, so it loads anywhere.
    The mapping may also set the attention windows (:data:`ATTENTION_WINDOWS`), and a base folder may hold
    them in ``backbone.json`` (:func:`base_attention_windows`); a codec's own argument of the same name
    (OneDC's ``vae_attention_window``) takes precedence.
    """
    if isinstance(source, (str, os.PathLike)):
        windows = base_attention_windows(source)
        return OneStepBackbone.from_pretrained(source, persist_base=True, **{**windows, **kwargs})
    configs = dict(source if source is not None else default_configs)
    missing = {"vae_config", "unet_config", "scheduler_config"} - set(configs)
    unknown = set(configs) - {"vae_config", "unet_config", "scheduler_config", *ATTENTION_WINDOWS}
    if missing or unknown:
        raise ValueError(
            f"backbone configs need vae_config, unet_config and scheduler_config, and may set "
            f"{', '.join(ATTENTION_WINDOWS)}; got {sorted(configs)}"
        )
    return OneStepBackbone.from_config(**{**configs, **kwargs}, persist_base=True)  # the codec's own args win


BASE_WINDOWS_FILE = "backbone.json"


def base_attention_windows(folder: str | os.PathLike) -> dict[str, int]:
    """The attention windows a small base model was trained with: ``<folder>/backbone.json``, if any.

    :mod:`diffcodec.training.small_base` writes it beside ``vae/`` and ``unet/``; keys are
    :data:`ATTENTION_WINDOWS` (others are refused), values positive ints or null.
    """
    path = Path(folder) / BASE_WINDOWS_FILE
    if not path.is_file():
        return {}
    try:
        windows = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a JSON object of attention windows: {error}") from None
    if not isinstance(windows, dict) or set(windows) - set(ATTENTION_WINDOWS):
        raise ValueError(f"{path} may only set {', '.join(ATTENTION_WINDOWS)}; got {windows!r}")
    return {key: value for key, value in windows.items() if value is not None}


def _plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers config as plain JSON values (tuples → lists, without private ``_`` entries)."""
    return {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in dict(config).items()
        if not key.startswith("_")
    }


def _make_conditioning(
    kind: ConditioningKind | Conditioning | None,
    unet: UNet2DConditionModel,
    tokenizer: Any,
    text_encoder: nn.Module | None,
    prompt: str,
    prompt_length: int,
    encode_prompt: bool,
) -> Conditioning | None:
    if kind is None or isinstance(kind, Conditioning):
        return kind
    dim = unet.config.cross_attention_dim
    dim = int(dim if isinstance(dim, int) else dim[0])
    if kind == "learned":
        return LearnedEmbedding(prompt_length, dim)
    if kind == "tokens":
        return ExternalTokens(dim)
    if kind == "prompt" and not encode_prompt:
        return FixedPrompt.placeholder(prompt, prompt_length, dim)
    if kind in ("prompt", "caption"):
        if tokenizer is None or text_encoder is None:
            raise ValueError(f"conditioning={kind!r} needs a tokenizer and a text encoder")
        if text_encoder.config.hidden_size != dim:
            raise ValueError(
                f"text encoder width {text_encoder.config.hidden_size} ≠ U-Net cross_attention_dim {dim}"
            )
        if kind == "prompt":
            return FixedPrompt.encode(prompt, tokenizer, text_encoder)
        return CaptionPrompt(tokenizer, text_encoder, prompt)
    raise ValueError(f"conditioning must be learned, prompt, caption, tokens or a Conditioning; got {kind!r}")


def _check_map(tensor: torch.Tensor, channels: int, what: str) -> None:
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4 or tensor.shape[1] != channels:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"{what} must be a (B, {channels}, H, W) tensor, got {shape}")


__all__ = [
    "DEFAULT_PROMPT",
    "BackboneSource",
    "BaseModelNotFoundError",
    "CaptionPrompt",
    "Conditioning",
    "ExternalTokens",
    "FixedPrompt",
    "LatentTiling",
    "LearnedEmbedding",
    "OneStepBackbone",
    "VaeTiling",
    "base_attention_windows",
    "encode_text",
    "load_component",
    "reference_configs",
    "small_backbone",
    "tiny_configs",
]
