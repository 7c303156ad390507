"""Shared by the recipe tests: turn a shipped recipe into a tiny, self-contained test run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def write_test_recipe(recipe: dict[str, Any], out_dir: Path, name: str, **trainer: Any) -> Path:
    """Log and checkpoint under ``out_dir / name`` (CSV logger, ``ckpt/last.ckpt``), one validation
    batch, no progress bar; ``trainer`` overrides max_steps etc. Returns the YAML file's path."""
    run_dir = out_dir / name
    recipe["trainer"].update(
        limit_val_batches=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
        default_root_dir=str(run_dir),
        logger=[
            {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run_dir)}}
        ],
        callbacks=[
            {
                "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                "init_args": {"dirpath": str(run_dir / "ckpt"), "filename": "last"},
            }
        ],
        **trainer,
    )
    path = out_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path
