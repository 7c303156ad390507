"""StableCodec: one-step diffusion for extreme image compression (Zhang et al., ICCV 2025, arXiv:2506.21977).

::

    x ∈ [−1,1] ─► E_SD (SD-Turbo VAE encoder + LoRA "vae_skip") ─► l (4, /8) ──┐
      └─(x+1)/2─► E_Aux (ELIC g_a, frozen) ─────────────────────► l₂ (320, /16) ┴─► LatentCodec ──► file
                                                                                          │
    x̂ ◄─ D_SD (frozen) ◄─ l₀ + res ◄─ one-step x0 at t=999 ◄─ U-Net + LoRA(l_T, fixed prompt) ◄─ l_T ┘
                                     ▲                                         (320 ch, /8; conv_in 320→320)
                                     └──────────── res = D_Aux(ŷ) (4 ch, /8) ◄──────────────────────────┘

The *Deep Compression Latent Codec* (paper §3.2, Eq. 1–2; official ``latent_codec.py``) codes y at stride 64
and the hyperprior z at stride 256, with the 4-step quadtree context model and latent residual prediction of
:mod:`diffcodec.entropy.quadtree`. The *Dual-Branch Coding Structure* (§3.3) is E_Aux (concatenated
with the VAE latent inside g_a) and D_Aux (a residual added to the one-step x0 in the scaled latent space).
The decoder output (paper Eq. 3):  l₀ = (l_T[:, :4] − √(1−ᾱ₉₉₉)·ε) / √ᾱ₉₉₉,  x̂ = D_SD(l₀ + res).

Training (§3.4, :mod:`.training`): stage 1 ``λ·R + 2·MSE + LPIPS_VGG + 0.1·L_CLIP`` (λ = 0.5), stage 2 per
target λ with a DINOv2 discriminator (``+ 0.1·L_adv``).

Where the official code (LuizScarlet/StableCodec) and the paper or plain correctness disagree, diffcodec
follows the paper / does it right (official code):

- **No TF32.** The official code enables TF32 globally as an import side effect; diffcodec never sets
  global flags. Real coding runs h_s, the context model, LRP and the CDF-index choice on the CPU in IEEE
  float32, one thread, one image at a time (:mod:`~diffcodec.entropy.determinism`), so that a file
  decodes identically on another machine, GPU or CPU (official code).
- **8-bit output is rounded**, not truncated (the official ``ToPILImage`` path truncates, official code step
  8):
  diffcodec's image I/O rounds to the nearest level, which is what "reconstruction" means.
- **Colour-fix statistics are in the file.** The paper counts the six 16-bit AdaIN statistics as side
  information; the official code recomputes them from the original at decode time. Here they are written
  as a side field (official ``color_fix.py``), so the reported rate counts them and the decoder needs nothing
  else.
- **Stage-2 discriminator update without generator gradients.** The official loop leaves the generator's
  adversarial gradients in the discriminator heads before their first step (official ``train.py``); here the
  generator pass does not reach them, and the discriminator takes one step on its real + fake loss per
  update (the official two steps mix both terms under gradient accumulation anyway).
- **The original size is in the file** (the official decoder takes it from the original image).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import IntEnum
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from diffcodec.bitstream import DecodeError, SideValue
from diffcodec.codecs.base import BaseModelRef, CodecOutput, EncodedImage
from diffcodec.codecs.rungs import PerRateCodec, check_lambda_ladder
from diffcodec.entropy.determinism import parameter_net
from diffcodec.entropy.factorized import EntropyBottleneck, modern_parameter_name
from diffcodec.entropy.gaussian import GaussianConditional, get_scale_table
from diffcodec.entropy.quadtree import QuadtreeContextModel, SharedContextParameters
from diffcodec.files import load_checkpoint_file
from diffcodec.nn.backbone import (
    DEFAULT_PROMPT,
    BackboneSource,
    FixedPrompt,
    OneStepBackbone,
    small_backbone,
    tiny_configs,
)
from diffcodec.nn.blocks import (
    LRP,
    BasicBlock,
    Downsample,
    HyperAnalysis,
    HyperSynthesis,
    Upsample,
    conv3x3,
)
from diffcodec.nn.elic import ELICAnalysisTransform
from diffcodec.nn.lora import STABLECODEC_UNET_TARGETS, STABLECODEC_VAE_ENCODER_TARGETS

__all__ = [
    "BASE_MODEL",
    "OFFICIAL_CODEC_KEY_PREFIXES",
    "OFFICIAL_LAMBDAS",
    "SMALL_ELIC",
    "SMALL_LATENT_CODEC",
    "AnalysisTransform",
    "AuxDecoder",
    "LatentCodec",
    "SDTurboLadder",
    "SideField",
    "StableCodec",
    "SynthesisTransform",
    "adain_color_fix",
    "color_statistics",
    "small_backbone_config",
]


# ---------------------------------------------------------------------------------------------- latent codec
class AnalysisTransform(nn.Module):
    """g_a (official ``latent_codec.py``): fuses the SD latent (stride 8) and the ELIC feature (stride 16)
    into y (stride 64).

    ``pre1`` = Downsample(4 → a) on the SD latent, ``pre2`` = Conv3×3(320 → b) on the ELIC feature (paper
    Fig. 3: "DownSample block and Conv3×3 as adapters"); their concatenation (a + b = N) then goes through
    BasicBlock(N) → Downsample(N → N₂) → BasicBlock(N₂) → Downsample(N₂ → M) → BasicBlock(M).
    Full size: a, b, N₂, M = 128, 64, 256, 320.
    """

    def __init__(
        self,
        latent_channels: int = 320,
        sd_channels: int = 4,
        aux_channels: int = 320,
        pre_channels: tuple[int, int] = (128, 64),
        mid_channels: int = 256,
    ) -> None:
        super().__init__()
        n = sum(pre_channels)
        self.pre1 = Downsample(sd_channels, pre_channels[0])
        self.pre2 = conv3x3(aux_channels, pre_channels[1])
        self.analysis_transform = nn.Sequential(
            BasicBlock(n),
            Downsample(n, mid_channels),
            BasicBlock(mid_channels),
            Downsample(mid_channels, latent_channels),
            BasicBlock(latent_channels),
        )

    def forward(self, latent: Tensor, latent2: Tensor) -> Tensor:
        return self.analysis_transform(torch.cat((self.pre1(latent), self.pre2(latent2)), dim=1))


class SynthesisTransform(nn.Module):
    """g_s (official ``latent_codec.py``): 3 × [BasicBlock(M), Upsample(M → M)], ŷ (stride 64) → l_T (M
    channels, stride 8)."""

    def __init__(self, latent_channels: int = 320) -> None:
        super().__init__()
        m = latent_channels
        self.synthesis_transform = nn.Sequential(
            *(layer for _ in range(3) for layer in (BasicBlock(m), Upsample(m, m)))
        )

    def forward(self, y_hat: Tensor) -> Tensor:
        return self.synthesis_transform(y_hat)


class AuxDecoder(nn.Module):
    """D_Aux (paper §3.3, official ``latent_codec.py``): ŷ → a 4-channel residual in the scaled SD latent
    space (stride 8).

    BasicBlock(M) → Upsample(M → c₁) → BasicBlock(c₁) → Upsample(c₁ → c₂) → BasicBlock(c₂) → Upsample(c₂ → 4);
    full size c₁, c₂ = 256, 192. "Shares a similar structure with g_s" (paper Fig. 3).
    """

    def __init__(
        self, latent_channels: int = 320, channels: tuple[int, int] = (256, 192), out_channels: int = 4
    ) -> None:
        super().__init__()
        c0, (c1, c2) = latent_channels, channels
        self.block = nn.Sequential(
            BasicBlock(c0),
            Upsample(c0, c1),
            BasicBlock(c1),
            Upsample(c1, c2),
            BasicBlock(c2),
            Upsample(c2, out_channels),
        )

    def forward(self, y_hat: Tensor) -> Tensor:
        return self.block(y_hat)


#: Official ``state_dict_codec`` key prefixes → diffcodec's (the quadtree parts live in ``context_model``).
OFFICIAL_CODEC_KEY_PREFIXES: dict[str, str] = {
    "adapter_in.": "context_model.entropy_parameters.adapter_in.",
    "g_c.": "context_model.entropy_parameters.g_c.",
    "adapter_out.": "context_model.entropy_parameters.adapter_out.",
    "LRP.": "context_model.lrp.",
    "gaussian_conditional.": "context_model.gaussian_conditional.",
}


#: Widths of a small :class:`LatentCodec` of the same classes (~1/200 of the parameters): tests, CPU runs.
SMALL_LATENT_CODEC: dict[str, Any] = {
    "latent_channels": 32, "hyper_channels": 16, "context_channels": 48, "context_blocks": 1,
    "aux_channels": 32, "pre_channels": (16, 8), "mid_channels": 24, "aux_decoder_channels": (24, 16),
}  # fmt: skip
#: A small ELIC g_a matching :data:`SMALL_LATENT_CODEC` (M = its ``aux_channels``).
SMALL_ELIC: dict[str, int] = {"N": 16, "M": 32}


class LatentCodec(nn.Module):
    """Deep Compression Latent Codec (paper §3.2; official ``latent_codec.py``): 74,081,088 parameters at
    full size.

    ::

        latent (4, /8), latent2 (320, /16) ─g_a─► y (M, /64) ─h_a─► z (Z, /256) ─EntropyBottleneck─► ẑ
                                                  │                                                    │
                                                  └──► 4-step quadtree (μ_k, σ_k, LRP_k) ◄── h_s(ẑ) ◄──┘
                                                                 │
                                   l_T = g_s(ŷ) (M, /8), res = aux(ŷ) (4, /8) ◄── ŷ

    Args:
        latent_channels: M, channels of y (320); also the channels of l_T.
        hyper_channels: Z, channels of z (160).
        context_channels: width of the shared context network g_c (960).
        context_blocks: BasicBlocks in g_c (4).
        sd_channels / aux_channels: channels of the SD latent (4) and of the ELIC feature (320).
        pre_channels / mid_channels: widths inside g_a (see :class:`AnalysisTransform`).
        aux_decoder_channels: widths inside D_Aux (see :class:`AuxDecoder`).

    State-dict keys are the official ones except the quadtree parts, which live under ``context_model``
    (see :data:`OFFICIAL_CODEC_KEY_PREFIXES` and :meth:`load_official_state_dict`).
    """

    def __init__(
        self,
        latent_channels: int = 320,
        hyper_channels: int = 160,
        context_channels: int = 960,
        context_blocks: int = 4,
        sd_channels: int = 4,
        aux_channels: int = 320,
        pre_channels: tuple[int, int] = (128, 64),
        mid_channels: int = 256,
        aux_decoder_channels: tuple[int, int] = (256, 192),
    ) -> None:
        super().__init__()
        m = latent_channels
        self.latent_channels = m
        self.g_a = AnalysisTransform(m, sd_channels, aux_channels, tuple(pre_channels), mid_channels)
        self.g_s = SynthesisTransform(m)
        self.h_a = HyperAnalysis(m, hyper_channels)
        self.h_s = HyperSynthesis(m, hyper_channels)
        self.aux = AuxDecoder(m, tuple(aux_decoder_channels), sd_channels)
        self.entropy_bottleneck = EntropyBottleneck(hyper_channels)
        self.context_model = QuadtreeContextModel(
            SharedContextParameters(m, context_channels, context_blocks),
            lrp=[LRP(2 * m, m) for _ in range(4)],
            gaussian_conditional=GaussianConditional(None),
        )

    @property
    def gaussian_conditional(self) -> GaussianConditional:
        return self.context_model.gaussian_conditional

    # ------------------------------------------------------------------ training path
    def forward(self, latent: Tensor, latent2: Tensor) -> dict[str, Any]:
        """Differentiable pass (official code): noisy likelihoods in training, rounded ones in eval.

        Returns ``y``, ``z``, ``z_hat``, ``params`` (= h_s(ẑ)), ``y_hat``, ``means``, ``scales``
        (gathered over the four steps), ``likelihoods`` {"y", "z"}, ``l_T`` and ``res``.
        """
        y = self.g_a(latent, latent2)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        params = self.h_s(z_hat)
        out = self.context_model(y, params)
        y_hat = out["y_hat"]
        return {
            "y": y, "z": z, "z_hat": z_hat, "params": params, "y_hat": y_hat,
            "means": out["means"], "scales": out["scales"],
            "likelihoods": {"y": out["likelihoods"]["y"], "z": z_likelihoods},
            "l_T": self.g_s(y_hat), "res": self.aux(y_hat),
        }  # fmt: skip

    # ------------------------------------------------------------------ real coding
    def update(self, force: bool = False) -> bool:
        """Build the integer CDF tables (CompressAI's ``update``): the EntropyBottleneck from its stored
        quantiles (never re-fitted, official code) and the Gaussian with the ELIC/Ballé 64-entry scale
        table."""
        updated = self.entropy_bottleneck.update(force=force)
        gaussian = self.gaussian_conditional
        if gaussian.scale_table.numel() == 0 or force:
            updated |= gaussian.update_scale_table(get_scale_table(), force=True)
        else:
            updated |= gaussian.update(force=force)
        return updated

    def compress(self, latent: Tensor, latent2: Tensor) -> dict[str, Any]:
        """``{"strings": [y_strings, z_strings], "shape": z grid, "y_hat": ŷ}`` (a string per image)."""
        y = self.g_a(latent, latent2)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        params = parameter_net(self.h_s, z_hat)  # reproducible on any machine (entropy/determinism.py)
        out = self.context_model.compress(y, params)
        return {
            "strings": [out["strings"][0], z_strings],
            "shape": tuple(z.shape[-2:]),
            "y_hat": out["y_hat"],
        }

    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int]) -> dict[str, Tensor]:
        """ŷ, l_T and res from :meth:`compress`'s strings and the z grid ``shape`` (the y grid is 4× it)."""
        if len(strings) != 2:
            raise ValueError(f"expected [y_strings, z_strings], got {len(strings)} lists")
        y_strings, z_strings = strings
        z_hat = self.entropy_bottleneck.decompress(z_strings, shape)
        params = parameter_net(self.h_s, z_hat)
        y_hat = self.context_model.decompress([y_strings], params.shape[-2:], params)["y_hat"]
        return {"y_hat": y_hat, "l_T": self.g_s(y_hat), "res": self.aux(y_hat)}

    # ------------------------------------------------------------------ official checkpoints
    @staticmethod
    def official_to_diffcodec_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Rename an official ``state_dict_codec`` to this class's keys: the quadtree parts move under
        ``context_model`` and the EntropyBottleneck names of compressai ≤ 1.2.6 (``_matrix0`` …) become
        ≥ 1.2.7's (``matrices.0`` …; official code, the cause of LuizScarlet/StableCodec issue #5)."""
        renamed: dict[str, Tensor] = {}
        for key, value in state_dict.items():
            for old, new in OFFICIAL_CODEC_KEY_PREFIXES.items():
                if key.startswith(old):
                    key = new + key[len(old) :]
                    break
            if key.startswith("entropy_bottleneck."):
                key = "entropy_bottleneck." + modern_parameter_name(key[len("entropy_bottleneck.") :])
            if key in renamed:
                raise KeyError(f"{key} appears twice in the official state dict (old and new names)")
            renamed[key] = value
        return renamed

    def load_official_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load an official ``state_dict_codec`` strictly (any missing or unexpected key raises)."""
        self.load_state_dict(self.official_to_diffcodec_keys(state_dict), strict=True)


# ---------------------------------------------------------------------------------------------- colour fix
class SideField(IntEnum):
    """Side-information keys of a StableCodec file."""

    #: uint16 (6,): the original's per-channel mean (3) and std (3), 16-bit (official ``color_fix.py``)
    COLOR_STATS = 0


def color_statistics(x: Tensor) -> Tensor:
    """Per-channel mean and std of a (1, 3, H, W) image in [0, 1], quantised to 16 bits (official
    ``color_fix.py``).

    std = √(unbiased var + 1e-5); q(v) = round(v·65535) (half to even). Returns 6 int values (μ_RGB, s_RGB).
    """
    if x.dim() != 4 or x.shape[:2] != (1, 3):
        raise ValueError(f"colour statistics need a (1, 3, H, W) image, got {tuple(x.shape)}")
    flat = x[0].reshape(3, -1).double()
    mean = flat.mean(dim=1)
    std = (
        (flat.var(dim=1, unbiased=True) + 1e-5).sqrt()
        if flat.shape[1] > 1
        else flat.new_full((3,), 1e-5**0.5)
    )
    return torch.round(torch.cat((mean, std)).clamp(0, 1) * 65535).to(torch.int64)


def adain_color_fix(x_hat: Tensor, target_stats: Tensor) -> Tensor:
    """AdaIN colour fix (StableCodec ``--color_fix``, official ``color_fix.py``): give x̂ the original's
    channel statistics.

    ``(x̂ − q(μ_x̂)) / q(s_x̂) · q(s_x) + q(μ_x)``, clamped to [0, 1]; both sets of statistics are the 16-bit
    quantised ones, so encoder and decoder agree. x̂ is taken on the 8-bit grid first, as the official code.
    """
    recon = x_hat.clamp(0, 1).mul(255).round().div(255)
    own = color_statistics(recon).to(torch.float64) / 65535
    target = target_stats.to(torch.float64) / 65535
    mean_r, std_r = own[:3].view(1, 3, 1, 1), own[3:].view(1, 3, 1, 1)
    mean_o, std_o = target[:3].view(1, 3, 1, 1), target[3:].view(1, 3, 1, 1)
    fixed = (recon.double() - mean_r) / std_r.clamp_min(1 / 65535) * std_o + mean_o
    return fixed.clamp(0, 1).to(x_hat.dtype)


# ---------------------------------------------------------------------------------------------- rungs
_UNET_ADAPTER = "default"  # the official adapter names: state-dict keys ….lora_A.default.weight
_VAE_ADAPTER = "vae_skip"
BASE_MODEL = "stabilityai/sd-turbo"
BASE_LICENCE = "other (Stability AI Community License)"
#: λ_target of the nine official fine-tuned models, in ascending rate order (``stablecodec_ft{λ}.pkl``).
OFFICIAL_LAMBDAS: tuple[float, ...] = (32, 24, 16, 12, 8, 6, 4, 3, 2)


def small_backbone_config(cross_attention_dim: int = 32) -> dict[str, dict[str, Any]]:
    """A tiny random-init SD-Turbo-like backbone (epsilon prediction) for tests and CPU runs."""
    return tiny_configs(cross_attention_dim=cross_attention_dim, prediction_type="epsilon")


class SDTurboLadder(PerRateCodec):
    """What StableCodec and CADC share (same authors; CADC composes StableCodec's parts, paper §3.1): a
    per-λ ladder on frozen SD-Turbo whose rungs are a latent codec plus the U-Net (and VAE-encoder)
    adapters, padded to the z grid (256 px), with the optional AdaIN colour fix whose statistics travel in
    the file. Subclasses build ``latent_codec`` and ``backbone`` and implement the pipeline."""

    pad_multiple = 256
    pad_mode = "reflect"
    #: training settings the constructors took before training moved to the training modules (dropped on load)
    retired_args = frozenset(
        [
            "accumulate_grad_batches",
            "adversarial_target",
            "adversarial_weight",
            "clip_model",
            "clip_weight",
            "diffaugment",
            "discriminator_learning_rate",
            "discriminator_model",
            "gradient_clip",
            "learning_rate",
            "lpips_weight",
            "mse_weight",
            "stage",
            "weight_decay",
        ]
    )

    # ------------------------------------------------------------------ contract
    def base_model_ref(self) -> BaseModelRef | None:
        base = self.hparams.get("base_model")
        return None if base is None else BaseModelRef(base, self.hparams.get("base_revision"), BASE_LICENCE)

    # ------------------------------------------------------------------ per-rung weights
    def is_rung_key(self, key: str) -> bool:
        """Whether state-dict entry ``key`` is one rung's own weight: the latent codec, the U-Net LoRA and
        conv_in, the VAE-encoder LoRA (not the frozen base, the prompt embedding or ELIC)."""
        if key.startswith("latent_codec."):
            return True
        if not key.startswith("backbone."):
            return False
        key = key[len("backbone.") :]
        return not key.startswith("conditioning.") and not self.backbone.is_base_key(key)

    # ------------------------------------------------------------------ real coding
    def _prepare_for_coding(self) -> None:
        self.latent_codec.update(force=False)

    def _original_side(self, x: Tensor) -> dict[int, SideValue]:
        """The original's colour statistics when built with ``color_fix``."""
        if not self.hparams.color_fix:
            return {}
        return {SideField.COLOR_STATS: color_statistics(x).numpy().astype(np.uint16)}

    def _finish_decoding(self, x_hat: Tensor, side: Mapping[int, SideValue]) -> Tensor:
        """The AdaIN colour fix if the file carries colour statistics."""
        stats = side.get(SideField.COLOR_STATS)
        if stats is None:
            return x_hat
        if not isinstance(stats, np.ndarray) or stats.dtype != np.uint16 or stats.shape != (6,):
            raise DecodeError(f"the colour statistics must be 6 uint16 values, got {stats!r}")
        return adain_color_fix(x_hat, torch.from_numpy(stats.astype(np.int64)))


class StableCodec(SDTurboLadder):
    """StableCodec (see the module docstring): E_SD + E_Aux → latent codec → one-step SD-Turbo decoder.

    One rung per λ (per-λ models, paper §4.1). All rungs share the frozen SD-Turbo weights, ELIC g_a and the
    prompt embedding; each rung has its own latent codec, U-Net LoRA + conv_in and VAE-encoder LoRA, which
    :meth:`_activate_rung` swaps in (inactive rungs are kept on the CPU). A checkpoint stores the active rung
    under the module keys and the others under ``rungs.{r}.…``.

    Args:
        name: model identifier (its 8-bit tag is written into every file).
        lambdas: λ of each rung (the rate weight of its training loss), in ascending *rate* order.
        rates: nominal bpp of each rung (ascending); default: one placeholder rate per rung, 0.01·(r+1).
        latent_codec: :class:`LatentCodec` arguments (``None``: full size; :data:`SMALL_LATENT_CODEC`).
        elic: :class:`~diffcodec.nn.elic.ELICAnalysisTransform` arguments (N, M); M must equal the
            latent codec's ``aux_channels``.
        elic_checkpoint: ``elic_official.pth`` to load E_Aux from (training from scratch); checkpoints
            of this class carry E_Aux themselves.
        backbone: configs of a random-init backbone (``vae_config``, ``unet_config``, ``scheduler_config``;
            see :func:`small_backbone_config`), used when ``base_model`` is None. Its prompt embedding is a
            seeded random tensor (no text encoder needed).
        base_model, base_revision: SD-Turbo's hub id (or a local diffusers folder) and revision.
        encode_prompt: encode the fixed prompt with the base model's text encoder at construction; False
            leaves a placeholder that a checkpoint must fill (diffcodec checkpoints store the embedding).
        prompt: the fixed prompt (official code).
        unet_lora_rank, vae_lora_rank, lora_alpha: adapters (32 and 16, alpha 8 → scaling 0.25 / 0.5).
        timestep: the one-step timestep (999).
        color_fix: write the original's 16-bit colour statistics into every file; the decoder then applies
            the AdaIN colour fix (official ``color_fix.py``; recommended for tiled high-resolution images).

    Training (stage 1 base training, stage 2 per-λ fine-tuning with the DINOv2 discriminator):
    :class:`~diffcodec.codecs.stablecodec.training.StableCodecTraining`.
    """

    method = "stablecodec"
    paper = "StableCodec: Taming One-Step Diffusion for Extreme Image Compression (Zhang et al., ICCV 2025)"
    paper_url = "https://arxiv.org/abs/2506.21977"
    licence = "mit"

    def __init__(
        self,
        *,
        name: str = "stablecodec",
        lambdas: Sequence[float] = (0.5,),
        rates: Sequence[float] | None = None,
        latent_codec: Mapping[str, Any] | None = None,
        elic: Mapping[str, int] | None = None,
        elic_checkpoint: str | None = None,
        backbone: BackboneSource = None,
        base_model: str | None = None,
        base_revision: str | None = None,
        encode_prompt: bool = True,
        prompt: str = DEFAULT_PROMPT,
        unet_lora_rank: int = 32,
        vae_lora_rank: int = 16,
        lora_alpha: float = 8.0,
        timestep: int = 999,
        color_fix: bool = False,
    ) -> None:
        super().__init__()
        lambdas, rates = check_lambda_ladder(lambdas, rates)
        self._name = name
        self._rates = rates
        self.lambdas = lambdas

        codec_args = dict(latent_codec or {})
        self.latent_codec = LatentCodec(**codec_args)
        elic_args = dict(elic or {})
        self.aux_encoder = ELICAnalysisTransform(**elic_args)
        if elic_checkpoint is not None:
            self.aux_encoder.load_official_state_dict(
                load_checkpoint_file(elic_checkpoint)  # weights_only
            )
        self.aux_encoder.eval().requires_grad_(False)
        if self.aux_encoder.analysis_transform[-2].out_channels != codec_args.get("aux_channels", 320):
            raise ValueError("ELIC's M must equal the latent codec's aux_channels")

        m = self.latent_codec.latent_channels
        if base_model is not None:
            self.backbone = OneStepBackbone.from_pretrained(
                base_model, base_revision, conditioning="prompt", prompt=prompt, encode_prompt=encode_prompt,
                conv_in_channels=m, timestep=timestep,
            )  # fmt: skip
        else:
            self.backbone = small_backbone(
                backbone, small_backbone_config(), conv_in_channels=m, timestep=timestep
            )
            generator = torch.Generator().manual_seed(0)
            dim = self.backbone.cross_attention_dim
            self.backbone.conditioning = FixedPrompt(torch.randn(1, 77, dim, generator=generator), prompt)
        if self.backbone.latent_channels != codec_args.get("sd_channels", 4):
            raise ValueError("the VAE's latent channels must equal the latent codec's sd_channels")
        self.backbone.add_lora(_UNET_ADAPTER, STABLECODEC_UNET_TARGETS, rank=unet_lora_rank, alpha=lora_alpha)
        self.backbone.add_lora(
            _VAE_ADAPTER, STABLECODEC_VAE_ENCODER_TARGETS, rank=vae_lora_rank, alpha=lora_alpha, on="vae"
        )
        self._init_rung_bank()

    # ------------------------------------------------------------------ the pipeline
    def encode_latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(E_SD latent ×0.18215, E_Aux feature) of x ∈ [0, 1] (official ``compress.py`` steps 3–4; tiled VAE
        if large)."""
        latent = self.backbone.encode(x * 2 - 1)
        with torch.no_grad():
            latent2 = self.aux_encoder(x)
        return latent, latent2

    def synthesize(self, l_t: Tensor, res: Tensor) -> tuple[Tensor, Tensor]:
        """(x̂ ∈ [0, 1], l₀) from l_T and the D_Aux residual: one U-Net step at t = 999 on l_T (latent-tiled
        when large), x0 from l_T[:, :4] (paper Eq. 3), + res, frozen VAE decoder, clamp (official code,
        3–7)."""
        l_0 = self.backbone.denoise(l_t)
        x_hat = self.backbone.decode(l_0 + res).add(1).div(2)
        return x_hat, l_0

    def forward(self, x: Tensor) -> CodecOutput:
        """Training path on x (B, 3, H, W) ∈ [0, 1], H and W multiples of 256 (noise proxy in training)."""
        self.check_training_input(x)
        latent, latent2 = self.encode_latents(x)
        out = self.latent_codec(latent, latent2)
        x_hat, l_0 = self.synthesize(out["l_T"], out["res"])
        return CodecOutput(
            x_hat=x_hat, likelihoods=out["likelihoods"], aux={**out, "latent": latent, "l_0": l_0}
        )

    # ------------------------------------------------------------------ real coding
    def _compress(self, x: Tensor, rung: int) -> EncodedImage:
        latent, latent2 = self.encode_latents(x)
        out = self.latent_codec.compress(latent, latent2)
        (y_string,), (z_string,) = out["strings"]
        return EncodedImage(streams=[z_string, y_string])

    def _decompress(self, encoded: EncodedImage, padded_size: tuple[int, int], rung: int) -> Tensor:
        if len(encoded.streams) != 2:
            raise DecodeError(f"a StableCodec file has 2 streams (z, y), found {len(encoded.streams)}")
        z_string, y_string = encoded.streams
        grid = (padded_size[0] // self.pad_multiple, padded_size[1] // self.pad_multiple)
        out = self.latent_codec.decompress([[y_string], [z_string]], grid)
        return self.synthesize(out["l_T"], out["res"])[0]
