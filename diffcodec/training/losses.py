"""Training losses shared by the methods: pixel, DISTS, edge-aware DISTS, latent cosine, GAN.

Every loss returns a scalar (mean over the batch) and is differentiable in its *inputs*; the networks
inside (the DISTS VGG16) are frozen. Images are (B, 3, H, W) in [0, 1].

- :func:`pixel_loss` — MSE (OSCAR paper Eq. 15's L2) or L1 (OSCAR's official code).
- :class:`DISTSLoss` — DISTS (Ding et al., TPAMI 2020, Eq. 10) with the VGG16 trunk and α/β weights of
  :class:`diffcodec.eval.metrics.DISTS` (offline weights), here with gradients and without the [0, 1]
  range check, so it also takes edge maps.
- :func:`sobel_magnitude` and :meth:`DISTSLoss.edge_aware` — OSCAR's edge-aware DISTS (paper Eq. 15, after
  Ding et al.'s practice [14]): DISTS between Sobel magnitude maps of the grey images (official
  ``main_train.py``).
- :func:`latent_cosine_similarity` — cosine similarity of two latents per spatial position (across
  channels; OSCAR Eq. 6/9) or per channel (across positions; OSCAR's official stage-2 loss).
- :func:`generator_loss` / :func:`discriminator_loss` — non-saturating GAN (Goodfellow et al. 2014; OSCAR
  Eq. 16, with D(·) = sigmoid(logit)) and the hinge variant.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffcodec.nn.backbone import load_component

__all__ = [
    "DISTSLoss",
    "discriminator_loss",
    "generator_loss",
    "latent_cosine_similarity",
    "pixel_loss",
    "rgb_to_grey",
    "sobel_magnitude",
]

PixelLoss = Literal["mse", "l1"]
CosineAxis = Literal["position", "channel"]
GanLoss = Literal["non-saturating", "hinge"]


def pixel_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: PixelLoss = "mse") -> torch.Tensor:
    """Mean squared (``"mse"``) or absolute (``"l1"``) error over all elements."""
    if x_hat.shape != x.shape:
        raise ValueError(f"shapes differ: {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    if kind == "mse":
        return F.mse_loss(x_hat, x)
    if kind == "l1":
        return F.l1_loss(x_hat, x)
    raise ValueError(f"pixel loss must be 'mse' or 'l1', got {kind!r}")


def rgb_to_grey(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma as torchvision's ``Grayscale``: 0.2989·R + 0.587·G + 0.114·B → (B, 1, H, W)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a (B, 3, H, W) image, got {tuple(x.shape)}")
    weights = x.new_tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def sobel_magnitude(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Sobel gradient magnitude √(Gx² + Gy² + eps) of the grey image, zero padding (official
    ``main_train.py``).

    Input (B, 3, H, W) or (B, 1, H, W) in [0, 1]; output (B, 1, H, W), not rescaled (values up to ≈5.7).
    """
    grey = rgb_to_grey(x) if x.shape[1] == 3 else x
    if grey.ndim != 4 or grey.shape[1] != 1:
        raise ValueError(f"expected a (B, 3|1, H, W) image, got {tuple(x.shape)}")
    gx = grey.new_tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([gx, gx.t()]).unsqueeze(1)  # Gy is Gx transposed
    grad = F.conv2d(grey, kernels, padding=1)
    return (grad.square().sum(dim=1, keepdim=True) + eps).sqrt()


