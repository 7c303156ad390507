"""Discriminators of the one-step codecs' adversarial losses.

- :class:`LatentDiscriminator` — OSCAR's "pre-trained U-Net encoder + lightweight head" on latents
  (OSCAR §3.4; official ``discriminator.py``): the SD U-Net's down path and mid block (with LoRA) as
  features, a small head.
- :class:`DINOv2Discriminator` — StableCodec's and CADC's image discriminator: frozen
  DINOv2-with-registers features with spectral-norm heads, DiffAugment on its inputs (StableCodec §8.3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from diffcodec.nn.backbone import LearnedEmbedding, load_component
from diffcodec.nn.lora import ONEDC_UNET_TARGETS, LoraSpec, add_lora

#: LoRA targets of OSCAR's discriminator U-Net (official ``discriminator.py``): the same list as OneDC's
#: U-Net LoRA.
DISCRIMINATOR_LORA_TARGETS = ONEDC_UNET_TARGETS


def unet_encoder_features(
    unet: UNet2DConditionModel, sample: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """The U-Net's mid-block output (time embedding → conv_in → down blocks → mid block), from its
    public submodules; what the official ``as_discriminator=True`` early return gives."""
    emb = unet.time_embedding(unet.time_proj(timesteps).to(sample.dtype))
    h = unet.conv_in(sample)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
        else:
            h, _ = block(hidden_states=h, temb=emb)
    return unet.mid_block(h, emb, encoder_hidden_states=context)


class LatentDiscriminator(nn.Module):
    """OSCAR's latent discriminator (paper §3.4 "pre-trained UNet encoder + lightweight head", §7.5).

    The given SD U-Net (pass a copy: it is modified) without its up blocks (frozen, with a LoRA ``r``=16,
    alpha 8, default init) and a learned (L, dim) embedding give mid-block features of a *noised* latent;
    the head Conv4×4(C→2C) → GroupNorm(32) → SiLU → Conv4×4(2C→1) turns them into a logit map. Trainable: the
    LoRA, the embedding and the head (the official code trains only the head, see the module docstring).
    """

    def __init__(self, unet: UNet2DConditionModel, *, lora_rank: int = 16, lora_alpha: float = 8.0,
                 embedding_length: int = 77) -> None:  # fmt: skip
        super().__init__()
        for part in ("up_blocks", "conv_out"):  # as the official code; conv_norm_out stays (unused)
            if getattr(unet, part, None) is not None:
                delattr(unet, part)
        unet.requires_grad_(False)
        add_lora(
            unet, "default", LoraSpec(DISCRIMINATOR_LORA_TARGETS, rank=lora_rank, alpha=lora_alpha, init=True)
        )
        self.unet = unet
        dim = unet.config.cross_attention_dim
        self.embedding = LearnedEmbedding(embedding_length, int(dim if isinstance(dim, int) else dim[0]))
        width = int(unet.config.block_out_channels[-1])
        self.cls_pred_branch = nn.Sequential(
            nn.Conv2d(width, 2 * width, 4, 1, 1), nn.GroupNorm(32, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 1, 4, 1, 1),
        )  # fmt: skip

    def forward(self, latent: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, h', w') of a noised latent at ``timesteps`` (B,)."""
        context = self.embedding(latent.shape[0])
        return self.cls_pred_branch(unet_encoder_features(self.unet, latent, timesteps, context))


