"""OneDC: one-step diffusion-based image compression with semantic distillation (Xue et al., NeurIPS 2025).

::

    x ∈ [−1,1] ─► SD-2.1 VAE encoder (sampled latent ×0.18215) ─► cond (4, /8) ─┐
      └──────────► pix_emb (192, /8) ──────────────────────────────── concat ─► pix_fusion (320, /8)
                                                                               │
        enc: lightweight U-Net (down → mid = sem (768, /64); up → y_pre) → trans_coding
                                                                               │
      y (128, /16) ─► hyper_enc(y, sem) ─► z (7, /64) ─► FSQ [4]^7 ─► 14-bit indices ─► file
      │                                                          │
      │                               hyper_dec.feat_in ◄────────┘ z_semantic (128, /64)
      │                                  │          └─► semantic_adaptor ─► y_semantic (768, /64)
      │               to_entropy → y_prior_fusion → P               │      = tokens (h·w × 768)
      └─► 4-part quadtree Gaussian prior (P, ŷ_<k) ──► ŷ ─► file    │
                                                       │            │
                  control map c (320, /8) = dec(ŷ, y_semantic) ◄────┘
                        │
    x_t = vae_reduction(c);  ε = U-Net_DMD2+LoRA(c, t = 999, tokens);  x̂₀ = (x_t − √(1−ᾱ)·ε)/√ᾱ
    x̂ = SD-2.1 VAE decoder(x̂₀ / 0.18215)

Modules keep the official names (official onedc-codec/onedc @ c52af53), so the codec's state dict
is the official ``model_1.safetensors`` plus the (deterministic) entropy tables, and the generator's is
``model.safetensors`` under ``backbone.unet.*`` / ``vae_reduction.*``.

- **Analysis** (§2.2): an 8×8 patch embedding of the image concatenated with the VAE latent, a diffusers
  ``UNet2DModel`` whose ``conv_in`` is a ResnetBlock stack with a stride-2 convolution, run at the fixed
  timestep 999; its mid-block output is the *semantic feature* ``sem``.
- **Hyper-latent** (§2.4): z fuses y and ``sem`` and is quantised by FSQ (:class:`~diffcodec.entropy.
  fsq.FSQ`, 16384 codes, 14 bits per 64×64 block, fixed length — 0.0034 bpp).
- **Semantic distillation** (§2.6): the *semantic adaptor* turns ẑ into the cross-attention tokens that
  replace SD's text conditioning; training adds a code-prediction loss on them (:class:`CodePredictor`).
- **Prior** (§2.7): DCVC-DC's four-part quadtree, scale-first heads, through the shared
  :class:`~diffcodec.entropy.quadtree.QuadtreeContextModel` and DCVC's Gaussian tables
  (:class:`DCVCGaussianConditional`).
- **Generator** (§4): the DMD2 one-step SD-1.5 U-Net with LoRA (r 64, α 8), a fresh 320→320 ``conv_in`` and
  ``vae_reduction``; the SD-2.1 VAE decoder with windowed (16×16) mid-block attention (§5).

Deviations from the official code (each also noted where it happens):

- **Coder.** Symbols, scale indexes, CDF tables and symbol order are the official ones (goldens), but the
  bytes come from diffcodec's constriction range coder inside diffcodec's container, not DCVC's C++ rANS
  inside ``encode_i``'s 16-byte header (official code). Official ``.bin`` files are not read.
- **Precision.** Everything runs in float32 without autocast; the official inference runs the codec and
  U-Net under CUDA bf16 autocast with TF32 (official code). bf16 scale indices are not portable, fp32 on
  CPU is what the goldens were made with.
- **z-only mode** (official code) writes a real file (the packed z indices alone); the official script only
  reports the rate, and reflect-pads where the normal models replicate-pad. diffcodec replicate-pads both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel
from safetensors.torch import load_file
from torch import Tensor, nn

from diffcodec.bitstream import DecodeError
from diffcodec.codecs.base import BaseModelRef, CodecOutput, EncodedImage, has_single_channel_groups
from diffcodec.codecs.rungs import PerRateCodec, check_lambda_ladder
from diffcodec.entropy.determinism import cpu_replica, parameter_mode, to_parameter_device
from diffcodec.entropy.fsq import FSQ
from diffcodec.entropy.gaussian import GaussianConditional
from diffcodec.entropy.quadtree import QuadtreeContextModel, QuadtreeParameters
from diffcodec.entropy.tables import pmfs_to_quantized_cdfs
from diffcodec.entropy.vq import packed_size
from diffcodec.files import load_checkpoint_file
from diffcodec.nn.backbone import (
    BackboneSource,
    ExternalTokens,
    OneStepBackbone,
    load_component,
    reference_configs,
    small_backbone,
    tiny_configs,
)
from diffcodec.nn.base_weights import record_base_weights
from diffcodec.nn.blocks import (
    AttnBlock,
    DepthConvBlock4,
    ReduceResBlock,
    ResidualBlockUpsample,
    ResnetBlock,
)
from diffcodec.nn.lora import ONEDC_UNET_EXCLUDE, ONEDC_UNET_TARGETS
from diffcodec.zoo.hub import fetch

__all__ = [
    "DMD2_UNET_FILE",
    "FULL_LATENT_CODEC",
    "OFFICIAL_LAMBDAS",
    "OFFICIAL_RATES",
    "SMALL_LATENT_CODEC",
    "TINY_LATENT_CODEC",
    "AnalysisTransform",
    "DCVCGaussianConditional",
    "FourPartParameters",
    "HyperDecoder",
    "HyperEncoder",
    "OneDC",
    "OneDCLatentCodec",
    "SemanticAdaptor",
    "SynthesisTransform",
    "eval_bpp_estimate",
    "load_unet",
    "small_backbone_config",
    "train_bpp",
]

#: The timestep at which the analysis U-Net and the generator run (DMD2's conditioning timestep).
TIMESTEP = 999


# ---------------------------------------------------------------------------------------------- analysis
def encoder_unet_config(in_channels: int, out_channels: int, channels: Sequence[int]) -> dict[str, Any]:
    """The diffusers ``UNet2DModel`` config of the analysis U-Net (official ``codec_module.py``); defaults
    otherwise."""
    return {
        "in_channels": in_channels, "out_channels": out_channels, "block_out_channels": list(channels),
        "down_block_types": ["AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"], "layers_per_block": 2,
    }  # fmt: skip


class AnalysisTransform(nn.Module):
    """g_a (``enc``, official ``codec_module.py``): image + VAE latent → y (N, /16) and the semantic feature
    sem (S, /64).

    pix_emb = Conv8×8/8(3 → 192); pix_fusion = Conv1×1(192 + 4 → 320) on [pix_emb, latent] (pixels first);
    ``unet`` = diffusers ``UNet2DModel`` (blocks ``unet_channels``, attention at the first two levels) whose
    ``conv_in`` is [ResnetBlock(320 → C₀) (the in ≠ out quirk), ResnetBlock(C₀) ×2, Conv3×3/2(C₀ → C₀)];
    it runs at t = 999 and returns its mid-block output (sem) and its output (y_pre, ``internal`` channels);
    trans_coding = ResnetBlock, AttnBlock, ResnetBlock, DepthConvBlock4(·, ·), DepthConvBlock4(·, N) → y.
    """

    def __init__(
        self,
        cond_channels: int = 4,
        internal_channels: int = 512,
        bottleneck_channels: int = 128,
        unet_channels: Sequence[int] = (512, 768, 768),
        pixel_channels: int = 192,
        fusion_channels: int = 320,
    ) -> None:
        super().__init__()
        c0 = unet_channels[0]
        self.pix_emb = nn.Conv2d(3, pixel_channels, 8, stride=8)
        self.pix_fusion = nn.Conv2d(pixel_channels + cond_channels, fusion_channels, 1)
        self.unet = UNet2DModel.from_config(
            encoder_unet_config(fusion_channels, internal_channels, unet_channels)
        )
        # the official module replaces conv_in (a module swap; the forward below walks the blocks itself)
        self.unet.conv_in = nn.Sequential(
            ResnetBlock(fusion_channels, c0), ResnetBlock(c0), ResnetBlock(c0), nn.Conv2d(c0, c0, 3, 2, 1)
        )
        n = internal_channels
        self.trans_coding = nn.Sequential(
            ResnetBlock(n), AttnBlock(n), ResnetBlock(n), DepthConvBlock4(n, n),
            DepthConvBlock4(n, bottleneck_channels),
        )  # fmt: skip

    def run_unet(self, sample: Tensor) -> tuple[Tensor, Tensor]:
        """The official ``forward_enc``: diffusers' ``UNet2DModel.forward`` at t = 999, also returning the
        mid-block output. Returns ``(y_pre, sem)``."""
        unet = self.unet
        steps = torch.full((sample.shape[0],), TIMESTEP, dtype=torch.long, device=sample.device)
        emb = unet.time_embedding(unet.time_proj(steps).to(dtype=sample.dtype))
        sample = unet.conv_in(sample)
        skips: tuple[Tensor, ...] = (sample,)
        for block in unet.down_blocks:
            sample, residuals = block(hidden_states=sample, temb=emb)
            skips += residuals
        sem = unet.mid_block(sample, emb)
        sample = sem
        for block in unet.up_blocks:
            count = len(block.resnets)
            sample, skips = block(sample, skips[-count:], emb), skips[:-count]
        return unet.conv_out(unet.conv_act(unet.conv_norm_out(sample))), sem

    def forward(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """``(y, sem)`` of the padded image x ∈ [−1, 1] and its scaled VAE latent ``cond``."""
        fused = self.pix_fusion(torch.cat((self.pix_emb(x), cond), dim=1))
        y_pre, sem = self.run_unet(fused)
        return self.trans_coding(y_pre), sem


class HyperEncoder(nn.Module):
    """h_a (``hyper_enc``, official ``codec_module.py``): (y, sem) → z (d, /64).

    y_trans_coding = DepthConvBlock4(N) → Conv3×3/2 → DepthConvBlock4(N) → Conv3×3/2 (/16 → /64); fusion on
    [y-branch, sem] = DepthConvBlock4(N + S → S) → AttnBlock(S) → DepthConvBlock4(S → C) → AttnBlock(C) →
    DepthConvBlock4(C) → Conv1×1(C → d), with C the internal width and d = len(FSQ levels).
    """

    def __init__(
        self, bottleneck_channels: int = 128, semantic_channels: int = 768, internal_channels: int = 512,
        z_channels: int = 7,
    ) -> None:  # fmt: skip
        super().__init__()
        n, s, c = bottleneck_channels, semantic_channels, internal_channels
        self.y_trans_coding = nn.Sequential(
            DepthConvBlock4(n, n), nn.Conv2d(n, n, 3, 2, 1), DepthConvBlock4(n, n), nn.Conv2d(n, n, 3, 2, 1)
        )
        self.fusion = nn.Sequential(
            DepthConvBlock4(n + s, s), AttnBlock(s), DepthConvBlock4(s, c), AttnBlock(c),
            DepthConvBlock4(c, c), nn.Conv2d(c, z_channels, 1),
        )  # fmt: skip

    def forward(self, y: Tensor, sem: Tensor) -> Tensor:
        return self.fusion(torch.cat((self.y_trans_coding(y), sem), dim=1))


class HyperDecoder(nn.Module):
    """h_s (``hyper_dec``, official ``codec_module.py``): FSQ codes → (z_semantic (N, /64), entropy feature
    (N, /16)).

    feat_in = Conv1×1(d → N) → LeakyReLU(0.01); to_entropy = DepthConvBlock4, ResidualBlockUpsample ×2,
    DepthConvBlock4, ResidualBlockUpsample ×2, DepthConvBlock4 (all N wide).
    """

    def __init__(self, bottleneck_channels: int = 128, z_channels: int = 7) -> None:
        super().__init__()
        n = bottleneck_channels
        self.feat_in = nn.Sequential(nn.Conv2d(z_channels, n, 1), nn.LeakyReLU(0.01))
        self.to_entropy = nn.Sequential(
            DepthConvBlock4(n, n), ResidualBlockUpsample(n, n), DepthConvBlock4(n, n),
            ResidualBlockUpsample(n, n), DepthConvBlock4(n, n),
        )  # fmt: skip

    def forward(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        z_semantic = self.feat_in(z_hat)
        return z_semantic, self.to_entropy(z_semantic)


class SemanticAdaptor(nn.Module):
    """``semantic_adaptor.to_semantic`` (official ``codec_module.py``): z_semantic (N, /64) → y_semantic (S,
    /64).

    DepthConvBlock4(N → S), ResnetBlock, AttnBlock ×2, ResnetBlock, AttnBlock ×2, DepthConvBlock4(S).
    :meth:`tokens` reshapes y_semantic to the (B, h·w, S) cross-attention tokens, row-major over (h, w).
    """

    def __init__(self, bottleneck_channels: int = 128, semantic_channels: int = 768) -> None:
        super().__init__()
        s = semantic_channels
        self.to_semantic = nn.Sequential(
            DepthConvBlock4(bottleneck_channels, s), ResnetBlock(s), AttnBlock(s), AttnBlock(s),
            ResnetBlock(s), AttnBlock(s), AttnBlock(s), DepthConvBlock4(s, s),
        )  # fmt: skip

    def forward(self, z_semantic: Tensor) -> Tensor:
        return self.to_semantic(z_semantic)

    @staticmethod
    def tokens(y_semantic: Tensor) -> Tensor:
        """(B, S, h, w) → (B, h·w, S): one token per 64×64 block, row-major (they replace the text tokens)."""
        return y_semantic.flatten(2).transpose(1, 2)


class SynthesisTransform(nn.Module):
    """g_s (``dec``, official ``codec_module.py``): (ŷ (N, /16), y_semantic (S, /64)) → control map c (ctrl,
    /8).

    trans_coding = DepthConvBlock4(N → C), DepthConvBlock4(C); blocks = ResnetBlock(C) ×3, Conv1×1(C → 4C),
    PixelShuffle(2), Conv3×3(C → C/2), ResnetBlock(C/2) ×3; sem_up = ResidualBlockUpsample(S → C),
    DepthConvBlock4(C), ResidualBlockUpsample(C → C/2), DepthConvBlock4(C/2), ResidualBlockUpsample(C/2);
    conv_out = DepthConvBlock4(C → ctrl) on [y-branch, semantic branch].
    """

    def __init__(
        self, bottleneck_channels: int = 128, semantic_channels: int = 768, internal_channels: int = 512,
        ctrl_channels: int = 320,
    ) -> None:  # fmt: skip
        super().__init__()
        c, half = internal_channels, internal_channels // 2
        self.trans_coding = nn.Sequential(DepthConvBlock4(bottleneck_channels, c), DepthConvBlock4(c, c))
        self.blocks = nn.Sequential(
            ResnetBlock(c), ResnetBlock(c), ResnetBlock(c),
            nn.Conv2d(c, 4 * c, 1), nn.PixelShuffle(2), nn.Conv2d(c, half, 3, padding=1),  # get_upsample
            ResnetBlock(half), ResnetBlock(half), ResnetBlock(half),
        )  # fmt: skip
        self.sem_up = nn.Sequential(
            ResidualBlockUpsample(semantic_channels, c), DepthConvBlock4(c, c),
            ResidualBlockUpsample(c, half), DepthConvBlock4(half, half), ResidualBlockUpsample(half, half),
        )  # fmt: skip
        self.conv_out = DepthConvBlock4(c, ctrl_channels)

    def forward(self, y_hat: Tensor, y_semantic: Tensor) -> Tensor:
        y_branch = self.blocks(self.trans_coding(y_hat))
        return self.conv_out(torch.cat((y_branch, self.sem_up(y_semantic)), dim=1))


# ---------------------------------------------------------------------------------------------- entropy model
class DCVCGaussianConditional(GaussianConditional):
    """DCVC's ``GaussianEncoder`` (official ``entropy_models.py``): the same Gaussian, DCVC's scale table,
    indexes and CDFs.

    - scale table: 256 log-spaced scales from 0.11 to 64;
    - index of a scale σ: ⌊clamp((ln max(σ, 1e-5) − ln 0.11)/Δ, 0, 255)⌋, Δ = (ln 64 − ln 0.11)/255, in σ's
      dtype (a floor on a log grid, where CompressAI counts table entries below σ);
    - table i: centre c = the smallest c ∈ {2, …, 50} with Φ(c/σ_i) > 0.9999 (else 50), symbols −c…c,
      pmf(v) = Φ((v + ½)/σ_i) − Φ((v − ½)/σ_i) with ``torch.distributions.Normal``, tail 2Φ((−c − ½)/σ_i),
      quantised to 16 bits by the CompressAI routine (:func:`~diffcodec.entropy.tables.
      pmf_to_quantized_cdf`).

    Likelihoods (training) are CompressAI's with the 0.11 lower bound on σ and 1e-9 on the likelihood, which
    is the official rate term (official ``train_sd15_codec_stage1.py``).
    """

    def __init__(self, scale_min: float = 0.11, scale_max: float = 64.0, levels: int = 256) -> None:
        # The official code takes a float32 exp of the float32 grid, which differs by one ulp between CPUs
        # (vectorised exp): measured here, 2 of the 256 entries differ from the official golden table. The
        # float64 exp rounded to float32 is the correctly rounded value on every machine; the CDF tables and
        # the scale indexes it gives equal the official ones (tests/test_onedc_golden.py). On the CPU even
        # under a meta/cuda default device.
        grid = torch.linspace(math.log(scale_min), math.log(scale_max), levels, device="cpu")
        table = torch.exp(grid.double()).float()
        super().__init__(table, scale_bound=scale_min)
        self.log_scale_min = math.log(scale_min)
        self.log_scale_step = (math.log(scale_max) - math.log(scale_min)) / (levels - 1)
        self.levels = levels

    @torch.no_grad()
    def update(self, force: bool = False) -> bool:
        """Build DCVC's integer CDF tables (see the class docstring); returns whether it did."""
        if self.is_updated and not force:
            return False
        table = self.scale_table.detach().cpu().float()
        normal = torch.distributions.Normal(torch.zeros_like(table), table)
        center = torch.full_like(table, 50.0)
        for c in range(50, 1, -1):
            center = torch.where(normal.cdf(torch.full_like(table, float(c))) > 0.9999, float(c), center)
        center = center.int()
        length = 2 * center + 1
        max_length = int(length.max())
        samples = (torch.arange(max_length) - center[:, None]).float()
        normal = torch.distributions.Normal(torch.zeros_like(samples), table[:, None].expand_as(samples))
        lower = normal.cdf(samples - 0.5)
        pmf = normal.cdf(samples + 0.5) - lower
        cdf = pmfs_to_quantized_cdfs(pmf, 2 * lower[:, :1], length, max_length, self.entropy_coder_precision)
        self._set_tables(cdf, length + 2, -center)
        return True

    def build_indexes(self, scales: Tensor) -> Tensor:
        """DCVC's table index of every scale (int32, see the class docstring)."""
        if torch.isnan(scales).any():
            raise ValueError("scales contain NaN")
        with torch.no_grad():
            scales = torch.maximum(scales, torch.zeros_like(scales) + 1e-5)
            indexes = (torch.log(scales) - self.log_scale_min) / self.log_scale_step
            return indexes.clamp_(0, self.levels - 1).to(torch.int32)


