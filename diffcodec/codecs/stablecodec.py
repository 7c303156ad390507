"""StableCodec: one-step diffusion for extreme image compression (Zhang et al., ICCV 2025, arXiv:2506.21977).

::

    x ∈ [−1,1] ─► E_SD (SD-Turbo VAE encoder + LoRA "vae_skip") ─► l (4, /8) ──┐
      └─(x+1)/2─► E_Aux (ELIC g_a, frozen) ─────────────────────► l₂ (320, /16) ┴─► LatentCodec ──► file
                                                                                          │
    x̂ ◄─ D_SD (frozen) ◄─ l₀ + res ◄─ one-step x0 at t=999 ◄─ U-Net + LoRA(l_T, fixed prompt) ◄─ l_T ┘
                                     ▲                                         (320 ch, /8; conv_in 320→320)
                                     └──────────── res = D_Aux(ŷ) (4 ch, /8) ◄──────────────────────────┘

The *Deep Compression Latent Codec* (paper §3.2, Eq. 1–2; spec ``stablecodec.md`` §4–§5) codes y at stride 64
and the hyperprior z at stride 256, with the 4-step quadtree context model and latent residual prediction of
:mod:`diffcodec.codecs.entropy.quadtree`. The *Dual-Branch Coding Structure* (§3.3) is E_Aux (concatenated
with the VAE latent inside g_a) and D_Aux (a residual added to the one-step x0 in the scaled latent space).
The decoder output (paper Eq. 3):  l₀ = (l_T[:, :4] − √(1−ᾱ₉₉₉)·ε) / √ᾱ₉₉₉,  x̂ = D_SD(l₀ + res).

Training (§3.4, spec §8): stage 1 ``λ·R + 2·MSE + LPIPS_VGG + 0.1·L_CLIP`` (λ = 0.5), stage 2 per target λ
with a DINOv2 discriminator (``+ 0.1·L_adv``).

Where the official code (LuizScarlet/StableCodec) and the paper or plain correctness disagree, diffcodec
follows the paper / does it right (spec §13):

- **No TF32.** The official code enables TF32 globally as an import side effect; diffcodec never sets
  global flags. Real coding runs h_s, the context model, LRP and the CDF-index choice on the CPU in IEEE
  float32, one thread, one image at a time (:mod:`~diffcodec.codecs.entropy.determinism`), so that a file
  decodes identically on another machine, GPU or CPU (spec §13.6).
- **8-bit output is rounded**, not truncated (the official ``ToPILImage`` path truncates, spec §3 step 8):
  diffcodec's image I/O rounds to the nearest level, which is what "reconstruction" means.
- **Colour-fix statistics are in the file.** The paper counts the six 16-bit AdaIN statistics as side
  information; the official code recomputes them from the original at decode time. Here they are written
  as a side field (spec §10.4), so the reported rate counts them and the decoder needs nothing else.
- **Stage-2 discriminator update without generator gradients.** The official loop leaves the generator's
  adversarial gradients in the discriminator heads before their first step (spec §8.3); here the
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
import torch.nn.functional as F
from torch import Tensor, nn

from diffcodec.bitstream import DecodeError, SideValue
from diffcodec.codecs.backbone import (
    DEFAULT_PROMPT,
    BackboneSource,
    FixedPrompt,
    OneStepBackbone,
    small_backbone,
    tiny_configs,
)
from diffcodec.codecs.base import BaseModelRef, CodecOutput, EncodedImage
from diffcodec.codecs.blocks import (
    LRP,
    BasicBlock,
    Downsample,
    HyperAnalysis,
    HyperSynthesis,
    Upsample,
    conv3x3,
)
from diffcodec.codecs.discriminators import DINOv2Discriminator
from diffcodec.codecs.elic import ELICAnalysisTransform
from diffcodec.codecs.entropy.determinism import parameter_net
from diffcodec.codecs.entropy.factorized import EntropyBottleneck, modern_parameter_name
from diffcodec.codecs.entropy.gaussian import GaussianConditional, get_scale_table
from diffcodec.codecs.entropy.quadtree import QuadtreeContextModel, SharedContextParameters
from diffcodec.codecs.lora import STABLECODEC_UNET_TARGETS, STABLECODEC_VAE_ENCODER_TARGETS
from diffcodec.codecs.losses import CLIPLoss, LPIPSLoss
from diffcodec.codecs.rungs import PerRateCodec, check_lambda_ladder
from diffcodec.training.accumulation import GradientAccumulation
from diffcodec.zoo.hub import load_checkpoint_file

__all__ = [
    "BASE_MODEL",
    "OFFICIAL_CODEC_KEY_PREFIXES",
    "OFFICIAL_LAMBDAS",
    "SMALL_ELIC",
    "SMALL_LATENT_CODEC",
    "AnalysisTransform",
    "AuxDecoder",
    "LatentCodec",
    "SideField",
    "StableCodec",
    "SynthesisTransform",
    "adain_color_fix",
    "color_statistics",
    "small_backbone_config",
]


# ---------------------------------------------------------------------------------------------- latent codec
class AnalysisTransform(nn.Module):
    """g_a (spec §4.2): fuses the SD latent (stride 8) and the ELIC feature (stride 16) into y (stride 64).

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
    """g_s (spec §4.2): 3 × [BasicBlock(M), Upsample(M → M)], ŷ (stride 64) → l_T (M channels, stride 8)."""

    def __init__(self, latent_channels: int = 320) -> None:
        super().__init__()
        m = latent_channels
        self.synthesis_transform = nn.Sequential(
            *(layer for _ in range(3) for layer in (BasicBlock(m), Upsample(m, m)))
        )

    def forward(self, y_hat: Tensor) -> Tensor:
        return self.synthesis_transform(y_hat)


