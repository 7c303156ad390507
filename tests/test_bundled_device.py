"""``recipes/bundled/device.sh`` (the one-call GPU retraining of the bundled models) works: its CPU mode at
tiny sizes and steps, in a fresh shell, on a copy of the scripts (it replaces runs/ where it runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

import diffcodec

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _tiny_data(root: Path) -> Path:
    """Three training photos (short side 160 px) and one Kodak image (96×64): never the same images."""
    photos, kodak = root / "photos", root / "kodak"
    photos.mkdir(parents=True)
    kodak.mkdir()
    for path in sorted((SHARED / "photos").glob("*.png"))[:3]:
        image = Image.open(path).convert("RGB")
        scale = 160 / min(image.size)
        image.resize((round(image.width * scale), round(image.height * scale))).save(
            photos / f"{path.stem}.jpg"
        )
    Image.open(SHARED / "kodak" / "kodim23.png").convert("RGB").resize((96, 64)).save(kodak / "kodim23.png")
    return root


@pytest.mark.heavy
@pytest.mark.skipif(not (SHARED / "photos").is_dir(), reason="needs ../shared/data (photos and Kodak)")
def test_device_script_runs_on_the_cpu_at_tiny_size(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "recipes", repo / "recipes")
    (repo / "benchmarks").mkdir()
    for name in ("device_env.sh", "device_wheels.txt"):
        shutil.copy(ROOT / "benchmarks" / name, repo / "benchmarks" / name)
    out = tmp_path / "out"
    env = {
        **os.environ, "DEVICE_TINY": "1", "DATA": str(_tiny_data(tmp_path / "data")), "OUT": str(out),
        "PYTHON": sys.executable, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
        "DEVICE_TARGETS": "base stablecodec", "SWEEP_LAMBDAS_STABLECODEC": "0.5 0.005",
        "SWEEP_TARGETS": "0.02 0.1",
        "LADDER_STABLECODEC": "0.5 0.005",  # two rungs also where the tiny sweep's fit fails (it keeps these)
    }  # fmt: skip
    done = subprocess.run(
        ["bash", str(repo / "recipes" / "bundled" / "device.sh")], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=1800, check=False,
    )  # fmt: skip
    log = done.stdout[-4000:] + done.stderr[-3000:]
    assert done.returncode == 0, log
    results = repo / "runs" / "device"
    record = [line.split("\t") for line in (results / "record.tsv").read_text().splitlines()]
    assert {(tag, phase) for tag, phase, *_ in record} >= {
        ("base", "base"), ("stablecodec", "stage1"), ("stablecodec", "sweep"), ("stablecodec", "ladder"),
        ("stablecodec", "rungs"), ("stablecodec", "export"),
    }  # fmt: skip
    fits = [row for row in record if row[5].startswith("diffcodec fit")]
    assert len(fits) == 3 + 1 + 2 + 2  # VAE + 2 U-Nets, stage 1, 2 sweep runs, 2 rungs (one per target)
    assert all(row[3] == "2" and float(row[4]) > 0 for row in fits), fits  # --trainer.max_steps 2
    assert all("--data diffcodec.data.CropBankDataModule" in row[5] for row in fits)
    sweep = json.loads((results / "stablecodec-sweep.json").read_text())
    assert [point["lambda"] for point in sweep["points"]] == [0.5, 0.005]
    assert all(point["bpp"] > 0 for point in sweep["points"])  # real files of the training photos
    check = json.loads((results / "stablecodec-ladder-check.json").read_text())
    assert len(check["rates"]) == 2 and check["min_ratio"] == 1.5  # LADDER_CHECK=warn: reported, not fatal
    # what comes back from the device: at most 8 files of 16 MiB; the split model archive reassembles
    files = sorted(p.name for p in out.iterdir())
    assert {"log.txt", "results.md", "results.tar.gz"} <= set(files) and len(files) <= 8, files
    assert all(p.stat().st_size <= 16 * 2**20 for p in out.iterdir())
    archive = tmp_path / "models.tar"
    archive.write_bytes(b"".join(p.read_bytes() for p in sorted(out.glob("models.tar.part-*"))))
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "models", filter="data")
    codec = diffcodec.load(str(tmp_path / "models" / "stablecodec-small"))
    assert codec.num_rungs == 2 and list(codec.rates) == sorted(codec.rates)
    assert "| stablecodec | rungs |" in (tmp_path / "models" / "stablecodec-small" / "README.md").read_text()
    # Kodak: the model and the anchors in one table
    per_rung = json.loads((results / "eval" / "per_rung.json").read_text())["rungs"]
    assert {row["model"] for row in per_rung} >= {"stablecodec-small", "jpeg", "webp"}
    assert all(row["images"] == 1 and row["bpp"] > 0 and row["psnr"] > 0 for row in per_rung)
    summary = (out / "results.md").read_text()
    assert "| stablecodec-small |" in summary and "## Training record" in summary
