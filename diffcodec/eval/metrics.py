"""Per-image quality metrics, computed the same way for every method.

Protocol (``docs/evaluate.md``): both images are first rounded to 8 bits — what a PNG of the
reconstruction holds — and compared at full resolution, never resized.

=========  ====================================================================  ============
metric     definition                                                            better
=========  ====================================================================  ============
psnr       torchmetrics PSNR on 0–255 values, per image (mean over C·H·W)        higher
ms_ssim    torchmetrics MS-SSIM (Wang et al. 2003), RGB, data range 255,         higher
           Gaussian 11×11 σ=1.5, 5 scales, the usual β weights
lpips      LPIPS v0.1 (Zhang et al. 2018), AlexNet trunk — the LPIPS authors'     lower
           default and what MS-ILLM / StableCodec report
lpips_vgg  LPIPS v0.1 with the VGG16 trunk                                       lower
dists      DISTS (Ding et al. 2020, eq. 10), VGG16 trunk with L2 pooling         lower
=========  ====================================================================  ============

LPIPS is the reference ``lpips`` package (its own linear-layer weights); DISTS follows the reference
``DISTS_pt`` code with the α/β weights torchmetrics ships. The ImageNet trunks come from
:mod:`diffcodec.eval.backbones` (no download). torchmetrics' own LPIPS and DISTS classes cannot be
used here: they always fetch the torchvision weights from the internet in their constructors.
Set-level metrics (FID, KID on 256-pixel patches) are in :mod:`diffcodec.eval.patch_fid`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torchmetrics.functional.image import (
    multiscale_structural_similarity_index_measure,
    peak_signal_noise_ratio,
)

from diffcodec.eval.backbones import load_conv_weights, vgg16_features

__all__ = [
    "DEFAULT_METRICS",
    "DISTS",
    "LPIPS",
    "METRICS",
    "ImageMetrics",
    "MetricSpec",
    "ms_ssim",
    "psnr",
    "to_uint8",
]


@dataclass(frozen=True)
class MetricSpec:
    """What a metric is called, how to label an axis with it, and which direction is better."""

    name: str
    label: str
    higher_is_better: bool
    per_image: bool = True


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("psnr", "PSNR (dB)", True),
        MetricSpec("ms_ssim", "MS-SSIM", True),
        MetricSpec("lpips", "LPIPS (AlexNet)", False),
        MetricSpec("lpips_vgg", "LPIPS (VGG)", False),
        MetricSpec("dists", "DISTS", False),
        MetricSpec("fid", "FID (256-px patches)", False, per_image=False),
        MetricSpec("kid", "KID (256-px patches)", False, per_image=False),
    )
}

#: The metrics ``diffcodec eval`` computes unless told otherwise.
DEFAULT_METRICS = ("psnr", "ms_ssim", "lpips", "dists", "fid", "kid")

#: MS-SSIM's 5 scales with an 11-pixel window need at least this many pixels per side.
MS_SSIM_MIN_SIDE = 161


def _check_pair(original: torch.Tensor, reconstruction: torch.Tensor) -> None:
    for name, x in (("original", original), ("reconstruction", reconstruction)):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"{name} must be an (N, 3, H, W) image batch, got shape {tuple(x.shape)}")
    if original.shape != reconstruction.shape:
        raise ValueError(
            f"original {tuple(original.shape)} and reconstruction {tuple(reconstruction.shape)} differ in "
            "size; "
            "metrics compare images at full resolution, nothing is resized"
        )


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats (or uint8) → uint8, **rounded** as a PNG writer would (not truncated)."""
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 or floating point in [0, 1], got {x.dtype}")
    return x.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)