class FourPartParameters(QuadtreeParameters):
    """OneDC's quadtree heads (official ``codec_module.py``) for one image, bound to its common parameters P.

    Step 0: (σ₀, μ₀) = split(P). Step k ≥ 1: (σ_k, μ_k) = split(y_spatial_prior(adaptor_k([ŷ_<k, P']))),
    with P' = ``params`` (the quadtree model's params: y_spatial_prior_reduction(P)), ŷ_<k first. Scales
    come first and are used raw (no activation). Built per call by :meth:`OneDCLatentCodec.context_model`
    from the codec's (official-name) modules; it owns no weights.
    """

    def __init__(self, common: Tensor, adaptors: Sequence[nn.Module], spatial_prior: nn.Module) -> None:
        super().__init__()
        self.adaptors = nn.ModuleList(adaptors)
        self.spatial_prior = spatial_prior
        self.common = common

    def forward(self, step: int, params: Tensor, context: Tensor, y_hat: Tensor) -> tuple[Tensor, Tensor]:
        out = (
            self.common
            if step == 0
            else self.spatial_prior(self.adaptors[step - 1](torch.cat((y_hat, params), 1)))
        )
        scales, means = out.chunk(2, dim=1)
        return means, scales


# ---------------------------------------------------------------------------------------------- latent codec
#: The released configuration (``IntraNoAR(cond_ch=4, ctrl_ch=320, internal_ch=512, bottleneck_ch=128,
#: unet_ch_config=[512, 768, 768],
#: z_fsq_levels=[4]*7)``, official ``codec_module.py``): 394,147,783 parameters.
FULL_LATENT_CODEC: dict[str, Any] = {
    "cond_channels": 4, "ctrl_channels": 320, "internal_channels": 512, "bottleneck_channels": 128,
    "unet_channels": [512, 768, 768], "z_levels": [4] * 7, "pixel_channels": 192, "fusion_channels": 320,
}  # fmt: skip
#: The small configuration of the golden ``intranoar_small_e2e`` (6.75 M parameters): tests, CPU runs.
SMALL_LATENT_CODEC: dict[str, Any] = {
    **FULL_LATENT_CODEC, "ctrl_channels": 32, "internal_channels": 64, "bottleneck_channels": 32,
    "unet_channels": [64, 96, 96],
}  # fmt: skip
#: A still smaller configuration of the same classes (1.7 M parameters) for fast tests and CPU recipes.
TINY_LATENT_CODEC: dict[str, Any] = {
    **SMALL_LATENT_CODEC, "bottleneck_channels": 16, "unet_channels": [32, 32, 32], "pixel_channels": 16,
    "fusion_channels": 32,
}  # fmt: skip


