"""The four small models shipped inside the package: listed in the zoo, loadable offline by name, and
above a quality floor on four Kodak images (a regression guard set from measurement, not a target).

The floors come from ``python benchmarks/bundled_quality.py`` (the same measurement as this test) on the
shipped weights: bpp ceilings 10 % above, PSNR floors 0.3 dB below and LPIPS ceilings 0.02 above the
measured per-rung means. A retrained model that is worse than the shipped one fails here. (It does not
require the rate to grow with the rung: the shipped OneDC ladder's short per-λ runs do not separate on
Kodak, see docs/bundled.md.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import diffcodec
from diffcodec.zoo.loader import bundled_folder
from diffcodec.zoo.registry import get_entry

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
BUNDLED = ("oscar-small", "onedc-small", "stablecodec-small", "cadc-small")

#: measured per-rung means (bpp, PSNR dB, LPIPS-Alex) on FLOOR_IMAGES; see the module docstring
MEASURED: dict[str, list[tuple[float, float, float]]] = json.loads(
    (Path(__file__).parent / "data" / "bundled_quality.json").read_text()
)["measured"]


def floors(bpp: float, psnr: float, lpips: float) -> tuple[float, float, float]:
    return bpp * 1.10, psnr - 0.3, lpips + 0.02


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_is_in_the_zoo_and_in_the_package(name: str) -> None:
    entry = get_entry(name)
    folder = bundled_folder(entry)
    assert folder is not None, f"{name} is not bundled at diffcodec/{entry.bundled_path}"
    config = json.loads((folder / "config.json").read_text())
    assert tuple(config["rates"]) == pytest.approx(entry.rates), "registry rates ≠ the model's own"
    assert len(entry.rates) >= 3
    assert (folder / "model.safetensors").stat().st_size < 32e6
    card = (folder / "README.md").read_text()
    assert "## Training record" in card and "diffcodec fit" in card


@pytest.mark.heavy
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_quality_floor(name: str, kodak_dir: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bundled_quality", BENCH / "bundled_quality.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    codec = diffcodec.load(name)
    measured = bench.measure(codec, kodak_dir)
    assert len(measured) == codec.num_rungs == len(MEASURED[name])
    for rung, ((bpp, psnr, lpips), reference) in enumerate(zip(measured, MEASURED[name])):
        max_bpp, min_psnr, max_lpips = floors(*reference)
        assert bpp <= max_bpp, f"{name} rung {rung}: {bpp:.4f} bpp > {max_bpp:.4f}"
        assert psnr >= min_psnr, f"{name} rung {rung}: PSNR {psnr:.2f} dB < {min_psnr:.2f}"
        assert lpips <= max_lpips, f"{name} rung {rung}: LPIPS {lpips:.4f} > {max_lpips:.4f}"


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_round_trips_a_file(name: str, kodak_dir: Path, tmp_path: Path) -> None:
    codec = diffcodec.load(name, quality=0)
    image = kodak_dir / "kodim23.png"
    stream = codec.compress(image)
    path = tmp_path / "x.dcb"
    stream.to_file(path)
    again = codec.compress(image)
    assert again.to_bytes() == path.read_bytes(), "compress is not deterministic"
    x_hat = codec.decompress(diffcodec.Bitstream.from_file(path), output="tensor")
    assert x_hat.shape == (1, 3, 512, 768) and torch.isfinite(x_hat).all()


def test_a_folder_saved_with_training_settings_loads_with_a_warning(tmp_path: Path, kodak_dir: Path) -> None:
    """Folders written while the codecs carried their training settings (config.json ``stage``,
    ``learning_rate``, loss weights …) still load, say which settings they drop and code identically."""
    import shutil

    source = bundled_folder(get_entry("oscar-small"))
    folder = tmp_path / "old-oscar-small"
    shutil.copytree(source, folder)
    config = json.loads((folder / "config.json").read_text())
    assert "stage" not in config["init_args"]  # the shipped config holds architecture arguments only
    config["init_args"].update(stage=2, learning_rate=2e-4, gan_weight=0.0, gradient_clip=1.0)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.warns(
        UserWarning, match=r"training settings.*gan_weight, gradient_clip, learning_rate, stage"
    ):
        old = diffcodec.load(str(folder), quality=0)
    image = kodak_dir / "kodim23.png"
    assert (
        old.compress(image).to_bytes() == diffcodec.load("oscar-small", quality=0).compress(image).to_bytes()
    )
