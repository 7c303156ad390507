"""CADC: Content Adaptive Diffusion-Based Generative Image Compression (Sheng et al., CVPR 2026,
arXiv:2602.21591).

CADC is StableCodec's pipeline (same authors, paper ref. [65]) with the SD VAE encoder, the ELIC auxiliary
encoder and the latent residual prediction removed, and three additions (``docs/methods/cadc.md``)::

    x ∈ [−1,1] ─g_a─► y (320, /64) ─h_a─► z (320, /256) ─EntropyBottleneck─► ẑ ──────────────┐
                      │                                                    │                  h_s
                      └─ r = y − UP(ẑ) ─f_u─► m ≥ 1 ─► ȳ = y ⊘ m            └─ UP: bilinear ×4   │
                                                       │                                      ▼
                                 ŷ ◄── 4-step quadtree (μ_k, σ_k; no LRP) ◄───────────── c_h = h_s(ẑ)
                                 │        (the decoder never needs m: ŷ is used as it is)
    l_T = g_s(ŷ) (320, /8) ──► U-Net + LoRA (conv_in 320→320, t = 999) ──► l₀ ──► D_SD ──► x̂
       │                                    ▲ e = CLIP-text(c_aux + ", " + c_fix)
       └─ l_T[:, 0:4] ─g_aux─► x̂_aux ─BLIP─► c_aux  (zero bits: captioned at the decoder)

- **UGAQ** (paper §3.2, Eq. 3–6): m = f_u(y − UP(ẑ)) with every element ≥ 1 (1 + softplus), ȳ = y / m is
  quantised and coded; no inverse scaling at the decoder (:class:`UncertaintyNetwork`).
- **ADGIC** (§3.3): a light auxiliary decoder g_aux sees only the first four channels of l_T and
  reconstructs the image; L_aux = ‖x − x̂_aux‖² in stage 2 (:class:`AuxiliaryImageDecoder`).
- **BFATC** (§3.4): x̂_aux is captioned by a frozen BLIP (:mod:`diffcodec.nn.captioner`, deterministic
  greedy generation) and the caption + the fixed prompt conditions the one-step U-Net through the SD
  text encoder (:class:`~diffcodec.nn.backbone.CaptionPrompt`).

Each addition is switchable (``ugaq``, ``adgic``, ``captioning``) for the paper's ablation M0…M3.

Layer-level architectures are not in the paper (its Fig. 8/9 are unavailable); they follow the spec's
proposals (diffcodec's design, docs/methods/cadc.md): the pixel stem of g_a, h_a/h_s with 320-channel z, f_u,
g_aux; the context
model is StableCodec's 4-step quadtree without LRP. Other proposals taken (spec labels them so):
quantisation relative to the mean, ŷ_k = round(ȳ − μ_k) + μ_k (§4.3; the literal round(ȳ) of Eq. 5 is not
implemented because the Gaussian coder codes integers around μ); m per element (``uncertainty_map=
"spatial"`` gives one map for all channels); StableCodec's D_Aux latent residual dropped
(``latent_residual=True`` keeps it); caption separator ", "; stage 1 conditions on the fixed prompt only and
stage 2 captions x̂_aux on the fly (no gradient through BLIP).

Everything else (rungs, file layout, colour fix, training loop, discriminator) is StableCodec's: :class:`CADC`
and :class:`~diffcodec.codecs.stablecodec.StableCodec` share
:class:`~diffcodec.codecs.stablecodec.model.SDTurboLadder` (the per-λ ladder on SD-Turbo, the colour fix),
and CADC composes StableCodec's latent-codec parts (``SynthesisTransform``, the quadtree context model) and
training module; it does not subclass StableCodec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffcodec.bitstream import DecodeError
from diffcodec.codecs.base import CodecOutput, EncodedImage
from diffcodec.codecs.rungs import check_lambda_ladder
from diffcodec.codecs.stablecodec.model import (
    LatentCodec,
    SDTurboLadder,
    SynthesisTransform,
    small_backbone_config,
)
from diffcodec.entropy.determinism import parameter_net
from diffcodec.entropy.factorized import EntropyBottleneck
from diffcodec.entropy.gaussian import GaussianConditional
from diffcodec.entropy.quadtree import QuadtreeContextModel, SharedContextParameters
from diffcodec.nn.backbone import (
    DEFAULT_PROMPT,
    BackboneSource,
    CaptionPrompt,
    OneStepBackbone,
    small_backbone,
)
from diffcodec.nn.blocks import BasicBlock, Downsample, HyperAnalysis, HyperSynthesis, Upsample, conv3x3
from diffcodec.nn.captioner import BLIP_MODEL, SMALL_BLIP, BlipCaptioner, byte_level_tokenizer
from diffcodec.nn.lora import STABLECODEC_UNET_TARGETS

__all__ = [
    "CADC",
    "SMALL_CADC_CODEC",
    "SMALL_TEXT_ENCODER",
    "AuxiliaryImageDecoder",
    "CADCLatentCodec",
    "PixelAnalysisTransform",
    "UncertaintyNetwork",
]


# ---------------------------------------------------------------------------------------------- transforms
class PixelAnalysisTransform(nn.Module):
    """g_a on pixels (diffcodec's design, docs/methods/cadc.md proposal): x ∈ [−1, 1] → y (M channels, stride
    64).

    Stem to stride 16: PixelUnshuffle(4) → Conv1×1(48 → s₀) → BasicBlock(s₀) → Downsample(s₀ → s₁) →
    BasicBlock(s₁) → Downsample(s₁ → s₂); then StableCodec's tail (keys ``analysis_transform.0..4``):
    BasicBlock(s₂) → Downsample(s₂ → N₂) → BasicBlock(N₂) → Downsample(N₂ → M) → BasicBlock(M).
    Full size s = (128, 160, 192), N₂ = 256, M = 320 (stem 1,110,760 parameters).
    """

    def __init__(
        self,
        latent_channels: int = 320,
        stem_channels: Sequence[int] = (128, 160, 192),
        mid_channels: int = 256,
    ) -> None:
        super().__init__()
        if len(stem_channels) != 3:
            raise ValueError(f"stem_channels needs 3 widths (strides 4, 8, 16), got {list(stem_channels)}")
        s0, s1, s2 = (int(c) for c in stem_channels)
        self.stem = nn.Sequential(
            nn.PixelUnshuffle(4), nn.Conv2d(48, s0, 1), BasicBlock(s0), Downsample(s0, s1), BasicBlock(s1),
            Downsample(s1, s2),
        )  # fmt: skip
        self.analysis_transform = nn.Sequential(
            BasicBlock(s2),
            Downsample(s2, mid_channels),
            BasicBlock(mid_channels),
            Downsample(mid_channels, latent_channels),
            BasicBlock(latent_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.analysis_transform(self.stem(x))


class UncertaintyNetwork(nn.Module):
    """f_u of UGAQ (paper Eq. 3–4; diffcodec's design, docs/methods/cadc.md proposal): m = 1 + softplus(f(r))
    ≥ 1 from r = y − UP(ẑ).

    Conv3×3(M → H) → GELU → BasicBlock(H) → Conv3×3(H → M, or → 1 for ``per_element=False``); the last
    bias starts at ``init_bias`` = −5 so that m ≈ 1.007 (UGAQ starts as plain quantisation).
    Full size (M, H) = (320, 160): 1,183,560 parameters.
    """

    def __init__(
        self, channels: int = 320, hidden: int = 160, *, per_element: bool = True, init_bias: float = -5.0
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            conv3x3(channels, hidden),
            nn.GELU(),
            BasicBlock(hidden),
            conv3x3(hidden, channels if per_element else 1),
        )
        nn.init.constant_(self.net[-1].bias, init_bias)

    def forward(self, residual: Tensor) -> Tensor:
        # softplus(v) = log(1 + e^v) ≥ 0; m is exactly 1 where it underflows, never below
        return 1 + F.softplus(self.net(residual))


class AuxiliaryImageDecoder(nn.Module):
    """g_aux of ADGIC (paper §3.3; diffcodec's design, docs/methods/cadc.md proposal): l_T[:, 0:4] (stride 8)
    → RGB image (stride 1).

    Conv3×3(4 → c₀) → BasicBlock(c₀) → Upsample(c₀ → c₁) → BasicBlock(c₁) → Upsample(c₁ → c₂) →
    Upsample(c₂ → 3). Full size (128, 96, 64): 693,744 parameters. The output is unbounded (the loss is on
    it directly); clamp to [−1, 1] before captioning.
    """

    def __init__(self, in_channels: int = 4, channels: Sequence[int] = (128, 96, 64)) -> None:
        super().__init__()
        c0, c1, c2 = (int(c) for c in channels)
        self.in_channels = in_channels
        self.decoder = nn.Sequential(
            conv3x3(in_channels, c0), BasicBlock(c0), Upsample(c0, c1), BasicBlock(c1), Upsample(c1, c2),
            Upsample(c2, 3),
        )  # fmt: skip

    def forward(self, latent: Tensor) -> Tensor:
        if latent.dim() != 4 or latent.shape[1] != self.in_channels:
            raise ValueError(f"g_aux takes ({self.in_channels}, h, w) latents, got {tuple(latent.shape)}")
        return self.decoder(latent)


# ---------------------------------------------------------------------------------------------- latent codec
#: Widths of a small :class:`CADCLatentCodec` of the same classes: tests and CPU runs.
SMALL_CADC_CODEC: dict[str, Any] = {
    "latent_channels": 32, "hyper_channels": 32, "context_channels": 48, "context_blocks": 1,
    "stem_channels": (16, 16, 24), "mid_channels": 24, "uncertainty_channels": 16,
    "aux_image_channels": (16, 16, 8), "aux_decoder_channels": (24, 16),
}  # fmt: skip


class CADCLatentCodec(nn.Module):
    """CADC's latent codec (diffcodec's design, docs/methods/cadc.md): pixels → (z, y) strings → ŷ → l_T,
    x̂_aux.

    Args:
        latent_channels: M, channels of y and l_T (320).
        hyper_channels: channels of z (320; must equal M when ``ugaq``: r = y − UP(ẑ)).
        context_channels / context_blocks: the shared quadtree context network (960 / 4, as StableCodec).
        stem_channels / mid_channels: g_a widths (:class:`PixelAnalysisTransform`).
        ugaq: uncertainty-guided adaptive quantisation (off: ȳ = y, ablation M0).
        uncertainty_channels / uncertainty_map: f_u hidden width (160) and "element" (m like y) or
            "spatial" (one map for all channels).
        adgic: build g_aux (:class:`AuxiliaryImageDecoder`, widths ``aux_image_channels``).
        latent_residual: keep StableCodec's D_Aux (ŷ → 4-channel residual added to l₀; widths
            ``aux_decoder_channels``). Off by default: CADC's paper does not describe it (diffcodec's design,
            docs/methods/cadc.md).
        sd_channels: channels of the SD latent (4): the channels of l_T that g_aux and the VAE see.
    """

    #: CDF tables and the Gaussian's accessor are StableCodec's (same modules under the same names).
    update = LatentCodec.update
    gaussian_conditional = LatentCodec.gaussian_conditional

    def __init__(
        self,
        latent_channels: int = 320,
        hyper_channels: int = 320,
        context_channels: int = 960,
        context_blocks: int = 4,
        stem_channels: Sequence[int] = (128, 160, 192),
        mid_channels: int = 256,
        ugaq: bool = True,
        uncertainty_channels: int = 160,
        uncertainty_map: Literal["element", "spatial"] = "element",
        adgic: bool = True,
        aux_image_channels: Sequence[int] = (128, 96, 64),
        latent_residual: bool = False,
        aux_decoder_channels: Sequence[int] = (256, 192),
        sd_channels: int = 4,
    ) -> None:
        super().__init__()
        m = latent_channels
        if ugaq and hyper_channels != m:
            raise ValueError(
                f"UGAQ needs z with y's channels (r = y − UP(ẑ)): hyper_channels {hyper_channels} ≠ {m}"
            )
        if uncertainty_map not in ("element", "spatial"):
            raise ValueError(f"uncertainty_map must be 'element' or 'spatial', got {uncertainty_map!r}")
        if not 0 < sd_channels <= m:
            raise ValueError(f"sd_channels must be in 1..{m}, got {sd_channels}")
        self.latent_channels, self.sd_channels = m, sd_channels
        self.g_a = PixelAnalysisTransform(m, stem_channels, mid_channels)
        self.h_a = HyperAnalysis(m, hyper_channels)
        self.h_s = HyperSynthesis(m, hyper_channels)
        self.entropy_bottleneck = EntropyBottleneck(hyper_channels)
        self.f_u = (
            UncertaintyNetwork(m, uncertainty_channels, per_element=uncertainty_map == "element")
            if ugaq
            else None
        )
        self.context_model = QuadtreeContextModel(
            SharedContextParameters(m, context_channels, context_blocks), lrp=None,
            gaussian_conditional=GaussianConditional(None),
        )  # fmt: skip
        self.g_s = SynthesisTransform(m)
        self.g_aux = AuxiliaryImageDecoder(sd_channels, aux_image_channels) if adgic else None
        if latent_residual:
            from diffcodec.codecs.stablecodec import AuxDecoder

            self.aux = AuxDecoder(m, tuple(aux_decoder_channels), sd_channels)
        else:
            self.aux = None

    # ------------------------------------------------------------------ UGAQ and ADGIC
    def uncertainty(self, y: Tensor, z_hat: Tensor) -> Tensor:
        """m = f_u(y − UP(ẑ)) ≥ 1 (paper Eq. 3–4); UP = bilinear ×4 (align_corners False)."""
        if self.f_u is None:
            raise RuntimeError("this latent codec was built with ugaq=False")
        if tuple(y.shape[-2:]) != (4 * z_hat.shape[-2], 4 * z_hat.shape[-1]):
            raise ValueError(
                f"the y grid {tuple(y.shape[-2:])} must be 4× the z grid {tuple(z_hat.shape[-2:])}"
            )
        z_bar = F.interpolate(z_hat, scale_factor=4, mode="bilinear", align_corners=False)
        return self.f_u(y - z_bar)

    def scaled_latent(self, y: Tensor, z_hat: Tensor) -> tuple[Tensor, Tensor | None]:
        """(ȳ = y ⊘ m, m) — the latent that is quantised and coded (y itself without UGAQ)."""
        if self.f_u is None:
            return y, None
        m = self.uncertainty(y, z_hat)
        return y / m, m

    def auxiliary_image(self, l_t: Tensor) -> Tensor | None:
        """x̂_aux = g_aux(l_T[:, 0:4]) (ADGIC): only the channels the VAE decoder sees; None without g_aux."""
        return None if self.g_aux is None else self.g_aux(l_t[:, : self.sd_channels])

    def _synthesis(self, y_hat: Tensor) -> dict[str, Tensor | None]:
        l_t = self.g_s(y_hat)  # ŷ as decoded: no multiplication by m (paper §3.2)
        res = None if self.aux is None else self.aux(y_hat)
        return {"l_T": l_t, "x_aux": self.auxiliary_image(l_t), "res": res}

    # ------------------------------------------------------------------ training path
    def forward(self, x: Tensor) -> dict[str, Any]:
        """Differentiable pass on x ∈ [−1, 1]: noise proxy on z and ȳ in training, rounding in eval.

        Returns ``y``, ``z``, ``z_hat``, ``m`` (None without UGAQ), ``y_bar``, ``y_hat``, ``means``,
        ``scales``, ``likelihoods`` {"y", "z"} (of ȳ and z), ``l_T``, ``x_aux`` and ``res`` (or None).
        """
        y = self.g_a(x)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        y_bar, m = self.scaled_latent(y, z_hat)
        out = self.context_model(y_bar, self.h_s(z_hat))
        return {
            "y": y, "z": z, "z_hat": z_hat, "m": m, "y_bar": y_bar, "y_hat": out["y_hat"],
            "means": out["means"], "scales": out["scales"],
            "likelihoods": {"y": out["likelihoods"]["y"], "z": z_likelihoods},
            **self._synthesis(out["y_hat"]),
        }  # fmt: skip

    # ------------------------------------------------------------------ real coding
    def compress(self, x: Tensor) -> dict[str, Any]:
        """``{"strings": [y_strings, z_strings], "shape": z grid, "y_hat": ŷ}`` for x ∈ [−1, 1]."""
        y = self.g_a(x)
        z = self.h_a(y)
        z_strings = self.entropy_bottleneck.compress(z)
        z_hat = self.entropy_bottleneck.decompress(z_strings, z.shape[-2:])
        y_bar, _ = self.scaled_latent(y, z_hat)
        out = self.context_model.compress(y_bar, parameter_net(self.h_s, z_hat))  # see entropy/determinism.py
        return {
            "strings": [out["strings"][0], z_strings],
            "shape": tuple(z.shape[-2:]),
            "y_hat": out["y_hat"],
        }

    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int]) -> dict[str, Tensor | None]:
        """ŷ, l_T, x̂_aux and res from :meth:`compress`'s strings and the z grid (f_u is never run)."""
        if len(strings) != 2:
            raise ValueError(f"expected [y_strings, z_strings], got {len(strings)} lists")
        y_strings, z_strings = strings
        params = parameter_net(self.h_s, self.entropy_bottleneck.decompress(z_strings, shape))
        y_hat = self.context_model.decompress([y_strings], params.shape[-2:], params)["y_hat"]
        return {"y_hat": y_hat, **self._synthesis(y_hat)}