def psnr(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of a batch, on the 8-bit rounded images (``inf`` for identical images)."""
    _check_pair(original, reconstruction)
    a = to_uint8(original).double()
    b = to_uint8(reconstruction).double()
    return peak_signal_noise_ratio(b, a, data_range=255.0, reduction="none", dim=(1, 2, 3)).float()


def ms_ssim(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """MS-SSIM per image of a batch, on the 8-bit rounded RGB images (data range 255)."""
    _check_pair(original, reconstruction)
    height, width = original.shape[-2:]
    if min(height, width) < MS_SSIM_MIN_SIDE:
        raise ValueError(
            f"MS-SSIM needs images of at least {MS_SSIM_MIN_SIDE}x{MS_SSIM_MIN_SIDE} pixels "
            f"(5 scales, 11-pixel window); got {height}x{width}"
        )
    a = to_uint8(original).float()
    b = to_uint8(reconstruction).float()
    return multiscale_structural_similarity_index_measure(b, a, data_range=255.0, reduction="none").float()


class LPIPS(nn.Module):
    """LPIPS v0.1 (Zhang et al., CVPR 2018, eq. 1): the reference ``lpips`` package, offline trunk.

    ``net="alex"`` (default) or ``"vgg"``. Takes (N, 3, H, W) images in [0, 1]; returns (N,) distances.
    """

    def __init__(self, net: Literal["alex", "vgg"] = "alex") -> None:
        super().__init__()
        if net not in ("alex", "vgg"):
            raise ValueError(f"LPIPS net must be 'alex' or 'vgg', got {net!r}")
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" notice
            # pnet_rand=True: the trunk is built without weights (no download); we fill it below.
            self.model = lpips.LPIPS(net=net, version="0.1", pnet_rand=True, verbose=False)
        load_conv_weights(self.model.net, "alexnet" if net == "alex" else "vgg16")
        self.net_name = net
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)

    @torch.inference_mode()
    def forward(self, original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        _check_pair(original, reconstruction)
        return self.model(reconstruction, original, normalize=True).flatten()

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The unit-normalised trunk activations LPIPS compares (eq. 1's ŷˡ), for (N, 3, H, W) in [0, 1].

        Computed once per reference image, they serve every reconstruction of it (:class:`ImageMetrics`).
        """
        import lpips

        outs = self.model.net.forward(self.model.scaling_layer(2 * x - 1))
        return [lpips.normalize_tensor(outs[k]) for k in range(self.model.L)]

    @torch.inference_mode()
    def distance(self, reference: list[torch.Tensor], other: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS between two :meth:`features` results: Σ_l mean_hw ‖w_l ⊙ (ŷˡ − ŷ₀ˡ)‖², as ``lpips.LPIPS``."""
        import lpips

        total: torch.Tensor | int = 0
        for k, lin in enumerate(self.model.lins):
            total = total + lpips.spatial_average(lin((other[k] - reference[k]) ** 2), keepdim=True)
        assert isinstance(total, torch.Tensor)
        return total.flatten()


class DISTS(nn.Module):
    """DISTS (Ding, Ma, Wang & Simoncelli, TPAMI 2020, eqs. 8–10), as the reference ``DISTS_pt``.

    VGG16 with its max-pools replaced by L2 pooling (Hanning window); at each of the six stages (the
    image itself and relu1_2 … relu5_3) compare per-channel means (structure term, eq. 8) and
    variances / covariance (texture term, eq. 9), weighted by the learned α, β (eq. 10). Inputs in
    [0, 1], (N, 3, H, W); returns (N,) distances (0 = identical).
    """

    channels = (3, 64, 128, 256, 512, 512)

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.functional.image.dists import L2pooling

        features = vgg16_features()
        # features[4, 9, 16, 23] are the max-pools that DISTS replaces with L2 pooling.
        self.stages = nn.ModuleList(
            [
                nn.Sequential(*features[0:4]),
                nn.Sequential(L2pooling(channels=64), *features[5:9]),
                nn.Sequential(L2pooling(channels=128), *features[10:16]),
                nn.Sequential(L2pooling(channels=256), *features[17:23]),
                nn.Sequential(L2pooling(channels=512), *features[24:30]),
            ]
        )
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))
        weights = torch.load(_dists_weights_path(), map_location="cpu", weights_only=True)
        self.register_buffer("alpha", weights["alpha"].float().reshape(1, -1, 1, 1))
        self.register_buffer("beta", weights["beta"].float().reshape(1, -1, 1, 1))
        if self.alpha.shape[1] != sum(self.channels) or self.beta.shape[1] != sum(self.channels):
            raise ValueError(
                f"DISTS weights have {self.alpha.shape[1]} channels, expected {sum(self.channels)}"
            )
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> DISTS:
        return super().train(False)

    @torch.inference_mode()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six stages' feature maps of (N, 3, H, W) images in [0, 1] (the image itself first).

        Computed once per reference image, they serve every reconstruction of it (:class:`ImageMetrics`).
        """
        h = (x - self.mean) / self.std
        feats = [x]
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    @torch.inference_mode()
    def forward(self, original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
        _check_pair(original, reconstruction)
        return self.distance(self.features(original), self.features(reconstruction))

    @torch.inference_mode()
    def distance(self, feats0: list[torch.Tensor], feats1: list[torch.Tensor]) -> torch.Tensor:
        """DISTS (eq. 10) between the :meth:`features` of the original (``feats0``) and another image."""
        c1 = c2 = 1e-6
        total = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / total, self.channels, dim=1)
        betas = torch.split(self.beta / total, self.channels, dim=1)
        structure = texture = 0.0
        for f0, f1, alpha, beta in zip(feats0, feats1, alphas, betas):
            mean0, mean1 = f0.mean((2, 3), keepdim=True), f1.mean((2, 3), keepdim=True)
            s1 = (2 * mean0 * mean1 + c1) / (mean0**2 + mean1**2 + c1)
            var0 = ((f0 - mean0) ** 2).mean((2, 3), keepdim=True)
            var1 = ((f1 - mean1) ** 2).mean((2, 3), keepdim=True)
            cov = (f0 * f1).mean((2, 3), keepdim=True) - mean0 * mean1
            s2 = (2 * cov + c2) / (var0 + var1 + c2)
            structure = structure + (alpha * s1).sum(1, keepdim=True)
            texture = texture + (beta * s2).sum(1, keepdim=True)
        return (1 - (structure + texture)).flatten()


def _dists_weights_path() -> str:
    """The DISTS α/β file (Ding et al.'s ``weights.pt``) that torchmetrics ships with its package."""
    from importlib.resources import files

    path = files("torchmetrics.functional.image") / "dists_models" / "weights.pt"
    if not path.is_file():
        raise FileNotFoundError(f"DISTS weights not found at {path}; torchmetrics >= 1.7 ships them")
    return str(path)


class ImageMetrics:
    """Compute the per-image metrics of one (original, reconstruction) pair.

    Networks are built on first use and kept. ``timings`` holds the seconds each metric took in the
    last call. Images are (1, 3, H, W) floats in [0, 1] (or uint8); both are rounded to 8 bits first.

    ``reference_key`` (any string that identifies the original, e.g. its SHA-1) lets LPIPS and DISTS keep
    the original's features from one call to the next: evaluating several rungs or codecs of the same
    image then runs the network on the reconstruction only (half the work). The values are identical
    with and without it. One image's features are kept at a time, so call image by image.
    """

    def __init__(self, metrics: Iterable[str] = ("psnr", "ms_ssim", "lpips", "dists"), device: str = "cpu"):
        self.metrics = tuple(metrics)
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
        set_level = [m for m in self.metrics if not METRICS[m].per_image]
        if set_level:
            raise ValueError(f"{set_level} are set-level metrics; use diffcodec.eval.patch_fid for them")
        self.device = torch.device(device)
        self._networks: dict[str, nn.Module] = {}
        self._reference: dict[str, tuple[str, list[torch.Tensor]]] = {}  # network → (key, features)
        self.timings: dict[str, float] = {}

    def build(self) -> ImageMetrics:
        """Construct every network now (otherwise the first call pays for it)."""
        for name in self.metrics:
            if name not in ("psnr", "ms_ssim"):
                self._network(name)
        return self

    def _network(self, name: str) -> nn.Module:
        if name not in self._networks:
            if name == "lpips":
                network: nn.Module = LPIPS("alex")
            elif name == "lpips_vgg":
                network = LPIPS("vgg")
            else:
                network = DISTS()
            self._networks[name] = network.to(self.device)
        return self._networks[name]

    def _reference_features(self, name: str, original: torch.Tensor, key: str | None) -> list[torch.Tensor]:
        cached = self._reference.get(name)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        features = self._network(name).features(original)
        if key is None:
            self._reference.pop(name, None)
        else:
            self._reference[name] = (key, features)
        return features

    def __call__(
        self, original: torch.Tensor, reconstruction: torch.Tensor, reference_key: str | None = None
    ) -> dict[str, float]:
        _check_pair(original, reconstruction)
        a = to_uint8(original).to(self.device)
        b = to_uint8(reconstruction).to(self.device)
        values: dict[str, float] = {}
        self.timings = {}
        for name in self.metrics:
            start = time.perf_counter()
            if name == "psnr":
                value = psnr(a, b)
            elif name == "ms_ssim":
                value = ms_ssim(a, b)
            else:
                network = self._network(name)
                reference = self._reference_features(name, a.float() / 255.0, reference_key)
                value = network.distance(reference, network.features(b.float() / 255.0))
            values[name] = float(value[0])
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings[name] = time.perf_counter() - start
        return values