class AuxDecoder(nn.Module):
    """D_Aux (paper §3.3, spec §4.2): ŷ → a 4-channel residual in the scaled SD latent space (stride 8).

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
    """Deep Compression Latent Codec (paper §3.2; spec §4–§5): 74,081,088 parameters at full size.

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
        """Differentiable pass (spec §5.4–§5.5): noisy likelihoods in training, rounded ones in eval.

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
        quantiles (never re-fitted, spec §5.1) and the Gaussian with the ELIC/Ballé 64-entry scale table."""
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
        ≥ 1.2.7's (``matrices.0`` …; spec §5.1, the cause of LuizScarlet/StableCodec issue #5)."""
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

    COLOR_STATS = 0  #: uint16 (6,): the original's per-channel mean (3) and std (3), 16-bit (spec §10.4)


def color_statistics(x: Tensor) -> Tensor:
    """Per-channel mean and std of a (1, 3, H, W) image in [0, 1], quantised to 16 bits (spec §10.4).

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
    """AdaIN colour fix (StableCodec ``--color_fix``, spec §10.4): give x̂ the original's channel statistics.

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


class StableCodec(PerRateCodec):
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
        elic: :class:`~diffcodec.codecs.elic.ELICAnalysisTransform` arguments (N, M); M must equal the
            latent codec's ``aux_channels``.
        elic_checkpoint: ``elic_official.pth`` to load E_Aux from (training from scratch); checkpoints
            of this class carry E_Aux themselves.
        backbone: configs of a random-init backbone (``vae_config``, ``unet_config``, ``scheduler_config``;
            see :func:`small_backbone_config`), used when ``base_model`` is None. Its prompt embedding is a
            seeded random tensor (no text encoder needed).
        base_model, base_revision: SD-Turbo's hub id (or a local diffusers folder) and revision.
        encode_prompt: encode the fixed prompt with the base model's text encoder at construction; False
            leaves a placeholder that a checkpoint must fill (diffcodec checkpoints store the embedding).
        prompt: the fixed prompt (spec §6.3).
        unet_lora_rank, vae_lora_rank, lora_alpha: adapters (32 and 16, alpha 8 → scaling 0.25 / 0.5).
        timestep: the one-step timestep (999).
        color_fix: write the original's 16-bit colour statistics into every file; the decoder then applies
            the AdaIN colour fix (spec §10.4; recommended for tiled high-resolution images).
        stage: 0 inference, 1 base training (λ·R + D), 2 per-λ fine-tuning with the DINOv2 discriminator.
        Training: mse_weight (2), lpips_weight (1), clip_weight (0.1), adversarial_weight (0.1),
            adversarial_target (0.8), learning_rate, discriminator_learning_rate, weight_decay, gradient_clip,
            accumulate_grad_batches, clip_model / discriminator_model (hub id, folder, or a config dict for a
            random-init model), diffaugment.
    """

    method = "stablecodec"
    pad_multiple = 256
    pad_mode = "reflect"
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
        stage: int = 0,
        mse_weight: float = 2.0,
        lpips_weight: float = 1.0,
        clip_weight: float = 0.1,
        adversarial_weight: float = 0.1,
        adversarial_target: float = 0.8,
        learning_rate: float = 1e-4,
        discriminator_learning_rate: float = 2e-5,
        weight_decay: float = 1e-2,
        gradient_clip: float = 1.0,
        accumulate_grad_batches: int = 1,
        clip_model: str | Mapping[str, Any] | None = "openai/clip-vit-base-patch32",
        discriminator_model: str | Mapping[str, Any] | None = "facebook/dinov2-with-registers-base",
        diffaugment: str = "color,translation,cutout",
    ) -> None:
        super().__init__()
        if stage not in (0, 1, 2):
            raise ValueError(f"stage must be 0 (inference), 1 or 2, got {stage!r}")
        lambdas, rates = check_lambda_ladder(lambdas, rates)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self._name = name
        self._rates = rates
        self.lambdas = lambdas
        self.stage = stage
        self.accumulation = GradientAccumulation(accumulate_grad_batches)

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
        self._losses: dict[str, nn.Module] = {}  # LPIPS / CLIP, built on first use, not in the state dict
        self.discriminator: DINOv2Discriminator | None = None
        if stage == 2 and adversarial_weight > 0:
            self.discriminator = DINOv2Discriminator(discriminator_model, policy=diffaugment)

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

    # ------------------------------------------------------------------ the pipeline
    def encode_latents(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(E_SD latent ×0.18215, E_Aux feature) of x ∈ [0, 1] (spec §2 steps 3–4; tiled VAE if large)."""
        latent = self.backbone.encode(x * 2 - 1)
        with torch.no_grad():
            latent2 = self.aux_encoder(x)
        return latent, latent2

    def synthesize(self, l_t: Tensor, res: Tensor) -> tuple[Tensor, Tensor]:
        """(x̂ ∈ [0, 1], l₀) from l_T and the D_Aux residual: one U-Net step at t = 999 on l_T (latent-tiled
        when large), x0 from l_T[:, :4] (paper Eq. 3), + res, frozen VAE decoder, clamp (spec §3, 3–7)."""
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
    def _prepare_for_coding(self) -> None:
        self.latent_codec.update(force=False)

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

    # ------------------------------------------------------------------ training
    def _loss_network(self, name: str) -> nn.Module:
        if name not in self._losses:
            hp = self.hparams
            self._losses[name] = LPIPSLoss("vgg") if name == "lpips" else CLIPLoss(hp.clip_model)
        return self._losses[name].to(self.device)

    def generator_terms(self, x: Tensor) -> dict[str, Tensor]:
        """λ·R + D (+ β·L_adv in stage 2) on x ∈ [0, 1] at the active rung (paper Eq. 5–7, spec §8.1).

        R = bpp_y + bpp_z from the noisy likelihoods over the batch's pixel count; D = 2·MSE + LPIPS_VGG +
        0.1·L_CLIP on images in [−1, 1]; L_adv = BCE(D(x̂), 0.8) (the official generator target).
        """
        hp = self.hparams
        out = self(x)
        bpp = out.bpp(x.shape[-2] * x.shape[-1]).mean()
        ref, rec = x * 2 - 1, out.x_hat * 2 - 1
        terms = {"bpp": bpp, "mse": F.mse_loss(rec, ref)}
        loss = self.lambdas[self.quality] * bpp + hp.mse_weight * terms["mse"]
        if hp.lpips_weight:
            terms["lpips"] = self._loss_network("lpips")(rec, ref)
            loss = loss + hp.lpips_weight * terms["lpips"]
        if hp.clip_weight:
            terms["clip"] = self._loss_network("clip")(rec, ref)
            loss = loss + hp.clip_weight * terms["clip"]
        if self.stage == 2 and self.discriminator is not None:
            terms["adversarial"] = self.discriminator.loss(self.discriminator(rec), hp.adversarial_target)
            loss = loss + hp.adversarial_weight * terms["adversarial"]
        terms["loss"] = loss
        terms["x_hat"] = out.x_hat
        return terms

    def training_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        """One micro-batch of stage 1 or 2, manual optimisation with gradient accumulation (spec §8).

        Stage 2 then updates the discriminator on 0.1·[BCE(D(x), 0.8) + BCE(D(x̂.detach()), 0)]; the
        generator pass leaves no gradient in it (the official loop leaks one, spec §8.3), and real and fake
        terms share one optimiser step per accumulation group (the official code steps twice, which under
        accumulation mixes the two terms anyway).
        """
        if self.stage == 0:
            raise RuntimeError(
                "this StableCodec was built with stage=0 (inference); set stage to 1 or 2 to train"
            )
        hp = self.hparams
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        optimizers = self.optimizers()
        opt_g, opt_d = optimizers if isinstance(optimizers, (list, tuple)) else (optimizers, None)
        if opt_d is not None:
            self.toggle_optimizer(opt_g)  # discriminator parameters: requires_grad False for this pass
        terms = self.generator_terms(x)
        self.accumulation.backward(self, terms["loss"], batch_idx)
        self.accumulation.step(self, opt_g, batch_idx, clip_norm=hp.gradient_clip)
        logs = {f"train/{k}": v.detach() for k, v in terms.items() if v.ndim == 0}
        if opt_d is not None:
            self.untoggle_optimizer(opt_g)
            self.toggle_optimizer(opt_d)
            real = self.discriminator.loss(self.discriminator(x * 2 - 1), hp.adversarial_target)
            fake = self.discriminator.loss(self.discriminator(terms["x_hat"].detach() * 2 - 1), 0.0)
            d_loss = hp.adversarial_weight * (real + fake)
            self.accumulation.backward(self, d_loss, batch_idx)
            self.accumulation.step(self, opt_d, batch_idx, clip_norm=hp.gradient_clip)
            self.untoggle_optimizer(opt_d)
            logs |= {"train/d_real": real.detach(), "train/d_fake": fake.detach()}
        self.log_dict(logs, prog_bar=False)
        return terms["loss"].detach()

    def validation_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> None:
        """Forward pass in eval mode: likelihood bpp (rounded latents) and PSNR of the active rung."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        out = self(x)
        mse = F.mse_loss(out.x_hat.clamp(0, 1), x)
        logs = {"val/bpp": out.bpp(x.shape[-2] * x.shape[-1]).mean(), "val/psnr": -10 * torch.log10(mse)}
        self.log_dict(logs, sync_dist=True)

    def configure_optimizers(self) -> Any:
        """AdamW (0.9, 0.999), eps 1e-8, weight decay 1e-2 over the latent codec, the U-Net LoRA + conv_in
        and the VAE-encoder LoRA (spec §8.1); stage 2 adds the discriminator heads' AdamW."""
        hp = self.hparams
        if self.stage == 0:
            raise RuntimeError(
                "this StableCodec was built with stage=0 (inference); set stage to 1 or 2 to train"
            )
        params = [*self.latent_codec.parameters(), *self.backbone.trainable_parameters()]
        generator = torch.optim.AdamW(
            params, lr=hp.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=hp.weight_decay
        )
        if self.discriminator is None:
            return generator
        heads = [p for p in self.discriminator.parameters() if p.requires_grad]
        discriminator = torch.optim.AdamW(
            heads,
            lr=hp.discriminator_learning_rate,
            betas=(0.9, 0.999),
            eps=1e-8,
            weight_decay=hp.weight_decay,
        )
        return [generator, discriminator]