def diff_augment(x: Tensor, policy: str = "color,translation,cutout") -> Tensor:
    """DiffAugment (Zhao et al., NeurIPS 2020) on a batch in [−1, 1]; the same transform is applied
    differentiably. ``policy``: comma-separated subset of color, translation, cutout."""
    b, _, h, w = x.shape
    device = x.device
    for name in [p for p in policy.split(",") if p]:
        if name == "color":
            x = x + (torch.rand(b, 1, 1, 1, device=device) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (torch.rand(b, 1, 1, 1, device=device) * 2) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (torch.rand(b, 1, 1, 1, device=device) + 0.5) + mean
        elif name == "translation":
            sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
            ty = torch.randint(-sh, sh + 1, (b, 1, 1), device=device)
            tx = torch.randint(-sw, sw + 1, (b, 1, 1), device=device)
            gb, gy, gx = _grid(b, h, w, device)
            gy = torch.clamp(gy + ty + 1, 0, h + 1)
            gx = torch.clamp(gx + tx + 1, 0, w + 1)
            x = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)[gb, gy, gx].permute(0, 3, 1, 2)
        elif name == "cutout":
            ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
            oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=device)
            ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=device)
            gb, gy, gx = _grid(b, ch, cw, device)
            gy = torch.clamp(gy + oy - ch // 2, 0, h - 1)
            gx = torch.clamp(gx + ox - cw // 2, 0, w - 1)
            mask = torch.ones(b, h, w, dtype=x.dtype, device=device)
            mask[gb, gy, gx] = 0
            x = x * mask.unsqueeze(1)
        else:
            raise ValueError(f"unknown DiffAugment policy {name!r}; use color, translation, cutout")
    return x


def _grid(*sizes_and_device: Any) -> tuple[Tensor, ...]:
    *sizes, device = sizes_and_device
    return torch.meshgrid(*(torch.arange(n, device=device) for n in sizes), indexing="ij")


class BlurPool(nn.Module):
    """Depthwise 4×4 binomial blur ([1,3,3,1]ᵀ[1,3,3,1]/64), zero padding ``pad``, stride 1."""

    def __init__(self, channels: int, pad: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kernel = (taps[:, None] * taps[None, :]) / 64
        self.register_buffer("kernel", kernel.expand(channels, 1, 4, 4).contiguous(), persistent=False)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (self.pad,) * 4), self.kernel, groups=x.shape[1])


class DINOv2Discriminator(nn.Module):
    """Vision-aided discriminator (Kumari et al., CVPR 2022) on frozen DINOv2-with-registers features,
    StableCodec's ``cv_type='dinov2_reg', output_type='conv_multi_level'`` (official ``finetune.py``).

    DiffAugment → [0, 1] → area resize to 224² → ImageNet normalisation → ViT-B/14 (frozen); three levels:
    patch tokens after blocks 4 and 8 (16×16 maps; each a head BlurPool → SN-Conv3×3/2 → LeakyReLU 0.2 →
    BlurPool → SN-Conv1×1/2 → 4×4 logits) and the class token after block 11 (SN-Linear → LeakyReLU 0.2 →
    SN-Linear ``out``). 1,868,547 trainable parameters at width 768. The backbone comes from transformers
    (``facebook/dinov2-with-registers-base``) instead of ``torch.hub``; its position embedding is
    interpolated by the model (bicubic) rather than resampled once with timm — the same operation.
    """

    def __init__(
        self,
        model: str | Mapping[str, Any] | None = "facebook/dinov2-with-registers-base",
        *,
        policy: str = "color,translation,cutout",
        layers: tuple[int, int, int] = (4, 8, 11),
        channels: int = 128,
        size: int = 224,
    ) -> None:
        super().__init__()
        from torch.nn.utils.parametrizations import spectral_norm
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        if model is None or isinstance(model, Mapping):
            self.backbone = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**dict(model or {})))
        else:
            self.backbone = load_component(Dinov2WithRegistersModel.from_pretrained, model, "")
        self.backbone.eval().requires_grad_(False)
        config = self.backbone.config
        if max(layers) >= config.num_hidden_layers:
            raise ValueError(f"layers {layers} exceed the backbone's {config.num_hidden_layers} blocks")
        self.layers, self.policy, self.size = tuple(layers), policy, size
        self.prefix_tokens = 1 + int(config.num_register_tokens)
        dim = int(config.hidden_size)

        def conv_head() -> nn.Sequential:
            return nn.Sequential(
                BlurPool(dim, 2), spectral_norm(nn.Conv2d(dim, channels, 3, stride=2)), nn.LeakyReLU(0.2),
                BlurPool(channels, 1), spectral_norm(nn.Conv2d(channels, 1, 1, stride=2)),
            )  # fmt: skip

        self.heads = nn.ModuleList([conv_head(), conv_head()])
        self.cls_head = nn.Sequential(spectral_norm(nn.Linear(dim, channels)), nn.LeakyReLU(0.2))
        self.out = spectral_norm(nn.Linear(channels, 1))
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> DINOv2Discriminator:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        """Logits per level for images in [−1, 1]: [(B, 4, 4), (B, 4, 4), (B, 1)] at 224²."""
        x = diff_augment(x, self.policy) if self.policy else x
        x = F.interpolate(x * 0.5 + 0.5, size=(self.size, self.size), mode="area")
        hidden = self.backbone(
            pixel_values=(x - self.mean) / self.std, output_hidden_states=True
        ).hidden_states
        norm = self.backbone.layernorm
        grid = self.size // self.backbone.config.patch_size
        logits = []
        for head, layer in zip(self.heads, self.layers[:2]):
            tokens = norm(hidden[layer + 1])[:, self.prefix_tokens :]
            feature = tokens.transpose(1, 2).reshape(x.shape[0], -1, grid, grid)
            logits.append(head(feature).squeeze(1))
        logits.append(self.out(self.cls_head(norm(hidden[self.layers[2] + 1])[:, 0])))
        return logits

    @staticmethod
    def loss(logits: Sequence[Tensor], target: float) -> Tensor:
        """``multilevel_sigmoid_s``: BCE-with-logits against ``target`` per level (mean over each map), summed
        over the levels, mean over the batch."""
        total = 0
        for level in logits:
            per_item = F.binary_cross_entropy_with_logits(
                level, torch.full_like(level, target), reduction="none"
            )
            total = total + per_item.flatten(1).mean(dim=1)
        return total.mean()