# ---------------------------------------------------------------------------------------------- the codec
#: A small SD-text-encoder-like CLIP text model (random init) matching :func:`small_backbone_config`.
SMALL_TEXT_ENCODER: dict[str, Any] = {
    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
    "max_position_embeddings": 77, "projection_dim": 32,
}  # fmt: skip


def small_caption_conditioning(config: Mapping[str, Any], prompt: str, seed: int = 0) -> CaptionPrompt:
    """Caption conditioning with a random-init ``CLIPTextModel(CLIPTextConfig(**config))`` (seeded, global RNG
    untouched) and an offline byte-level tokenizer (ids: 0 end/pad, 1 start), for small codecs."""
    from transformers import CLIPTextConfig, CLIPTextModel

    length = int(config.get("max_position_embeddings", 77))
    tokenizer = byte_level_tokenizer(
        length, ("<|endoftext|>", "<|startoftext|>"), wrap=("<|startoftext|>", "<|endoftext|>")
    )
    text_config = CLIPTextConfig(
        **{**config, "vocab_size": len(tokenizer), "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 0}
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(text_config)
    return CaptionPrompt(tokenizer, text_encoder, prompt)


class CADC(SDTurboLadder):
    """CADC (see the module docstring): g_a on pixels → UGAQ + quadtree → one-step SD-Turbo decoder with
    a decoder-side BLIP caption.

    One rung per λ, swapped exactly as StableCodec's (the per-rung weights are the latent codec — with f_u
    and g_aux — and the U-Net LoRA + conv_in); the SD-Turbo weights, text encoder and BLIP are shared.

    Args (those not listed are :class:`StableCodec`'s, same meaning and defaults):
        latent_codec: :class:`CADCLatentCodec` arguments (None: full size; :data:`SMALL_CADC_CODEC`).
        ugaq, adgic, captioning: the three components (paper §3.2–§3.4). ``captioning`` (BFATC) needs
            ``adgic`` (it captions x̂_aux); off, the U-Net sees the fixed prompt only. Ablation M0 =
            (False, False, False), M1 = UGAQ, M2 = UGAQ + ADGIC, M3 = all three (the full CADC).
        backbone: configs of a random-init backbone (:func:`small_backbone_config`) used when
            ``base_model`` is None, with a random-init text encoder of config ``text_encoder``
            (:data:`SMALL_TEXT_ENCODER`).
        base_model, base_revision: SD-Turbo (hub id or diffusers folder); its text encoder is loaded and
            kept (the caption is encoded per image at the decoder).
        captioner, captioner_revision: BLIP hub id / folder, or a ``BlipConfig`` dict for a random-init
            one (:data:`~diffcodec.nn.captioner.SMALL_BLIP`). None: the paper's
            ``Salesforce/blip-image-captioning-base`` with a base model, SMALL_BLIP without.
        caption_max_length: BLIP generation limit (20 tokens).
        caption_separator: between caption and prompt (", "; "" is the literal concatenation).

    Training: :class:`~diffcodec.codecs.cadc.training.CADCTraining`.
    """

    method = "cadc"
    pad_multiple = 256
    pad_mode = "reflect"
    paper = "CADC: Content Adaptive Diffusion-Based Generative Image Compression (Sheng et al., CVPR 2026)"
    paper_url = "https://arxiv.org/abs/2602.21591"
    licence = None  # no official code or weights
    #: StableCodec's retired training settings and CADC's own L_aux weight (dropped on load)
    retired_args = SDTurboLadder.retired_args | {"aux_weight"}

    def __init__(
        self,
        *,
        name: str = "cadc",
        lambdas: Sequence[float] = (0.5,),
        rates: Sequence[float] | None = None,
        latent_codec: Mapping[str, Any] | None = None,
        ugaq: bool = True,
        adgic: bool = True,
        captioning: bool = True,
        backbone: BackboneSource = None,
        text_encoder: Mapping[str, Any] | None = None,
        base_model: str | None = None,
        base_revision: str | None = None,
        captioner: str | Mapping[str, Any] | None = None,
        captioner_revision: str | None = None,
        caption_max_length: int = 20,
        caption_separator: str = ", ",
        prompt: str = DEFAULT_PROMPT,
        unet_lora_rank: int = 32,
        lora_alpha: float = 8.0,
        timestep: int = 999,
        color_fix: bool = False,
    ) -> None:
        super().__init__()
        if captioning and not adgic:
            raise ValueError("captioning (BFATC) captions the ADGIC auxiliary image: it needs adgic=True")
        lambdas, rates = check_lambda_ladder(lambdas, rates)
        self._name, self._rates, self.lambdas = name, rates, lambdas
        self.captioning = captioning

        codec_args = {**dict(latent_codec or {}), "ugaq": ugaq, "adgic": adgic}
        self.latent_codec = CADCLatentCodec(**codec_args)
        m = self.latent_codec.latent_channels
        if base_model is not None:
            self.backbone = OneStepBackbone.from_pretrained(
                base_model, base_revision, conditioning="caption", prompt=prompt, conv_in_channels=m,
                timestep=timestep,
            )  # fmt: skip
        else:
            conditioning = small_caption_conditioning(dict(text_encoder or SMALL_TEXT_ENCODER), prompt)
            self.backbone = small_backbone(
                backbone, small_backbone_config(), conditioning=conditioning, conv_in_channels=m,
                timestep=timestep,
            )  # fmt: skip
        self.backbone.conditioning.separator = caption_separator
        if self.backbone.latent_channels != self.latent_codec.sd_channels:
            raise ValueError("the VAE's latent channels must equal the latent codec's sd_channels")
        self.backbone.add_lora("default", STABLECODEC_UNET_TARGETS, rank=unet_lora_rank, alpha=lora_alpha)

        self.captioner: BlipCaptioner | None = None
        if captioning:
            source = (
                captioner if captioner is not None else (BLIP_MODEL if base_model is not None else SMALL_BLIP)
            )
            if isinstance(source, Mapping):
                self.captioner = BlipCaptioner.from_config(source, max_length=caption_max_length)
            else:
                self.captioner = BlipCaptioner.from_pretrained(
                    source, captioner_revision, max_length=caption_max_length
                )

        self._init_rung_bank()

    # ------------------------------------------------------------------ contract

    # ------------------------------------------------------------------ the pipeline
    def caption(self, x_aux: Tensor | None) -> list[str] | None:
        """c_aux = BLIP(x̂_aux) per image (BFATC), or None (fixed prompt only) when captioning is off."""
        if self.captioner is None or x_aux is None:
            return None
        return self.captioner(x_aux.detach().clamp(-1, 1))

    def synthesize(
        self, l_t: Tensor, res: Tensor | None = None, captions: Sequence[str] | None = None
    ) -> tuple[Tensor, Tensor]:
        """(x̂ ∈ [0, 1], l₀): one U-Net step at t = 999 on l_T conditioned on caption + prompt, x0 from
        l_T[:, 0:4], (+ res if kept), frozen VAE decoder (diffcodec's design, docs/methods/cadc.md, decoder
        steps 4–6)."""
        l_0 = self.backbone.denoise(l_t, cond=None if captions is None else list(captions))
        latent = l_0 if res is None else l_0 + res
        return self.backbone.decode(latent).add(1).div(2), l_0

    def forward(self, x: Tensor, captions: bool = True) -> CodecOutput:
        """Training path on x (B, 3, H, W) ∈ [0, 1], H and W multiples of 256. Captions are generated
        (without gradient) unless ``captions`` is False (training stage 1 conditions on the fixed prompt
        only, paper §3.5)."""
        self.check_training_input(x)
        out = self.latent_codec(x * 2 - 1)
        captions = self.caption(out["x_aux"]) if captions else None
        x_hat, l_0 = self.synthesize(out["l_T"], out["res"], captions)
        aux = {**out, "l_0": l_0, "captions": captions}
        return CodecOutput(x_hat=x_hat, likelihoods=out["likelihoods"], aux=aux)

    # ------------------------------------------------------------------ real coding
    def _compress(self, x: Tensor, rung: int) -> EncodedImage:
        out = self.latent_codec.compress(x * 2 - 1)
        (y_string,), (z_string,) = out["strings"]
        return EncodedImage(streams=[z_string, y_string])

    def _decompress(self, encoded: EncodedImage, padded_size: tuple[int, int], rung: int) -> Tensor:
        if len(encoded.streams) != 2:
            raise DecodeError(f"a CADC file has 2 streams (z, y), found {len(encoded.streams)}")
        z_string, y_string = encoded.streams
        grid = (padded_size[0] // self.pad_multiple, padded_size[1] // self.pad_multiple)
        out = self.latent_codec.decompress([[y_string], [z_string]], grid)
        return self.synthesize(out["l_T"], out["res"], self.caption(out["x_aux"]))[0]