class DISTSLoss(nn.Module):
    """DISTS as a differentiable loss (mean over the batch), frozen VGG16 + α/β of the evaluation metric.

    Unlike the metric, inputs are not range-checked (edge maps exceed 1) and 1-channel inputs are repeated
    to 3 channels — equivalent to pyiqa's broadcast of a 1-channel map (official ``main_train.py`` step 4).
    """

    def __init__(self) -> None:
        super().__init__()
        from diffcodec.eval.metrics import DISTS

        self.net = DISTS()
        self.net.requires_grad_(False)

    def train(self, mode: bool = True) -> DISTSLoss:
        return super().train(False)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = (x - self.net.mean) / self.net.std
        features = [x]
        for stage in self.net.stages:
            h = stage(h)
            features.append(h)
        return features

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x_hat.shape != x.shape or x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"expected two (B, 3|1, H, W) tensors, got {tuple(x_hat.shape)}, {tuple(x.shape)}"
            )
        if x.shape[1] == 1:
            x_hat, x = x_hat.expand(-1, 3, -1, -1), x.expand(-1, 3, -1, -1)
        c1 = c2 = 1e-6
        total = self.net.alpha.sum() + self.net.beta.sum()
        alphas = torch.split(self.net.alpha / total, self.net.channels, dim=1)
        betas = torch.split(self.net.beta / total, self.net.channels, dim=1)
        distance = x.new_ones(x.shape[0])
        for f0, f1, alpha, beta in zip(self._features(x), self._features(x_hat), alphas, betas):
            mean0, mean1 = f0.mean((2, 3), keepdim=True), f1.mean((2, 3), keepdim=True)
            structure = (2 * mean0 * mean1 + c1) / (mean0**2 + mean1**2 + c1)
            var0 = (f0 - mean0).square().mean((2, 3), keepdim=True)
            var1 = (f1 - mean1).square().mean((2, 3), keepdim=True)
            cov = (f0 * f1).mean((2, 3), keepdim=True) - mean0 * mean1
            texture = (2 * cov + c2) / (var0 + var1 + c2)
            distance = distance - (alpha * structure + beta * texture).sum(dim=(1, 2, 3))
        return distance.mean()

    def edge_aware(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """DISTS between the Sobel magnitude maps S(x̂) and S(x) (OSCAR's L_EA-DISTS)."""
        return self(sobel_magnitude(x_hat), sobel_magnitude(x))


def latent_cosine_similarity(a: torch.Tensor, b: torch.Tensor, axis: CosineAxis = "position") -> torch.Tensor:
    """Mean cosine similarity of two (B, C, H, W) latents, per batch item → (B,).

    ``"position"``: one C-vector per spatial position (OSCAR Eq. 6 and 9: the N vectors of z₀; the
    official stage-1 loss). ``"channel"``: one H·W-vector per channel (the official stage-2 loss).
    Vectors are normalised with eps 1e-8 (``F.cosine_similarity``).
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(
            f"expected two (B, C, H, W) tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    if axis == "position":
        return F.cosine_similarity(a, b, dim=1).flatten(1).mean(dim=1)
    if axis == "channel":
        return F.cosine_similarity(a.flatten(2), b.flatten(2), dim=2).mean(dim=1)
    raise ValueError(f"axis must be 'position' or 'channel', got {axis!r}")


def generator_loss(fake_logits: torch.Tensor, kind: GanLoss = "non-saturating") -> torch.Tensor:
    """Generator loss: −log σ(D(x̂)) = softplus(−logit) (non-saturating), or −logit (hinge)."""
    if kind == "non-saturating":
        return F.softplus(-fake_logits).mean()
    if kind == "hinge":
        return -fake_logits.mean()
    raise ValueError(f"GAN loss must be 'non-saturating' or 'hinge', got {kind!r}")


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: GanLoss = "non-saturating"
) -> torch.Tensor:
    """Discriminator loss: ½[BCE(real, 1) + BCE(fake, 0)] (non-saturating), or ½[relu(1−r) + relu(1+f)]."""
    if kind == "non-saturating":
        real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
        fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        return 0.5 * (real + fake)
    if kind == "hinge":
        return 0.5 * (F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean())
    raise ValueError(f"GAN loss must be 'non-saturating' or 'hinge', got {kind!r}")


class LPIPSLoss(nn.Module):
    """LPIPS v0.1 (Zhang et al., CVPR 2018) as a differentiable loss on images in [−1, 1] (batch mean).

    The reference ``lpips`` package with the offline ImageNet trunk of :mod:`diffcodec.eval.backbones`
    (StableCodec: ``lpips.LPIPS(net='vgg')``, official ``training_utils.py``). Frozen.
    """

    def __init__(self, net: Literal["alex", "vgg"] = "vgg") -> None:
        super().__init__()
        import lpips

        from diffcodec.eval.backbones import load_conv_weights

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
        load_conv_weights(self.model.net, "alexnet" if net == "alex" else "vgg16")
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPSLoss:
        return super().train(False)

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        return self.model(x_hat, x, normalize=False).mean()


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPLoss(nn.Module):
    """‖ê(x) − ê(x̂)‖₂ between L2-normalised CLIP image embeddings, batch mean (StableCodec ``CLIPLoss``).

    Preprocessing as the official ``training_utils.py``: (v + 1)/2 → resize the shorter side to 224
    (bilinear, no
    antialias) → centre crop 224 → CLIP normalisation. ``model``: a hub id or folder of a
    ``CLIPVisionModelWithProjection`` (``openai/clip-vit-base-patch32``), or a config dict (random init).
    """

    def __init__(
        self, model: str | Mapping[str, Any] = "openai/clip-vit-base-patch32", size: int = 224
    ) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        if isinstance(model, Mapping):
            self.model = CLIPVisionModelWithProjection(CLIPVisionConfig(**model))
        else:
            self.model = load_component(CLIPVisionModelWithProjection.from_pretrained, model, "")
        self.size = int(model.get("image_size", size)) if isinstance(model, Mapping) else size
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> CLIPLoss:
        return super().train(False)

    def embed(self, x: Tensor) -> Tensor:
        x = (x + 1) / 2
        h, w = x.shape[-2:]
        short = min(h, w)
        size = (
            (self.size, max(self.size, int(self.size * w / short)))
            if h <= w
            else (int(self.size * h / short), self.size)
        )
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        top, left = (x.shape[-2] - self.size) // 2, (x.shape[-1] - self.size) // 2
        x = x[..., top : top + self.size, left : left + self.size]
        embeds = self.model(pixel_values=(x - self.mean) / self.std).image_embeds
        return F.normalize(embeds, dim=-1)

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        with torch.no_grad():
            target = self.embed(x)
        return (self.embed(x_hat) - target).norm(dim=-1).mean()


# ---------------------------------------------------------------------------------------------- discriminator
