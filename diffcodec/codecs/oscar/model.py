"""OSCAR: One-Step Diffusion Codec Across Multiple Bit-rates (Guo et al., NeurIPS 2025).

One model serves eight rates. Each rung r has its own small VQ hyper-encoder; the quantised latent is
treated as a diffusion state at a rung-specific pseudo-timestep t_r and restored by one pass of the
SD-2.1 (768-v) U-Net with LoRA and a learned prompt embedding (paper Eq. 4–5, official code)::

    x ─VAE enc (sample)─► z₀ (4, H/8, W/8) ──────────────────────────── A_c = ‖z₀_c‖₂ ──► side info
                           │                                                           │
                           └─ hyper_encoders[r].backbone ─► VQ ─► indices (H/8s · W/8s, ⌈log₂K_r⌉ bits)
                                                                   │
    x̂ ◄─VAE dec─ x̂₀ = √ᾱ·z̃ − √(1−ᾱ)·v ◄─ U-Net(z̃, t_r, E) ◄─ z̃ = ẑ·A/‖ẑ‖ ◄─ proj ◄─ codebook[indices]

The rung table (latent stride s, codebook size K, timestep t) is :data:`OFFICIAL_RUNGS` /
:data:`OFFICIAL_TIMESTEPS` (official code, the current code generation); nominal rate log₂K / (64 s²)
(paper §3.3). :mod:`diffcodec.training.calibration` recomputes the timesteps (paper Eq. 9–13).

Real coding (the official code has none, §1.3): the file holds the rung, the size, the four channel norms
A_c as float16 (side information, counted) and the indices as fixed-length fields.

Training (stages 1 and 2, the paper's losses and the latent discriminator): :mod:`.training`.

Other deviations (measured in ``docs/methods/oscar.md``): images are padded (reflect) to a multiple of the
rung's grid stride instead of being resized down to a multiple of 128; the norm rescale divides by
max(‖ẑ_c‖, 1e-12) (no epsilon officially); the norms travel as float16; the 8-bit output is rounded (the
official ``ToPILImage`` truncates); large images are tiled when the untiled pass would not fit in memory
(``tile="auto"``; the official code never tiles: ``tile="never"`` reproduces it); checkpoints of the
legacy generation (commit 5bb805c) are refused by :func:`check_generation`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
import torch
from torch import nn

from diffcodec.bitstream import DecodeError
from diffcodec.codecs.base import (
    BaseModelRef,
    Codec,
    CodecOutput,
    EncodedImage,
    check_side,
    has_single_channel_groups,
)
from diffcodec.entropy.vq import VectorQuantize, index_bits, pack_indices, unpack_indices
from diffcodec.nn.backbone import BackboneSource, OneStepBackbone, small_backbone, tiny_configs
from diffcodec.nn.blocks import AttentionBlock, ResidualBottleneckBlock, conv, conv1x1, deconv

__all__ = [
    "LEGACY_TIMESTEPS",
    "OFFICIAL_RUNGS",
    "OFFICIAL_TIMESTEPS",
    "OSCAR",
    "HyperEncoder",
    "HyperEncoderOutput",
    "Rung",
    "SideField",
    "channel_norms",
    "check_generation",
    "official_lora_targets",
    "rescale_to_norms",
    "small_config",
]

#: The base model of the released weights (SD 2.1, 768-v, v-prediction; official code).
BASE_MODEL = "stabilityai/stable-diffusion-2-1"
BASE_LICENCE = "openrail++"


# ---------------------------------------------------------------------------------------------- rate table
@dataclass(frozen=True)
class Rung:
    """One rate of the ladder: VQ grid stride ``latent_stride`` (s, relative to the latent; 1, 2, 4 or 8)
    and codebook size ``codebook_size`` (K). One index per s×s latent block: log₂K / (8s)² bpp."""

    latent_stride: int
    codebook_size: int

    def __post_init__(self) -> None:
        if self.latent_stride not in (1, 2, 4, 8):
            raise ValueError(
                f"latent_stride must be 1, 2, 4 or 8 (0–3 stride-2 stages), got {self.latent_stride}"
            )
        index_bits(self.codebook_size)  # validates K ≥ 2

    @property
    def downsamples(self) -> int:
        return int(math.log2(self.latent_stride))

    @property
    def bits_per_index(self) -> int:
        return index_bits(self.codebook_size)

    def nominal_bpp(self, vae_stride: int = 8) -> float:
        """Index bits per pixel, log₂K/(vae_stride·s)² (paper §3.3), without header and side information."""
        return self.bits_per_index / (vae_stride * self.latent_stride) ** 2


#: ``OSCAR.bpps`` of the official code: 0.0019, 0.0098, 0.0313, 0.0430, 0.0625, 0.0781, 0.0937, 0.1250 bpp
#: (cfg_ss = 64/s at 512², official code).
OFFICIAL_RUNGS: tuple[dict[str, int], ...] = (
    {"latent_stride": 8, "codebook_size": 256},
    {"latent_stride": 4, "codebook_size": 1024},
    {"latent_stride": 2, "codebook_size": 256},
    {"latent_stride": 2, "codebook_size": 2048},
    {"latent_stride": 1, "codebook_size": 16},
    {"latent_stride": 1, "codebook_size": 32},
    {"latent_stride": 1, "codebook_size": 64},
    {"latent_stride": 1, "codebook_size": 256},
)
#: Pseudo-timesteps of the current generation (commit cbd975e), by rung.
OFFICIAL_TIMESTEPS: tuple[int, ...] = (500, 400, 310, 280, 210, 190, 170, 150)
#: Pseudo-timesteps of the legacy generation (commit 5bb805c), whose checkpoints are refused.
LEGACY_TIMESTEPS: tuple[int, ...] = (810, 780, 310, 280, 210, 190, 170, 150)


class SideField(IntEnum):
    """Side-information keys of an OSCAR file."""

    CHANNEL_NORMS = 0  #: float16 (C,): A_c = ‖z₀_c‖₂ over all positions of the padded latent


# ---------------------------------------------------------------------------------------------- hyper-encoder
@dataclass
class HyperEncoderOutput:
    """``z_hat`` (B, C, h, w) proj output, ``indices`` (B, h/s, w/s), ``commit_loss`` (scalar)."""

    z_hat: torch.Tensor
    indices: torch.Tensor
    commit_loss: torch.Tensor


class HyperEncoder(nn.Module):
    """Rate-specific VQ hyper-encoder (paper §3.3; official ``hyper_encoder.py``, current generation).

    backbone: [1×1 | conv↓](C→N), RBB×3, [1×1 | conv↓](N), RBB×3, Attention(N), [1×1 | conv↓](N), RBB×3,
    1×1(N→M), Attention(M); the stride-2 convs replace the 1×1s from the first one on, as many as
    log₂(latent_stride). quantizer: cosine VQ (M → codebook_dim, K codes). proj (decoder side): the
    mirror with transposed convs and no attention, ending in 1×1(M→C). Keys are the official ones.

    Args:
        latent_stride, codebook_size: the rung (s, K).
        in_channels: latent channels C (4). channels: N (192). latent_channels: M (320). codebook_dim: 32.
    """

    def __init__(
        self,
        latent_stride: int,
        codebook_size: int,
        *,
        in_channels: int = 4,
        channels: int = 192,
        latent_channels: int = 320,
        codebook_dim: int = 32,
    ) -> None:
        super().__init__()
        rung = Rung(latent_stride, codebook_size)
        self.latent_stride = latent_stride
        d, c, n, m = rung.downsamples, in_channels, channels, latent_channels

        def down(a: int, b: int, stage: int) -> nn.Module:  # stage 3 is the first to downsample
            return conv(a, b) if d >= stage else conv1x1(a, b)

        def up(a: int, b: int, stage: int) -> nn.Module:
            return deconv(a, b) if d >= stage else conv1x1(a, b)

        def rbb(width: int) -> list[nn.Module]:
            return [ResidualBottleneckBlock(width) for _ in range(3)]

        self.backbone = nn.Sequential(
            down(c, n, 3), *rbb(n), down(n, n, 2), *rbb(n), AttentionBlock(n), down(n, n, 1), *rbb(n),
            conv1x1(n, m), AttentionBlock(m),
        )  # fmt: skip
        self.quantizer = VectorQuantize(m, codebook_size, codebook_dim)
        self.proj = nn.Sequential(
            up(m, m, 3), *rbb(m), up(m, m, 2), *rbb(m), up(m, m, 1), *rbb(m), conv1x1(m, c),
        )  # fmt: skip

    @classmethod
    def from_official(
        cls, in_channels: int, N: int, M: int, codebook_dim: int, cfg_ss: int, cfg_cs: int
    ) -> HyperEncoder:
        """Build from the official constructor arguments (cfg_ss = VQ grid side at 512² = 64/s)."""
        if cfg_ss not in (8, 16, 32, 64):
            raise ValueError(f"cfg_ss must be 8, 16, 32 or 64, got {cfg_ss}")
        return cls(
            64 // cfg_ss,
            cfg_cs,
            in_channels=in_channels,
            channels=N,
            latent_channels=M,
            codebook_dim=codebook_dim,
        )

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def _check_latent(self, z0: torch.Tensor) -> None:
        s = self.latent_stride
        if z0.ndim != 4 or z0.shape[-2] % s or z0.shape[-1] % s:
            raise ValueError(
                f"the latent must be (B, C, h, w) with h and w multiples of {s}, got {tuple(z0.shape)}"
            )

    def analysis(self, z0: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, M, h/s, w/s)."""
        self._check_latent(z0)
        return self.backbone(z0)

    def _tokens(self, z0: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        features = self.analysis(z0)
        return features.flatten(2).transpose(1, 2), features.shape[-2:]  # row-major (h, w)

    def encode(self, z0: torch.Tensor) -> torch.Tensor:
        """VQ indices (B, h/s, w/s), row-major."""
        tokens, (h, w) = self._tokens(z0)
        return self.quantizer.encode(tokens).view(-1, h, w)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        """ẑ (B, C, h, w) from indices (B, h/s, w/s): codebook → project_out → proj."""
        if indices.ndim != 3:
            raise ValueError(f"indices must be (B, h, w), got {tuple(indices.shape)}")
        b, h, w = indices.shape
        quantized = self.quantizer.decode(indices.reshape(b, h * w))
        return self.proj(quantized.transpose(1, 2).reshape(b, -1, h, w))

    def compress(self, z0: torch.Tensor) -> dict[str, Any]:
        """One image (the latent-codec protocol, :mod:`diffcodec.entropy.latent_codec`): ``strings``
        ``[[indices]]`` packed at ⌈log₂K⌉ bits each (paper §3.3), ``shape`` the index grid (h/s, w/s)."""
        indices = self.encode(z0)
        if indices.shape[0] != 1:
            raise ValueError(f"compress codes one image at a time, got a batch of {indices.shape[0]}")
        stream = pack_indices(indices, self.codebook_size)
        return {"strings": [[stream]], "shape": tuple(indices.shape[-2:]), "indices": indices}

    def decompress(
        self, strings: Sequence[Sequence[bytes]], shape: tuple[int, int]
    ) -> dict[str, torch.Tensor]:
        """``z_hat`` (the proj output ẑ) and ``indices`` from :meth:`compress`'s strings and grid."""
        if len(strings) != 1 or len(strings[0]) != 1:
            raise ValueError(f"expected [[indices]] (one image), got {len(strings)} lists")
        rows, cols = shape
        indices = unpack_indices(strings[0][0], rows * cols, self.codebook_size)
        indices = torch.from_numpy(indices).to(next(self.parameters()).device).view(1, rows, cols)
        return {"z_hat": self.decode(indices), "indices": indices}

    def forward(self, z0: torch.Tensor) -> HyperEncoderOutput:
        """Training path: in train mode the codebook is EMA-updated and gradients pass the VQ."""
        tokens, (h, w) = self._tokens(z0)
        vq = self.quantizer(tokens)
        z_hat = self.proj(vq.quantized.transpose(1, 2).reshape(z0.shape[0], -1, h, w))
        return HyperEncoderOutput(z_hat, vq.indices.view(-1, h, w), vq.commit_loss)


def check_generation(hyper_state: Mapping[str, Any], where: str = "the checkpoint") -> None:
    """Refuse state dicts of the legacy hyper-encoder (commit 5bb805c) with a message saying why.

    Legacy keys have ``backbone.N.attn.in_proj_weight`` (MultiheadAttention layers); the current
    generation has ``backbone.8.conv_a…`` (CompressAI attention). official code.
    """
    keys = list(hyper_state)
    if any(".attn.in_proj_weight" in key for key in keys):
        raise ValueError(
            f"{where} holds OSCAR hyper-encoders of the *legacy* generation (jp-guo/OSCAR commit 5bb805c: "
            "MultiheadAttention layers, one stride-2 stage, timesteps 810/780/…); its 0.0019/0.0098 bpp "
            "rungs coded a 32×32 grid (OSCAR issue #3). diffcodec implements the current generation "
            "(commit cbd975e); download the current jinpeig/OSCAR oscar.pkl, which the authors replaced."
        )
    if not any(".backbone.8.conv_a." in key or key.startswith("backbone.8.conv_a.") for key in keys):
        raise ValueError(f"{where} does not hold OSCAR hyper-encoders (no 'backbone.8.conv_a.*' keys)")


# ---------------------------------------------------------------------------------------------- norms
def channel_norms(z: torch.Tensor) -> torch.Tensor:
    """A_c = ‖z_c‖₂ over all spatial positions: (B, C, h, w) → (B, C)."""
    return z.flatten(2).norm(dim=2)


def rescale_to_norms(z_hat: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """z̃_c = ẑ_c · A_c / ‖ẑ_c‖₂ (official code step 3; the denominator is floored at 1e-12)."""
    if norms.shape != z_hat.shape[:2]:
        raise ValueError(f"norms {tuple(norms.shape)} do not match the latent {tuple(z_hat.shape)}")
    scale = norms / channel_norms(z_hat).clamp(min=1e-12)
    return z_hat * scale[..., None, None]


# ---------------------------------------------------------------------------------------------- LoRA
#: The official adapter names, one per U-Net part (official code).
ADAPTER_GROUPS: tuple[str, ...] = ("encoder", "decoder", "others")
_LORA_PATTERNS = (
    "to_k", "to_q", "to_v", "to_out.0", "conv", "conv1", "conv2", "conv_in", "conv_shortcut", "conv_out",
    "proj_out", "proj_in", "ff.net.2", "ff.net.0.proj",
)  # fmt: skip


def official_lora_targets(unet: nn.Module) -> dict[str, list[str]]:
    """The official LoRA target lists (OSEDiff lineage, official code) of a U-Net without adapters.

    Every weight whose name contains none of "bias", "norm" and one of the patterns as a substring;
    grouped as ``encoder`` (``down_blocks``/``conv_in``), ``decoder`` (``up_blocks``/``conv_out``) or
    ``others``. SD-2.1: 94 / 148 / 16 modules.
    """
    groups: dict[str, list[str]] = {group: [] for group in ADAPTER_GROUPS}
    for name, _ in unet.named_parameters():
        if "bias" in name or "norm" in name or not any(p in name for p in _LORA_PATTERNS):
            continue
        if ".base_layer." in name or ".lora_" in name:
            raise ValueError("official_lora_targets needs a U-Net without adapters")
        module = name.removesuffix(".weight")
        if "down_blocks" in name or "conv_in" in name:
            groups["encoder"].append(module)
        elif "up_blocks" in name or "conv_out" in name:
            groups["decoder"].append(module)
        else:
            groups["others"].append(module)
    return groups


def adapter_name(group: str) -> str:
    """``default_encoder`` / ``default_decoder`` / ``default_others`` (the official adapter names)."""
    return f"default_{group}"


# ---------------------------------------------------------------------------------------------- codec
def small_config(cross_attention_dim: int = 32) -> dict[str, dict[str, Any]]:
    """A small random-init SD-2.1-like backbone (v-prediction) for tests and CPU runs (``backbone=``)."""
    return tiny_configs(cross_attention_dim=cross_attention_dim, prediction_type="v_prediction")


class OSCAR(Codec):
    """OSCAR codec: eight rungs from one model (see the module docstring).

    Args:
        name: model identifier (its 8-bit tag is written into every file).
        rungs: the ladder, ascending in rate: ``{"latent_stride": s, "codebook_size": K}`` per rung.
        timesteps: the pseudo-timestep of each rung (from :mod:`~diffcodec.training.calibration` or official).
        hyper_channels, hyper_latent_channels, codebook_dim: N, M, codebook width of the hyper-encoders.
        backbone: configs of a random-init backbone (``vae_config``, ``unet_config``, ``scheduler_config``;
            see :func:`small_config`), used when ``base_model`` is None.
        base_model, base_revision: hub id or folder of SD 2.1 (768-v) and its revision.
        lora_rank, lora_alpha: the three U-Net adapters (16, 8 → scaling 0.5).
        embedding_length: rows of the learned prompt embedding E (77).
        sample_latent: encode with a posterior sample (official, also at test time) or the mean.

    Training (stages 1 and 2, losses, the latent discriminator): :class:`~diffcodec.codecs.oscar.training.
    OSCARTraining`.
    """

    method = "oscar"
    paper = "OSCAR: One-Step Diffusion Codec Across Multiple Bit-rates (Guo et al., NeurIPS 2025)"
    paper_url = "https://arxiv.org/abs/2505.16091"
    licence = "unspecified"
    #: training settings this constructor took before training moved to :mod:`.training` (dropped on load)
    retired_args = frozenset(
        [
            "commitment_weight",
            "discriminator_learning_rate",
            "discriminator_weight",
            "dists_weight",
            "edge_dists_weight",
            "gan_loss",
            "gan_weight",
            "gradient_clip",
            "latent_cosine_axis",
            "latent_cosine_weight",
            "learning_rate",
            "pixel_loss",
            "rung_seed",
            "stage",
            "weight_decay",
        ]
    )

    def __init__(
        self,
        *,
        name: str = "oscar",
        rungs: Sequence[Mapping[str, int]] = OFFICIAL_RUNGS,
        timesteps: Sequence[int] = OFFICIAL_TIMESTEPS,
        hyper_channels: int = 192,
        hyper_latent_channels: int = 320,
        codebook_dim: int = 32,
        backbone: BackboneSource = None,
        base_model: str | None = None,
        base_revision: str | None = None,
        lora_rank: int = 16,
        lora_alpha: float = 8.0,
        embedding_length: int = 77,
        sample_latent: bool = True,
    ) -> None:
        super().__init__()
        self._name = name
        self.rung_table = tuple(Rung(int(r["latent_stride"]), int(r["codebook_size"])) for r in rungs)
        if not self.rung_table:
            raise ValueError("an OSCAR ladder needs at least one rung")
        rates = [rung.nominal_bpp() for rung in self.rung_table]
        if rates != sorted(rates):
            raise ValueError(f"rungs must ascend in rate, got {[f'{r:.4g}' for r in rates]} bpp")
        if len(timesteps) != len(self.rung_table):
            raise ValueError(
                f"{len(self.rung_table)} rungs need {len(self.rung_table)} timesteps, got {len(timesteps)}"
            )
        if base_model is not None:
            self.backbone = OneStepBackbone.from_pretrained(
                base_model, base_revision, conditioning="learned", prompt_length=embedding_length
            )
        else:
            self.backbone = small_backbone(
                backbone, small_config(), conditioning="learned", prompt_length=embedding_length
            )
        self._timesteps = self._checked_timesteps(timesteps)
        self._rates = tuple(rung.nominal_bpp(self.backbone.vae_scale_factor) for rung in self.rung_table)

        targets = official_lora_targets(self.backbone.unet)
        for group, modules in targets.items():
            if modules:
                self.backbone.add_lora(
                    adapter_name(group), modules, rank=lora_rank, alpha=lora_alpha, init="gaussian"
                )

        latent = self.backbone.latent_channels
        self.hyper_encoders = nn.ModuleList(
            HyperEncoder(
                rung.latent_stride, rung.codebook_size, in_channels=latent, channels=hyper_channels,
                latent_channels=hyper_latent_channels, codebook_dim=codebook_dim,
            )
            for rung in self.rung_table
        )  # fmt: skip

    # ------------------------------------------------------------------ contract
    @property
    def pad_multiple(self) -> int:  # type: ignore[override]
        """The active rung's grid stride in pixels (8·s): indices exist only for whole s×s blocks."""
        return self.backbone.vae_scale_factor * self.rung_table[self.quality].latent_stride

    def _single_position_stride(self) -> int | None:
        """The U-Net's deepest map (latent / 2^(levels-1)) of the small configs, which a 1 × 1 image at the
        finest rungs would reduce to one position (:meth:`Codec._single_position_stride`)."""
        unet = self.backbone.unet
        if not has_single_channel_groups(unet):
            return None
        return self.backbone.vae_scale_factor * 2 ** (len(unet.config.block_out_channels) - 1)

    @property
    def timesteps(self) -> tuple[int, ...]:
        """The pseudo-timestep t_r of each rung."""
        return self._timesteps

    def base_model_ref(self) -> BaseModelRef | None:
        base = self.hparams.get("base_model")
        return None if base is None else BaseModelRef(base, self.hparams.get("base_revision"), BASE_LICENCE)

    def _checked_timesteps(self, timesteps: Sequence[int]) -> tuple[int, ...]:
        values = tuple(int(t) for t in timesteps)
        if len(values) != len(self.rung_table):
            raise ValueError(
                f"{len(self.rung_table)} rungs need {len(self.rung_table)} timesteps, got {len(values)}"
            )
        limit = self.backbone.num_train_timesteps
        if any(not 0 <= t < limit for t in values) or any(isinstance(t, bool) for t in timesteps):
            raise ValueError(f"timesteps must be ints in [0, {limit}), got {list(timesteps)}")
        return values

    def set_timesteps(self, timesteps: Sequence[int]) -> None:
        """Replace the rung → timestep table (e.g. after calibration); ``save_pretrained`` then writes it
        into config.json."""
        self._timesteps = self._checked_timesteps(timesteps)
        self.hparams["timesteps"] = list(self._timesteps)
        self.__dict__["_diffcodec_init_args"]["timesteps"] = list(self._timesteps)  # the config.json record

    # ------------------------------------------------------------------ the pipeline
    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latent z₀ of x ∈ [0, 1]: a posterior sample (official) or the mean."""
        return self.backbone.encode(x * 2 - 1, sample=self.hparams.sample_latent)

    def synthesize(
        self, z_hat: torch.Tensor, norms: torch.Tensor, rung: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂ ∈ [0, 1], x̂₀ latent) from the proj output ẑ and the channel norms: rescale, one U-Net step
        at t_r (v-prediction x0 formula), VAE decode, clamp."""
        z_tilde = rescale_to_norms(z_hat, norms.to(z_hat))
        x0 = self.backbone.denoise(z_tilde, self._timesteps[rung])
        return self.backbone.decode(x0).add(1).div(2), x0

    def side_bits(self) -> int:
        """Bits of the channel norms in a file (float16 each), excluding the container's framing."""
        return 16 * self.backbone.latent_channels

    def forward(self, x: torch.Tensor, rung: int | None = None) -> CodecOutput:
        """Differentiable path at ``rung`` (default: the active one) on x (B, 3, H, W) ∈ [0, 1], H and W
        multiples of :attr:`pad_multiple` at that rung. ``aux``: z0, z_hat, x0, indices, commit_loss."""
        rung = self.quality if rung is None else self.select_rung(rung)
        with torch.no_grad():
            z0 = self.encode_latent(x)
        out = self.hyper_encoders[rung](z0)
        x_hat, x0 = self.synthesize(out.z_hat, channel_norms(z0), rung)
        count = out.indices[0].numel()
        bits = x.new_full((x.shape[0],), float(count * self.rung_table[rung].bits_per_index))
        return CodecOutput(
            x_hat=x_hat,
            rate_bits={"indices": bits, "norms": torch.full_like(bits, float(self.side_bits()))},
            aux={
                "z0": z0,
                "z_hat": out.z_hat,
                "x0": x0,
                "indices": out.indices,
                "commit_loss": out.commit_loss,
            },
        )

    # ------------------------------------------------------------------ real coding
    def _compress(self, x: torch.Tensor, rung: int) -> EncodedImage:
        if x.shape[0] != 1:  # the indices of a batch would pack into one stream: refuse, never merge
            raise ValueError(f"_compress codes one image, got {x.shape[0]}; Codec.compress splits batches")
        z0 = self.encode_latent(x)
        coded = self.hyper_encoders[rung].compress(z0)
        norms = channel_norms(z0)[0].float().cpu().numpy().astype(np.float16)
        if not np.isfinite(norms).all():
            raise ValueError("a latent channel norm overflows float16; the image cannot be coded")
        return EncodedImage(streams=[coded["strings"][0][0]], side={SideField.CHANNEL_NORMS: norms})

    def _decompress(self, encoded: EncodedImage, padded_size: tuple[int, int], rung: int) -> torch.Tensor:
        if len(encoded.streams) != 1:
            raise DecodeError(f"an OSCAR file has 1 stream (the indices), found {len(encoded.streams)}")
        check_side(encoded.side, [SideField.CHANNEL_NORMS])
        norms = encoded.side[SideField.CHANNEL_NORMS]
        channels = self.backbone.latent_channels
        if not isinstance(norms, np.ndarray) or norms.dtype != np.float16 or norms.shape != (channels,):
            raise DecodeError(f"the channel norms must be {channels} float16 values, got {norms!r}")
        if not (np.isfinite(norms).all() and (norms >= 0).all()):
            raise DecodeError(f"the channel norms must be finite and non-negative, got {norms.tolist()}")
        stride = self.backbone.vae_scale_factor * self.rung_table[rung].latent_stride
        grid = (padded_size[0] // stride, padded_size[1] // stride)
        z_hat = self.hyper_encoders[rung].decompress([[encoded.streams[0]]], grid)["z_hat"]
        norms_t = torch.from_numpy(norms.astype(np.float32)).to(z_hat)[None]
        return self.synthesize(z_hat, norms_t, rung)[0]
