"""The reference recipe end to end: shards written by ``diffcodec shards`` from the bundled photos, a few
training steps through ``diffcodec fit`` with real-coding validation, export, and ``diffcodec.load`` of the
export producing the same bitstreams as the trained checkpoint."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

import diffcodec
from diffcodec.data import cli as data_cli
from diffcodec.training.cli import run_argv
from diffcodec.training.export import codec_from_checkpoint
from diffcodec.training.init import read_lightning_checkpoint

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "reference" / "small_cpu.yaml"


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory, photos_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("shards")
    assert data_cli.main([str(photos_dir), str(out / "photos"), "--max-count", "12"]) == 0
    return out / "photos"


def small_val_dir(root: Path, kodak_dir: Path) -> Path:
    """One 256×192 crop of a Kodak image: whole-image validation stays cheap on CPU."""
    folder = root / "val"
    folder.mkdir()
    Image.open(kodak_dir / "kodim23.png").crop((200, 100, 456, 292)).save(folder / "kodim23-crop.png")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, shards: Path, kodak_dir: Path) -> Path:
    """Train the reference recipe for 3 batches from the shards; returns the run folder."""
    root = tmp_path_factory.mktemp("run")
    val_dir = small_val_dir(root, kodak_dir)
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["model"]["init_args"]["codec"]["init_args"].update(
        channels=16, latent_channels=16, hyper_channels=8
    )
    recipe["data"] = {
        "class_path": "diffcodec.data.WebDatasetDataModule",
        "init_args": {
            "shards": str(shards),
            "val_dir": str(val_dir),
            "crops": 128,
            "batch_size": 2,
            "num_workers": 0,
            "batches_per_epoch": 3,
            "shuffle_buffer": 8,
            "val_max_images": 1,
        },
    }
    recipe["trainer"].update(
        max_steps=6,
        val_check_interval=3,
        limit_val_batches=1,
        default_root_dir=str(root),
        log_every_n_steps=1,
    )
    for logger in recipe["trainer"]["logger"]:
        logger["init_args"]["save_dir"] = str(root / logger["init_args"]["save_dir"])
    config = root / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    assert run_argv("fit", ["-c", str(config)]) == 0
    return root


def _metrics(run: Path) -> list[dict[str, str]]:
    (path,) = run.glob("runs/csv/reference-small/version_*/metrics.csv")
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_recipe_trains_from_shards_and_validates_by_real_coding(trained: Path) -> None:
    rows = _metrics(trained)
    logged = {key for row in rows for key, value in row.items() if value}
    assert {
        "train/loss",
        "val/loss_q0",
        "val/real_bpp_q0",
        "val/real_psnr_q2",
        "val/real_msssim_q1",
    } <= logged
    bpp = [float(row["val/real_bpp_q0"]) for row in rows if row.get("val/real_bpp_q0")]
    assert bpp and all(0 < value < 24 for value in bpp)
    assert any(trained.glob("runs/reference-small/version_*/reconstructions/step*.png"))
    assert any(trained.glob("runs/reference-small/version_*/events.out.tfevents.*"))


def test_export_loads_back_with_identical_bitstreams(trained: Path, tmp_path: Path) -> None:
    (checkpoint,) = trained.glob("runs/reference-small/version_*/checkpoints/last.ckpt")
    assert read_lightning_checkpoint(checkpoint)["global_step"] == 6
    out = tmp_path / "exported"
    assert run_argv("export", [str(checkpoint), str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "README.md"}
    trained_codec = codec_from_checkpoint(checkpoint)
    loaded = diffcodec.load(out)
    image = torch.rand(1, 3, 100, 150)
    for quality in range(trained_codec.num_rungs):
        assert (
            loaded.compress(image, quality=quality).to_bytes()
            == trained_codec.compress(image, quality=quality).to_bytes()
        )
    assert run_argv("export", [str(trained / "missing.ckpt"), str(tmp_path / "x")]) == 2
