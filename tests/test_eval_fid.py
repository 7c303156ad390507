"""The FID/KID patch protocol: patch counts on known sizes, patch order, the Inception front end, FID/KID."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffcodec.eval.backbones import FIDInceptionV3, resize_bilinear_tf1
from diffcodec.eval.patch_fid import PatchFeatures, extract_patches, fid_kid, patch_corners, patch_count


@pytest.mark.parametrize(
    ("height", "width", "patch", "expected"),
    [
        (512, 768, 256, 3 * 2 + 2 * 1),  # Kodak landscape: 6 aligned + 2 shifted
        (768, 512, 256, 8),  # Kodak portrait
        (1356, 2040, 256, 5 * 7 + 4 * 7),  # a DIV2K-size image
        (256, 256, 256, 1),  # too small for the shifted pass (needs 1.5 patches per side)
        (383, 1000, 256, 3),  # 383 < 384: still no shifted pass
        (384, 384, 256, 2),  # exactly 1.5 patches: one shifted patch
        (255, 4000, 256, 0),
        (64, 64, 32, 4 + 1),
    ],
)
def test_patch_count_on_known_sizes(height: int, width: int, patch: int, expected: int) -> None:
    assert patch_count(height, width, patch) == expected


def test_patches_match_the_unfold_reference() -> None:
    """Same patches, same order, as NeuralCompression's update_patch_fid (F.unfold, then the p/2 shift)."""
    p = 16
    image = torch.randint(
        0, 256, (1, 3, 40, 56), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )

    def unfold(x: torch.Tensor) -> torch.Tensor:
        return (
            F.unfold(x.float(), kernel_size=p, stride=p).permute(0, 2, 1).reshape(-1, 3, p, p).to(torch.uint8)
        )

    reference = torch.cat([unfold(image), unfold(image[:, :, p // 2 :, p // 2 :])])
    patches = extract_patches(image, p)
    assert patches.dtype == torch.uint8
    assert patches.shape == (patch_count(40, 56, p), 3, p, p) == reference.shape
    assert torch.equal(patches, reference)
    assert patch_corners(40, 56, p)[-1] == (8 + 16, 8 + 32)  # last patch of the shifted grid
    with pytest.raises(ValueError, match="even integer"):
        patch_count(100, 100, 33)


def test_tf1_bilinear_resize_hand_computed() -> None:
    x = torch.tensor([[[[0.0, 10.0]]]])
    # TF1 (align_corners=False, no half-pixel centres): source x = i * 2 / 4 → 0, 0.5, 1, 1.5 (clamped)
    assert resize_bilinear_tf1(x, (1, 4)).flatten().tolist() == [0.0, 5.0, 10.0, 10.0]
    assert torch.equal(resize_bilinear_tf1(x, (1, 2)), x)


def test_inception_features_on_a_few_patches() -> None:
    inception = FIDInceptionV3()
    patches = torch.randint(
        0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    features = inception(patches)
    assert features.shape == (2, 2048) and features.dtype == torch.float32
    assert torch.all(features >= 0) and not torch.equal(features[0], features[1])  # pooled ReLU outputs
    assert torch.equal(inception(patches[:1]), features[:1])
    with pytest.raises(ValueError, match="uint8"):
        inception(patches.float())
    extractor = PatchFeatures(patch_size=16, network=inception)
    image = torch.rand(1, 3, 20, 20)  # one 16-px patch (too small for the shifted pass)
    assert extractor(image).shape == (patch_count(20, 20, 16), 2048) == (1, 2048)
    assert PatchFeatures(patch_size=64)(image).shape == (0, 2048)


def test_fid_and_kid_on_hand_computed_feature_sets() -> None:
    # 64-d features keep torchmetrics' eigen-decomposition fast; the maths does not depend on D
    real = torch.randn(200, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    shifted = real + 0.5  # same covariance, mean moved by 0.5 in every dimension → FID = 64 · 0.25
    result = fid_kid(real, shifted, kid_subsets=20)
    assert result["fid"] == pytest.approx(16.0, rel=1e-4)
    same = fid_kid(real, real.clone(), metrics=("fid", "kid"), kid_subsets=20)
    assert abs(same["fid"]) < 1e-2
    assert abs(same["kid"]) < result["kid"] and result["kid"] > 0
    # KID subsets are drawn with a fixed seed: reproducible
    assert fid_kid(real, shifted, metrics=("kid",), kid_subsets=20)["kid"] == result["kid"]
    with pytest.raises(ValueError, match="at least 2"):
        fid_kid(real[:1], shifted)
    with pytest.raises(ValueError, match="one width"):
        fid_kid(real[:, :10], shifted)
    assert math.isfinite(result["kid_std"])