class OneDCLatentCodec(nn.Module):
    """The official ``IntraNoAR`` (official ``codec_module.py``): analysis, FSQ hyper-latent, prior, semantic
    adaptor, synthesis.

    Args (official names in brackets): cond_channels [cond_ch], ctrl_channels [ctrl_ch], internal_channels
    [internal_ch], bottleneck_channels [bottleneck_ch] = N, unet_channels [unet_ch_config] (its last entry
    is the semantic width S), z_levels [z_fsq_levels]; pixel_channels / fusion_channels are fixed at 192 /
    320 in the official code (kept as arguments for smaller models).

    State-dict keys are those of ``model_1.safetensors`` plus ``gaussian_conditional.*`` (the scale table
    and CDF buffers, CompressAI-style); :meth:`load_official_state_dict` loads an official one.

    Entry points (all on the padded image x ∈ [−1, 1] and its scaled VAE latent ``cond``):

    - :meth:`forward` — training path (straight-through FSQ and y rounding, noisy likelihoods in training);
    - :meth:`compress` → ``{"y_string", "z_string", "y_hat", ...}``; :meth:`decompress` → ``{"ctrl", ...}``;
    - ``z_only=True`` on any of them: no y is coded, ŷ = Σ_k μ_k ⊙ M_k (the "exlow" model, official code).
    """

    #: the hyper-latent grid's stride in image pixels, and the latent's
    downsample = 64
    y_stride = 16

    def __init__(
        self,
        cond_channels: int = 4,
        ctrl_channels: int = 320,
        internal_channels: int = 512,
        bottleneck_channels: int = 128,
        unet_channels: Sequence[int] = (512, 768, 768),
        z_levels: Sequence[int] = (4,) * 7,
        pixel_channels: int = 192,
        fusion_channels: int = 320,
    ) -> None:
        super().__init__()
        if len(unet_channels) != 3:
            raise ValueError(
                f"unet_channels must have 3 entries (the /16, /32, /64 levels), got {unet_channels}"
            )
        n, c, s = bottleneck_channels, internal_channels, unet_channels[-1]
        if n % 4:
            raise ValueError(f"the four-part prior splits y into 4 channel groups; N = {n} is not divisible")
        self.cond_channels, self.ctrl_channels = cond_channels, ctrl_channels
        self.bottleneck_channels, self.semantic_channels = n, s
        self.z_vq = FSQ(z_levels)
        d = self.z_vq.dim
        self.enc = AnalysisTransform(cond_channels, c, n, unet_channels, pixel_channels, fusion_channels)
        self.hyper_enc = HyperEncoder(n, s, c, d)
        self.hyper_dec = HyperDecoder(n, d)
        self.semantic_adaptor = SemanticAdaptor(n, s)
        self.dec = SynthesisTransform(n, s, c, ctrl_channels)
        self.y_prior_fusion = nn.Sequential(DepthConvBlock4(n, 2 * n), DepthConvBlock4(2 * n, 2 * n))
        self.y_spatial_prior_reduction = nn.Conv2d(2 * n, n, 1)
        self.y_spatial_prior_adaptor_1 = DepthConvBlock4(2 * n, 2 * n)
        self.y_spatial_prior_adaptor_2 = DepthConvBlock4(2 * n, 2 * n)
        self.y_spatial_prior_adaptor_3 = DepthConvBlock4(2 * n, 2 * n)
        self.y_spatial_prior = nn.Sequential(*(DepthConvBlock4(2 * n, 2 * n) for _ in range(3)))
        self.gaussian_conditional = DCVCGaussianConditional()

    # ------------------------------------------------------------------ pieces
    def context_model(self, common: Tensor) -> tuple[QuadtreeContextModel, Tensor]:
        """The shared quadtree model with OneDC's heads bound to P = ``common``, and its params P'."""
        adaptors = (
            self.y_spatial_prior_adaptor_1,
            self.y_spatial_prior_adaptor_2,
            self.y_spatial_prior_adaptor_3,
        )
        heads = FourPartParameters(common, adaptors, self.y_spatial_prior)
        model = QuadtreeContextModel(heads, gaussian_conditional=self.gaussian_conditional)
        return model, self.y_spatial_prior_reduction(common)

    def hyper_decode(self, z_hat: Tensor) -> tuple[Tensor, Tensor]:
        """(z_semantic, common entropy parameters P) from the FSQ codes."""
        z_semantic, feature = self.hyper_dec(z_hat)
        return z_semantic, self.y_prior_fusion(feature)

    def mean_only(self, common: Tensor) -> Tensor:
        """ŷ of the z-only model: the four-step prior with every symbol 0, ŷ = Σ_k μ_k ⊙ M_k (official
        code)."""
        model, params = self.context_model(common)
        # QuadtreeContextModel._run is its one loop with a pluggable step quantiser (see its docstring)
        return model._run(params, lambda step, mask, means, scales: means * mask)

    def synthesize(self, y_hat: Tensor, z_semantic: Tensor) -> tuple[Tensor, Tensor]:
        """(control map c, y_semantic) from ŷ and z_semantic."""
        y_semantic = self.semantic_adaptor(z_semantic)
        return self.dec(y_hat, y_semantic), y_semantic

    def _analyse(self, x: Tensor, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(y, z codes, z indices)."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % self.downsample or x.shape[-1] % self.downsample:
            raise ValueError(
                f"x must be (B, 3, H, W) with H and W multiples of {self.downsample}, got {tuple(x.shape)}"
            )
        expected = (x.shape[0], self.cond_channels, x.shape[-2] // 8, x.shape[-1] // 8)
        if tuple(cond.shape) != expected:
            raise ValueError(f"cond must be {expected} (the scaled VAE latent of x), got {tuple(cond.shape)}")
        y, sem = self.enc(x, cond)
        z_hat, indices = self.z_vq(self.hyper_enc(y, sem))
        return y, z_hat, indices

    # ------------------------------------------------------------------ training path
    def forward(self, x: Tensor, cond: Tensor, z_only: bool = False) -> dict[str, Any]:
        """Differentiable pass: ``y``, ``z_hat``, ``z_indices``, ``y_hat``, ``means``, ``scales``,
        ``likelihoods`` ({"y"}, absent with ``z_only``), ``y_semantic``, ``tokens`` and ``ctrl``."""
        y, z_hat, indices = self._analyse(x, cond)
        z_semantic, common = self.hyper_decode(z_hat)
        out: dict[str, Any] = {"y": y, "z_hat": z_hat, "z_indices": indices, "common": common}
        if z_only:
            out["y_hat"] = self.mean_only(common)
        else:
            model, params = self.context_model(common)
            out.update(model(y, params))
        out["ctrl"], out["y_semantic"] = self.synthesize(out["y_hat"], z_semantic)
        out["tokens"] = SemanticAdaptor.tokens(out["y_semantic"])
        return out

    # ------------------------------------------------------------------ real coding
    def _coding_parameters(self, indices: Tensor) -> tuple[Tensor, QuadtreeContextModel, Tensor]:
        """(z_semantic, quadtree model, its params P') from the FSQ indices of one image, on the parameter
        path (CPU float32 replicas, one thread: :mod:`~diffcodec.entropy.determinism`), so that the
        encoder and any decoder derive the same CDF indexes. The model's heads are CPU replicas too."""
        with parameter_mode():
            hyper_dec = cpu_replica(self.hyper_dec)
            z_hat = cpu_replica(self.z_vq).indices_to_codes(to_parameter_device(indices, hyper_dec)).float()
            z_semantic, feature = hyper_dec(z_hat)
            common = cpu_replica(self.y_prior_fusion)(feature)
            adaptors = [
                cpu_replica(module)
                for module in (self.y_spatial_prior_adaptor_1, self.y_spatial_prior_adaptor_2,
                               self.y_spatial_prior_adaptor_3)
            ]  # fmt: skip
            heads = FourPartParameters(common, adaptors, cpu_replica(self.y_spatial_prior))
            model = QuadtreeContextModel(heads, gaussian_conditional=cpu_replica(self.gaussian_conditional))
            params = cpu_replica(self.y_spatial_prior_reduction)(common)
        return z_semantic, model, params

    @staticmethod
    def _mean_only_on_parameter_path(model: QuadtreeContextModel, params: Tensor) -> Tensor:
        """:meth:`mean_only` with the CPU model of :meth:`_coding_parameters`."""
        with parameter_mode():
            return model._run(params, lambda step, mask, means, scales: means * mask)

    def update(self, force: bool = False) -> bool:
        """Build the Gaussian's integer CDF tables (deterministic; cheap)."""
        return self.gaussian_conditional.update(force=force)

    def compress(self, x: Tensor, cond: Tensor, z_only: bool = False) -> dict[str, Any]:
        """One image: ``z_string`` (packed 14-bit indices), ``y_string`` (None with ``z_only``), ``y_hat``."""
        if x.shape[0] != 1:
            raise ValueError(f"compress codes one image at a time, got a batch of {x.shape[0]}")
        y, _, indices = self._analyse(x, cond)
        # the decoder rebuilds the codes from the indices: condition on exactly those
        _, model, params = self._coding_parameters(indices)
        z_string, grid = self.z_vq.pack(indices[0]), tuple(indices.shape[-2:])
        if z_only:
            y_hat = self._mean_only_on_parameter_path(model, params).to(y.device)
            return {"strings": [[z_string]], "shape": grid, "z_string": z_string, "y_string": None,
                    "y_hat": y_hat}  # fmt: skip
        out = model.compress(y, params)
        y_string = out["strings"][0][0]
        return {
            "strings": [[z_string], [y_string]],
            "shape": grid,
            "z_string": z_string,
            "y_string": y_string,
            "y_hat": out["y_hat"],
        }

    def decompress(self, strings: Sequence[Sequence[bytes]], shape: tuple[int, int]) -> dict[str, Tensor]:
        """``ctrl``, ``y_semantic``, ``tokens`` and ``y_hat`` from :meth:`compress`'s ``strings``
        (``[[z]]`` for a z-only file, else ``[[z], [y]]``) and ``shape`` (the z grid, padded size / 64)."""
        if len(strings) not in (1, 2) or any(len(s) != 1 for s in strings):
            raise ValueError(f"expected [[z]] or [[z], [y]] (one image), got {len(strings)} lists")
        z_string, y_string = strings[0][0], (strings[1][0] if len(strings) == 2 else None)
        grid = tuple(shape)
        indices = self.z_vq.unpack(z_string, (1, *grid))
        device = self.y_spatial_prior_reduction.weight.device
        z_semantic, model, params = self._coding_parameters(indices)
        if y_string is None:
            y_hat = self._mean_only_on_parameter_path(model, params)
        else:
            y_hat = model.decompress([[y_string]], params.shape[-2:], params)["y_hat"]
        y_hat, z_semantic = y_hat.to(device), z_semantic.to(device)
        ctrl, y_semantic = self.synthesize(y_hat, z_semantic)
        return {
            "ctrl": ctrl,
            "y_semantic": y_semantic,
            "tokens": SemanticAdaptor.tokens(y_semantic),
            "y_hat": y_hat,
        }

    # ------------------------------------------------------------------ official checkpoints
    def load_official_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load an official ``IntraNoAR`` state dict (``model_1.safetensors``) strictly; the entropy tables,
        which the official file does not hold, keep their values. Tensors are cast to float32."""
        own = {k: v for k, v in self.state_dict().items() if k.startswith("gaussian_conditional.")}
        clash = sorted(k for k in state_dict if k in own)
        if clash:
            raise ValueError(f"an official IntraNoAR state dict has no entropy buffers, found {clash[:3]}")
        self.load_state_dict({**{k: v.float() for k, v in state_dict.items()}, **own}, strict=True)

    def official_state_dict(self) -> dict[str, Tensor]:
        """The state dict under the official keys alone (what ``model_1.safetensors`` holds)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("gaussian_conditional.")}


def eval_bpp_estimate(symbols: Tensor, scales: Tensor, num_pixels: int) -> Tensor:
    """The official eval-mode rate estimate (official ``train_sd15_codec_stage1.py``) per batch item: Σ
    clamp(−log₂(P(q) + 1e-5), 0, 50)
    / H·W, with P(q) the N(0, max(σ̂, 1e-5)) mass of [q − ½, q + ½] at the hard symbols q."""
    sigma = scales.clamp(1e-5, 1e10)
    normal = torch.distributions.Normal(torch.zeros_like(sigma), sigma)
    probs = normal.cdf(symbols + 0.5) - normal.cdf(symbols - 0.5)
    bits = torch.clamp(-torch.log(probs + 1e-5) / math.log(2.0), 0, 50)
    return bits.flatten(1).sum(dim=1) / num_pixels


def train_bpp(likelihoods: Tensor, num_pixels: int) -> Tensor:
    """The official training rate (official ``train_sd15_codec_stage1.py``) per batch item: Σ max(−log₂(p +
    1e-5), 0) / H·W."""
    return (-torch.log2(likelihoods + 1e-5)).clamp_min(0).flatten(1).sum(dim=1) / num_pixels


# ---------------------------------------------------------------------------------------------- the codec
DMD2_REPO = "tianweiy/DMD2"
#: The DMD2 SD-1.5 one-step generator OneDC starts from (official ``decoder_unet.py``): a plain U-Net state
#: dict.
DMD2_UNET_FILE = (
    "model/sdv1.5/laion6.25_sd_baseline_8node_guidance1.75_lr5e-7_seed10_dfake10_diffusion1000_gan1e-3_"
    "resume_fid8.35_checkpoint_model_041000/pytorch_model.bin"
)
SD21_REPO = (
    "stabilityai/stable-diffusion-2-1"  # the VAE (official code: the code uses 2.1, the appendix says 1.5)
)
SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # stage-2 teachers (formerly runwayml/…)
BASE_LICENCE = "cc-by-nc-sa-4.0 (DMD2 U-Net); creativeml-openrail-m (SD-1.5); openrail++ (SD-2.1 VAE)"
#: λ of the seven official models in ascending *rate* order, and their Kodak rates (appendix Table C); the
#: z-only "exlow" model (0.0034 bpp) comes first when present.
OFFICIAL_LAMBDAS: tuple[float, ...] = (12.2, 7.4, 4.6, 2.9, 1.8, 1.0, 0.6)
OFFICIAL_RATES: tuple[float, ...] = (0.0101, 0.0165, 0.0245, 0.0354, 0.0506, 0.0775, 0.1115)
EXLOW_RATE = 0.0034
_ADAPTER = "default"  # the official adapter name: keys ….lora_A.default.weight


def small_backbone_config(semantic_channels: int = 96) -> dict[str, dict[str, Any]]:
    """A tiny random-init SD-1.5-like backbone (ε-prediction, cross-attention width = the semantic width)."""
    return tiny_configs(cross_attention_dim=semantic_channels, prediction_type="epsilon")


def load_unet(
    source: str, revision: str | None = None, filename: str = DMD2_UNET_FILE
) -> UNet2DConditionModel:
    """An SD-1.5-architecture U-Net from a diffusers folder (``unet/`` or the folder itself), a state-dict
    file (``.bin`` / ``.safetensors``), or a hub repo holding ``filename`` (DMD2 ships a plain state dict)."""
    path = Path(source).expanduser()
    if path.is_dir() and ((path / "config.json").is_file() or (path / "unet" / "config.json").is_file()):
        subfolder = "unet" if (path / "unet" / "config.json").is_file() else ""
        return load_component(UNet2DConditionModel.from_pretrained, str(path), subfolder)
    file = path if path.is_file() else fetch(source, filename, revision=revision)
    unet = UNet2DConditionModel.from_config(reference_configs("sd-1.5")["unet_config"])
    state = load_file(str(file)) if str(file).endswith(".safetensors") else load_checkpoint_file(file)
    unet.load_state_dict(state, strict=True)
    return record_base_weights(unet)


class OneDC(PerRateCodec):
    """OneDC (see the module docstring): the latent codec + the DMD2 one-step SD-1.5 generator.

    One rung per released model: per-λ models (official code) and optionally the z-only "exlow" model. All
    rungs
    share the frozen U-Net and VAE; each has its own latent codec, LoRA, ``conv_in`` and ``vae_reduction``,
    which :meth:`_activate_rung` swaps in (inactive rungs wait on the CPU; a checkpoint stores the active
    rung under the module keys and the others under ``rungs.{r}.…``).

    Args:
        name: model identifier (its 8-bit tag is written into every file).
        lambdas: λ of each rung, in ascending *rate* order (the z-only rung's λ is only a label).
        rates: nominal bpp of each rung (ascending); default: placeholders 0.01·(r + 1).
        z_only: per rung, whether it is a z-only model (no y stream; official code); default all False.
        latent_codec: :class:`OneDCLatentCodec` arguments (default :data:`FULL_LATENT_CODEC`;
            :data:`SMALL_LATENT_CODEC` for tests). Its last U-Net width must equal the cross-attention width.
        backbone: configs of a random-init backbone (see :func:`small_backbone_config`) when no base is given.
        base_unet, base_unet_revision, base_unet_file: the DMD2 U-Net — a hub repo (the file inside it), a
            state-dict file or a diffusers folder. base_vae, base_vae_revision: the SD-2.1 VAE (repo/folder
            with ``vae/``). Both or neither.
        lora_rank, lora_alpha: the U-Net adapter (64, 8: scaling 0.125; official ``decoder_unet.py``).
        vae_attention_window: windowed VAE mid-block attention (16; None = global).
        sample_latent: sample the VAE posterior (official; seeded with 0 per image when coding) or its mean.

    Training (stage 1: codec + LoRA; stage 2: DMD2 distillation, codec frozen):
    :class:`~diffcodec.codecs.onedc.training.OneDCTraining`.
    """

    method = "onedc"
    pad_multiple = 64
    pad_mode = "replicate"
    paper = "One-Step Diffusion-Based Image Compression with Semantic Distillation (Xue et al., NeurIPS 2025)"
    paper_url = "https://arxiv.org/abs/2505.16687"
    licence = "cc-by-nc-sa-4.0"
    #: training settings this constructor took before training moved to :mod:`.training` (dropped on load)
    retired_args = frozenset(
        [
            "code_mse_weight",
            "code_predictor",
            "code_weight",
            "dm_weight",
            "gan_weight",
            "generator_update_every",
            "gradient_clip",
            "guidance_gan_weight",
            "guidance_learning_rate",
            "l1_weight",
            "learning_rate",
            "lpips_weight",
            "rate_warmup_start",
            "rate_warmup_steps",
            "real_guidance_scale",
            "recon_weight",
            "stage",
            "teacher_model",
            "teacher_prompt",
            "teacher_revision",
            "tokenizer",
            "weight_decay",
        ]
    )

    def __init__(
        self,
        *,
        name: str = "onedc",
        lambdas: Sequence[float] = (4.6,),
        rates: Sequence[float] | None = None,
        z_only: Sequence[bool] | None = None,
        latent_codec: Mapping[str, Any] | None = None,
        backbone: BackboneSource = None,
        base_unet: str | None = None,
        base_unet_revision: str | None = None,
        base_unet_file: str = DMD2_UNET_FILE,
        base_vae: str | None = None,
        base_vae_revision: str | None = None,
        lora_rank: int = 64,
        lora_alpha: float = 8.0,
        vae_attention_window: int | None = 16,
        sample_latent: bool = True,
    ) -> None:
        super().__init__()
        lambdas, rates = check_lambda_ladder(lambdas, rates)
        z_only = tuple(bool(v) for v in z_only) if z_only is not None else (False,) * len(lambdas)
        if len(z_only) != len(lambdas):
            raise ValueError(f"z_only needs one flag per rung ({len(lambdas)}), got {len(z_only)}")
        if (base_unet is None) != (base_vae is None):
            raise ValueError("pass both base_unet (the DMD2 U-Net) and base_vae (the SD-2.1 VAE), or neither")
        self._name, self._rates, self.lambdas, self.z_only = name, rates, lambdas, z_only

        codec_args = {**FULL_LATENT_CODEC, **dict(latent_codec or {})}
        self.latent_codec = OneDCLatentCodec(**codec_args)
        ctrl, semantic = self.latent_codec.ctrl_channels, self.latent_codec.semantic_channels
        # the U-Net never tiles (official); the VAE only where a pass would not fit (tile="auto")
        options = {
            "conditioning": ExternalTokens(semantic), "conv_in_channels": ctrl, "timestep": TIMESTEP,
            "latent_tiling": None, "vae_attention_window": vae_attention_window,
        }  # fmt: skip
        scheduler = reference_configs("sd-1.5")["scheduler_config"]
        if base_unet is not None:
            unet = load_unet(base_unet, base_unet_revision, base_unet_file)
            vae = load_component(AutoencoderKL.from_pretrained, base_vae, "vae", revision=base_vae_revision)
            self.backbone = OneStepBackbone(vae, unet, scheduler, **options)
        else:
            self.backbone = small_backbone(
                backbone, {**small_backbone_config(semantic), "scheduler_config": scheduler}, **options
            )
        if self.backbone.cross_attention_dim != semantic:
            raise ValueError(
                f"the U-Net's cross-attention width ({self.backbone.cross_attention_dim}) must equal the "
                f"semantic width ({semantic}, the last entry of latent_codec's unet_channels)"
            )
        self.backbone.add_lora(
            _ADAPTER, ONEDC_UNET_TARGETS, rank=lora_rank, alpha=lora_alpha, init=True,
            exclude_modules=ONEDC_UNET_EXCLUDE,
        )  # fmt: skip
        self.vae_reduction = ReduceResBlock(ctrl, self.backbone.latent_channels)
        self._init_rung_bank()

    # ------------------------------------------------------------------ contract
    def base_model_ref(self) -> BaseModelRef | None:
        base = self.hparams.get("base_unet")
        return (
            None if base is None else BaseModelRef(base, self.hparams.get("base_unet_revision"), BASE_LICENCE)
        )

    # ------------------------------------------------------------------ per-rung weights
    def is_rung_key(self, key: str) -> bool:
        """Whether state-dict entry ``key`` is one rung's own weight (latent codec, LoRA, conv_in,
        vae_reduction)."""
        if key.startswith(("latent_codec.", "vae_reduction.")):
            return True
        return key.startswith("backbone.") and not self.backbone.is_base_key(key[len("backbone.") :])

    # ------------------------------------------------------------------ the pipeline
    def encode_latent(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The scaled SD-2.1 VAE latent (the codec's ``cond``) of x ∈ [0, 1]: a posterior sample (official)
        or its mean (``sample_latent=False``). The VAE is frozen: no gradient."""
        with torch.no_grad():
            return self.backbone.encode(x * 2 - 1, sample=self.hparams.sample_latent, generator=generator)

    def generate(self, ctrl: Tensor, tokens: Tensor) -> Tensor:
        """Generator (official code): x_t = vae_reduction(c), ε = U-Net(c, 999, tokens), x̂₀ (float64) as
        float32."""
        x_t = self.vae_reduction(ctrl)
        return self.backbone.denoise(ctrl, noisy=x_t.double(), encoder_hidden_states=tokens).float()

    def render(self, x0: Tensor, clamp: bool = True) -> Tensor:
        """SD-2.1 VAE decoder (windowed mid attention) of x̂₀, mapped to [0, 1]."""
        return self.backbone.decode(x0, clamp=clamp).add(1).div(2)

    def forward(self, x: Tensor) -> CodecOutput:
        """Training path on x (B, 3, H, W) ∈ [0, 1], H and W multiples of 64, at the active rung.

        ``likelihoods["y"]`` (absent for a z-only rung) and ``rate_bits["z"]`` (14 bits per 64×64 block);
        ``x_hat`` is *not* clamped (so that losses keep their gradient).
        """
        self.check_training_input(x)
        cond = self.encode_latent(x)
        out = self.latent_codec(x * 2 - 1, cond, z_only=self.z_only[self.quality])
        x0 = self.generate(out["ctrl"], out["tokens"])
        z_bits = float(self.latent_codec.z_vq.index_bits * out["z_indices"][0].numel())
        return CodecOutput(
            x_hat=self.render(x0, clamp=False),
            likelihoods={"y": out["likelihoods"]["y"]} if "likelihoods" in out else {},
            rate_bits={"z": x.new_full((x.shape[0],), z_bits)},
            aux={**out, "cond": cond, "x0": x0},
        )

    # ------------------------------------------------------------------ real coding
    def _prepare_for_coding(self) -> None:
        self.latent_codec.update(force=False)

    def _single_position_stride(self) -> int | None:
        """The analysis U-Net's deepest map (/64) in small configs (see Codec._single_position_stride)."""
        return self.pad_multiple if has_single_channel_groups(self.latent_codec.enc.unet) else None

    def _compress(self, x: Tensor, rung: int) -> EncodedImage:
        generator = torch.Generator(device=x.device).manual_seed(0)  # the official inference seeds with 0
        cond = self.encode_latent(x, generator)
        out = self.latent_codec.compress(x * 2 - 1, cond, z_only=self.z_only[rung])
        # [z] or [y, z]: the fixed-length z goes last, where the container stores no length for it (z is
        # often over 127 bytes, whose length would cost a second varint byte)
        return EncodedImage(streams=[strings[0] for strings in reversed(out["strings"])])

    def _decompress(self, encoded: EncodedImage, padded_size: tuple[int, int], rung: int) -> Tensor:
        expected = 1 if self.z_only[rung] else 2
        if len(encoded.streams) != expected:
            what = "1 stream (z)" if expected == 1 else "2 streams (y, z)"
            raise DecodeError(f"a OneDC file of rung {rung} has {what}, found {len(encoded.streams)}")
        stride = self.latent_codec.downsample
        grid = (padded_size[0] // stride, padded_size[1] // stride)
        streams = list(encoded.streams)
        z_bytes = packed_size(grid[0] * grid[1], self.latent_codec.z_vq.codebook_size)
        if len(streams) == 2 and len(streams[1]) != z_bytes and len(streams[0]) == z_bytes:
            streams.reverse()  # a format-1 file: z was written first
        out = self.latent_codec.decompress([[stream] for stream in reversed(streams)], grid)
        return self.render(self.generate(out["ctrl"], out["tokens"]))
