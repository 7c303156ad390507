"""ELIC g_a (StableCodec's frozen E_Aux): size, official key layout, checkpoint loading, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffcodec.nn.elic import OFFICIAL_PREFIX, ELICAnalysisTransform

DTYPES = {"int32": torch.int32, "float32": torch.float32}


@pytest.fixture(scope="module")
def manifest(shared_dir: Path) -> dict:
    return json.loads((shared_dir / "specs" / "manifests" / "elic_ckpt.json").read_text())


@pytest.fixture(scope="module")
def full_size() -> ELICAnalysisTransform:
    torch.manual_seed(0)
    return ELICAnalysisTransform().eval()


def _official_file(manifest: dict, g_a: ELICAnalysisTransform) -> dict[str, torch.Tensor]:
    """A stand-in for elic_official.pth: every key of the whole ELIC model, g_a values taken from ``g_a``."""
    odd_dtypes = manifest["_meta"]["nonfloat32_dtypes"]
    checkpoint = {
        key: torch.empty(shape, dtype=DTYPES[odd_dtypes.get(key, "float32")])
        for key, shape in manifest["full_class_state_dict"].items()
    }
    checkpoint.update({OFFICIAL_PREFIX + key: value for key, value in g_a.state_dict().items()})
    return checkpoint


def test_full_size_matches_spec(full_size: ELICAnalysisTransform, manifest: dict) -> None:
    """7,337,792 parameters (stablecodec.md §9) and exactly the 138 official g_a keys and shapes."""
    assert sum(p.numel() for p in full_size.parameters()) == 7_337_792 == manifest["_meta"]["g_a_param_count"]
    ours = {OFFICIAL_PREFIX + key: list(value.shape) for key, value in full_size.state_dict().items()}
    assert ours == manifest["g_a_subset_used"]


def test_output_is_stride_16_with_320_channels(full_size: ELICAnalysisTransform) -> None:
    with torch.no_grad():
        assert full_size(torch.rand(1, 3, 64, 96)).shape == (1, 320, 4, 6)
        assert full_size(torch.rand(2, 3, 33, 50)).shape == (2, 320, 3, 4)  # ⌈·/2⌉ four times


def test_loads_official_layout_and_ignores_other_keys(
    full_size: ELICAnalysisTransform, manifest: dict
) -> None:
    checkpoint = _official_file(manifest, full_size)
    fresh = ELICAnalysisTransform()
    ignored = fresh.load_official_state_dict(checkpoint)
    assert sorted(ignored) == sorted(k for k in manifest["full_class_state_dict"] if not k.startswith("g_a."))
    for key, value in full_size.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_from_official_path_round_trip(tmp_path: Path) -> None:
    """A small config saved in the official flat layout (plus foreign keys) reloads to the same function."""
    reference = ELICAnalysisTransform(N=32, M=48).eval()
    checkpoint = {OFFICIAL_PREFIX + key: value for key, value in reference.state_dict().items()}
    checkpoint["g_s.synthesis_transform.0.weight"] = torch.randn(48, 32, 5, 5)
    checkpoint["entropy_bottleneck._offset"] = torch.zeros(0, dtype=torch.int32)
    path = tmp_path / "elic_official.pth"
    torch.save(checkpoint, path)
    loaded = ELICAnalysisTransform.from_official(path, N=32, M=48).eval()
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x), atol=0, rtol=0)


def test_loading_errors_are_explicit() -> None:
    small = ELICAnalysisTransform(N=32, M=48)
    checkpoint = {OFFICIAL_PREFIX + key: value for key, value in small.state_dict().items()}
    with pytest.raises(KeyError, match=r"no 'g_a\.\*' keys"):
        small.load_official_state_dict({"g_s.0.weight": torch.zeros(1)})
    missing = dict(checkpoint)
    del missing["g_a.analysis_transform.14.conv_b.3.bias"]
    with pytest.raises(KeyError, match=r"1 missing .*analysis_transform\.14\.conv_b\.3\.bias"):
        small.load_official_state_dict(missing)
    with pytest.raises(ValueError, match="does not match"):
        ELICAnalysisTransform(N=32, M=64).load_official_state_dict(checkpoint)


def test_rejects_non_rgb_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ELICAnalysisTransform(N=32, M=48)(torch.rand(1, 4, 32, 32))
