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


def set_model_args(recipe: dict[str, Any], codec_class: type, **arguments: Any) -> None:
    """Update a method recipe's ``model`` (a training module wrapping ``codec``): arguments the codec's
    constructor takes go to ``model.init_args.codec.init_args``, the others to the training module."""
    import inspect

    codec_params = inspect.signature(codec_class.__init__).parameters
    model = recipe["model"]["init_args"]
    for key, value in arguments.items():
        (model["codec"]["init_args"] if key in codec_params else model)[key] = value


def build_training_module(
    recipe_path: Path, codec_class: type, training_class: type, **arguments: Any
) -> Any:
    """The training module (with its codec) a method recipe describes, with ``arguments`` routed as in
    :func:`set_model_args`."""
    recipe = yaml.safe_load(Path(recipe_path).read_text())
    set_model_args(recipe, codec_class, **arguments)
    model = dict(recipe["model"]["init_args"])
    codec = codec_class(**model.pop("codec")["init_args"])
    return training_class(codec, **model)
