"""FID and KID on 256-pixel patches (Mentzer et al., HiFiC, NeurIPS 2020, "FID/256").

A data set of a few dozen large images gives too few samples for a Fréchet distance in 2048
dimensions, so every image is cut into non-overlapping ``p × p`` patches (row-major, the remainder at
the right / bottom dropped), and — when the image is at least ``1.5 p`` on both sides — cut a second
time after dropping the first ``p / 2`` rows and columns (the "half-patch-shifted pass"). Each patch
is a sample. This is NeuralCompression's ``update_patch_fid`` (MS-ILLM) which StableCodec, OneDC and
CADC follow. A Kodak image (768×512) gives 3·2 + 2·1 = 8 patches.

Features are the standard FID Inception pool3 features (:class:`~diffcodec.eval.backbones.FIDInceptionV3`).
The runner computes them once per image and caches them, so the originals' features are shared by
every model and rung; :func:`fid_kid` then feeds the stored features to torchmetrics'
``FrechetInceptionDistance`` and ``KernelInceptionDistance``.

Below ``min_samples`` patches (default 2048, the feature dimension: fewer samples give a rank-deficient
covariance and a biased FID) the set-level metrics are skipped with a message, as the papers do on
Kodak (24 images → 192 patches).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from diffcodec.eval.backbones import FIDInceptionV3
from diffcodec.eval.metrics import to_uint8

__all__ = [
    "DEFAULT_MIN_SAMPLES",
    "PatchFeatures",
    "extract_patches",
    "fid_kid",
    "patch_corners",
    "patch_count",
]

#: Fewest patches for which FID / KID are reported (the Inception feature dimension).
DEFAULT_MIN_SAMPLES = 2048


def _check_patch_size(patch_size: int) -> None:
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 2 or patch_size % 2:
        raise ValueError(f"patch_size must be an even integer >= 2, got {patch_size!r}")


def patch_corners(height: int, width: int, patch_size: int = 256) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of every patch, the aligned grid first, then the shifted one."""
    _check_patch_size(patch_size)
    corners = [
        (y, x)
        for y in range(0, height - patch_size + 1, patch_size)
        for x in range(0, width - patch_size + 1, patch_size)
    ]
    if height >= 1.5 * patch_size and width >= 1.5 * patch_size:
        half = patch_size // 2
        corners += [
            (half + y, half + x)
            for y in range(0, height - half - patch_size + 1, patch_size)
            for x in range(0, width - half - patch_size + 1, patch_size)
        ]
    return corners


def patch_count(height: int, width: int, patch_size: int = 256) -> int:
    """Number of patches one ``height × width`` image contributes (both passes)."""
    return len(patch_corners(height, width, patch_size))


def extract_patches(image: torch.Tensor, patch_size: int = 256) -> torch.Tensor:
    """Cut (N, 3, H, W) images into (M, 3, p, p) uint8 patches, in :func:`patch_corners` order per image."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an (N, 3, H, W) image batch, got shape {tuple(image.shape)}")
    image = to_uint8(image)
    corners = patch_corners(image.shape[-2], image.shape[-1], patch_size)
    if not corners:
        return image.new_zeros((0, 3, patch_size, patch_size))
    patches = [image[:, :, y : y + patch_size, x : x + patch_size] for y, x in corners]
    # (patches, N, ...) → (N, patches, ...): all patches of the first image first
    return torch.stack(patches, dim=1).reshape(-1, 3, patch_size, patch_size).contiguous()


class PatchFeatures:
    """Features of an image's patches: (1, 3, H, W) → (patches, D) float32 on the CPU.

    The network defaults to the FID Inception (D = 2048), built on first use. Any module that maps
    uint8 (M, 3, p, p) patches to (M, D) and has a ``num_features`` attribute can replace it (as
    torchmetrics' ``feature=`` argument allows), e.g. for FID in another feature space.
    """

    def __init__(
        self,
        patch_size: int = 256,
        device: str = "cpu",
        network: nn.Module | None = None,
        batch_size: int = 16,
    ) -> None:
        _check_patch_size(patch_size)
        if network is not None and not isinstance(getattr(network, "num_features", None), int):
            raise ValueError("a custom feature network needs an integer `num_features` attribute")
        self.patch_size = patch_size
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._network = network.to(self.device) if network is not None else None
        self.name = "fid-inception-2015-12-05" if network is None else type(network).__name__

    @property
    def network(self) -> nn.Module:
        if self._network is None:
            self._network = FIDInceptionV3(batch_size=self.batch_size).to(self.device)
        return self._network

    @property
    def num_features(self) -> int:
        return FIDInceptionV3.num_features if self._network is None else int(self._network.num_features)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        patches = extract_patches(image, self.patch_size)
        if patches.shape[0] == 0:
            return torch.zeros(0, self.num_features)
        with torch.inference_mode():
            return self.network(patches.to(self.device)).float().cpu()


class _Precomputed(nn.Module):
    """Feature 'extractor' for torchmetrics when the features are already computed."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    metrics: tuple[str, ...] = ("fid", "kid"),
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """FID and/or KID between two sets of features (each (M, D); D = 2048 for the FID Inception).

    KID uses torchmetrics' defaults (100 subsets of 1000, cubic polynomial kernel), the subset size
    capped at the number of samples; its subsets are drawn with a fixed ``seed``, so reruns agree.
    Returns ``{"fid": …, "kid": …, "kid_std": …}`` (those requested).
    """
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            "features must be (M, D) matrices of one width D, "
            f"got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    for name, feats in (("real", real), ("fake", fake)):
        if feats.shape[0] < 2:
            raise ValueError(f"FID/KID need at least 2 samples per set, got {feats.shape[0]} {name} patches")
    unknown = set(metrics) - {"fid", "kid"}
    if unknown:
        raise ValueError(f"fid_kid computes 'fid' and 'kid', not {sorted(unknown)}")
    out: dict[str, float] = {}
    if "fid" in metrics:
        fid = FrechetInceptionDistance(feature=_Precomputed(real.shape[1]))
        fid.update(real.double(), real=True)
        fid.update(fake.double(), real=False)
        out["fid"] = float(fid.compute())
    if "kid" in metrics:
        size = min(kid_subset_size, real.shape[0], fake.shape[0])
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            kid = KernelInceptionDistance(
                feature=_Precomputed(real.shape[1]), subsets=kid_subsets, subset_size=size
            )
        kid.update(real.double(), real=True)
        kid.update(fake.double(), real=False)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            mean, std = kid.compute()
        out["kid"] = float(mean)
        out["kid_std"] = float(std)
    return out
