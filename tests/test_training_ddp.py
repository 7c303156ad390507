"""The reference recipe under DDP: 2 CPU processes (gloo), different data per rank, exact resume.

Runs ``python -m diffcodec.training.cli fit`` in a subprocess, as ``diffcodec fit`` would; Lightning's
launcher starts the second rank by re-running that command. :class:`Recorder` (imported by both ranks from
this file, via PYTHONPATH) writes what each rank trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "reference" / "small_cpu.yaml"


class Recorder(Callback):
    """Writes ``rank{r}.json``: the step training started at, the digest of every batch, the final step."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.batches: list[str] = []
        self.start_step = -1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_step = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch: torch.Tensor, batch_idx: int) -> None:
        self.batches.append(hashlib.sha1(batch.cpu().numpy().tobytes()).hexdigest()[:12])

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "start": self.start_step,
            "end": trainer.global_step,
            "world": trainer.world_size,
            "batches": self.batches,
        }
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def tiny_ddp_recipe(tmp_path: Path, photos_dir: Path, kodak_dir: Path, record: Path) -> Path:
    val_dir = tmp_path / "val"  # one small whole image: validation stays cheap on CPU
    val_dir.mkdir(exist_ok=True)
    Image.open(kodak_dir / "kodim23.png").crop((200, 100, 456, 292)).save(val_dir / "kodim23-crop.png")
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["model"]["init_args"]["codec"]["init_args"].update(
        channels=16, latent_channels=16, hyper_channels=8
    )
    recipe["data"]["init_args"].update(
        train_dir=str(photos_dir),
        val_dir=str(val_dir),
        crops=128,
        batch_size=2,
        num_workers=0,
        val_max_images=1,
    )
    trainer = recipe["trainer"]
    trainer.update(
        strategy="ddp",
        devices=2,
        max_steps=6,
        val_check_interval=2,
        limit_val_batches=1,
        default_root_dir=str(tmp_path),
        log_every_n_steps=1,
    )
    trainer["logger"] = [
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": str(tmp_path), "name": "ddp"},
        }
    ]
    trainer["callbacks"] = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(tmp_path / "ckpt"), "every_n_train_steps": 4, "save_top_k": -1},
        },
        {
            "class_path": "diffcodec.training.RealCodingValidation",
            "init_args": {"num_images": 1, "grid": False},
        },
        {"class_path": "test_training_ddp.Recorder", "init_args": {"out_dir": str(record)}},
    ]
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def fit(config: Path, *extra: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "diffcodec.training.cli", "fit", "-c", str(config), *extra],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]


@pytest.mark.heavy
def test_ddp_two_ranks_see_different_data_and_resume(
    tmp_path: Path, photos_dir: Path, kodak_dir: Path
) -> None:
    config = tiny_ddp_recipe(tmp_path, photos_dir, kodak_dir, tmp_path / "first")
    fit(config)
    ranks = [json.loads((tmp_path / "first" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["end"] for r in ranks] == [6, 6]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) == 3  # 2 optimiser steps per batch
    assert not set(ranks[0]["batches"]) & set(ranks[1]["batches"])  # the ranks trained on different data
    metrics = (tmp_path / "ddp" / "version_0" / "metrics.csv").read_text()
    assert "val/real_bpp_q0" in metrics and "val/loss_q0" in metrics

    checkpoint = tmp_path / "ckpt" / "epoch=0-step=4.ckpt"
    assert checkpoint.is_file()
    resumed_config = tiny_ddp_recipe(tmp_path, photos_dir, kodak_dir, tmp_path / "resumed")
    fit(resumed_config, "--ckpt_path", str(checkpoint))
    resumed = [json.loads((tmp_path / "resumed" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["start"] for r in resumed] == [4, 4] and [r["end"] for r in resumed] == [6, 6]
    for before, after in zip(ranks, resumed):  # each rank continues with the batch it had not yet seen
        assert after["batches"] == before["batches"][2:]
