"""Benchmark: training steps per second of recipe phases, the old pipeline against the new one.

For each ``--recipe`` (default: the three phases issue 19 names, ``recipes/base/vae.yaml``,
``recipes/base/unet_eps.yaml`` and stage 1 of ``recipes/oscar/bundled.yaml``) it runs ``diffcodec fit``'s
LightningCLI on the recipe twice and times ``--steps`` training batches after ``--warmup`` batches:

- **old**: the recipe as it is (``ImageFolderDataModule``: a whole photo decoded for every crop, in
  ``num_workers`` workers), ``precision 32-true``, no throughput options;
- **new**: the same data arguments through ``CropBankDataModule`` (photos decoded once, crops cut on the
  training device), ``--precision`` (``auto``: ``bf16-mixed`` on a CUDA card with bf16, else ``32-true``:
  on the CPU bf16 autocast measured slower at these model sizes), ``channels_last`` (unless
  ``--no-channels-last``), and ``compile`` with
  ``--compile`` (the first steps pay the compilation: give it a long ``--warmup``).

The clock runs from the end of the last warm-up batch to the end of the last timed one, data loading
included (CUDA synchronised), so it is the rate a run sees. Validation, logging and checkpoints are off;
the recipe's model, data arguments, loss and optimiser are not changed, except ``--crop`` / ``--batch-size``
(for small CPU runs: every crop of the mix becomes ``crop``², a downscaled one from twice that).

A recipe that starts from the small base model (``base_dir`` / ``backbone: runs/base/…``) uses that folder
when it exists (after ``recipes/bundled/train.sh``); otherwise a random-init stand-in of what the
``recipes/base`` recipe writing it would produce (same architecture; the weights do not change the speed).

    HF_HUB_OFFLINE=1 python benchmarks/training_speed.py --root ../shared/data --accelerator cpu \\
        --steps 5 --warmup 2 --crop 64 --batch-size 2
    HF_HUB_OFFLINE=1 python benchmarks/training_speed.py --root /data --accelerator gpu --compile \\
        --warmup 20 --json benchmarks/results/training_speed_h100.json

Prints a table and writes the JSON (``--json``): per recipe and pipeline, steps/s and the settings.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import lightning as L
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPES = ("recipes/base/vae.yaml", "recipes/base/unet_eps.yaml", "recipes/oscar/bundled.yaml")


class StepTimer(L.Callback):
    """Wall-clock time at the end of each training batch; stops the run after ``warmup + steps`` of them."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.ends.append(time.perf_counter())
        if len(self.ends) >= self.warmup + self.steps:
            trainer.should_stop = True

    def steps_per_second(self) -> float:
        if len(self.ends) < self.warmup + self.steps or self.warmup < 1:
            raise RuntimeError(f"only {len(self.ends)} batches ran; expected {self.warmup} + {self.steps}")
        timed = self.ends[self.warmup - 1 :]
        return (len(timed) - 1) / (timed[-1] - timed[0])


# ------------------------------------------------------------------- the small base a recipe starts from
def _base_recipe_writing(folder: str) -> dict[str, Any] | None:
    """The ``model`` of the ``recipes/base`` recipe whose ``output_dir`` is ``folder`` (None: none)."""
    for path in sorted((REPO / "recipes" / "base").glob("*.yaml")):
        model = yaml.safe_load(path.read_text())["model"]
        if model["init_args"].get("output_dir") == folder:
            return model
    return None


def stand_in_base(folder: str, scratch: Path) -> str:
    """``folder`` itself when it exists, else a random-init stand-in (under ``scratch``) of what the
    ``recipes/base`` recipe writing it would produce: ``vae/`` (stage 1) or ``vae/ unet/ scheduler/``."""
    if Path(folder).is_dir():
        return folder
    model = _base_recipe_writing(folder)
    if model is None:
        raise SystemExit(f"{folder} does not exist and no recipes/base recipe writes it")
    from diffusers import AutoencoderKL

    from diffcodec.training.small_base import SMALL_BASE_VAE, DenoiserPretraining

    target = scratch / Path(folder).name
    init = dict(model["init_args"])
    if model["class_path"].endswith("AutoencoderPretraining"):
        AutoencoderKL.from_config(dict(init.get("vae_config") or SMALL_BASE_VAE)).save_pretrained(
            target / "vae"
        )
    else:
        base = stand_in_base(init.pop("base_dir"), scratch)
        keep = ("prediction_type", "unet_config", "embedding_length")
        module = DenoiserPretraining(
            base_dir=base, output_dir=str(target), **{k: init[k] for k in keep if k in init}
        )
        module.save_base(target)
    return str(target)


# ------------------------------------------------------------------- one timed run
def on_cuda(accelerator: str) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def new_precision(requested: str, accelerator: str) -> str:
    """``requested``, or for ``auto``: bf16-mixed on a CUDA card with bf16, else 32-true (on the CPU bf16
    autocast measured slower than float32 at the small models' sizes, even with AMX: ask for it)."""
    if requested != "auto":
        return requested
    return "bf16-mixed" if on_cuda(accelerator) and torch.cuda.is_bf16_supported() else "32-true"


def phase_config(
    recipe: dict[str, Any], args: argparse.Namespace, scratch: Path, new: bool
) -> dict[str, Any]:
    """The recipe, set up for one timed run of the old or new pipeline."""
    config = copy.deepcopy(recipe)
    model = config["model"]["init_args"]
    if "output_dir" in model:
        model["output_dir"] = str(scratch / "out")
    if "base_dir" in model:
        model["base_dir"] = stand_in_base(model["base_dir"], scratch)
    codec = model.get("codec", {}).get("init_args", {})
    if isinstance(codec.get("backbone"), str):
        codec["backbone"] = stand_in_base(codec["backbone"], scratch)
    data = config["data"]
    data["init_args"].update(root=args.root, val_dir=None)
    if args.batch_size:
        data["init_args"]["batch_size"] = args.batch_size
    if args.crop:
        crops = data["init_args"]["crops"]
        crops = crops if isinstance(crops, list) else [crops]
        data["init_args"]["crops"] = [
            {
                "size": args.crop,
                **(
                    {"downscale_from": 2 * args.crop} if isinstance(c, dict) and "downscale_from" in c else {}
                ),
            }
            for c in crops
        ]
    trainer = config["trainer"]
    trainer.update(
        accelerator=args.accelerator, devices=1, max_steps=10 * (args.warmup + args.steps) + 10,
        limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[], default_root_dir=str(scratch / "run"), precision="32-true",
    )  # fmt: skip
    if new:
        data["class_path"] = "diffcodec.data.CropBankDataModule"
        trainer["precision"] = new_precision(args.precision, args.accelerator)
        model["channels_last"] = bool(args.channels_last)
        model["compile"] = bool(args.compile)
    return config


def time_phase(recipe_path: Path, args: argparse.Namespace, new: bool) -> dict[str, Any]:
    """Steps/s of one pipeline on one recipe (a fresh LightningCLI, model and data module)."""
    from diffcodec.training.cli import make_cli

    recipe = yaml.safe_load(recipe_path.read_text())
    with tempfile.TemporaryDirectory(prefix="diffcodec-speed-") as tmp:
        scratch = Path(tmp)
        config = phase_config(recipe, args, scratch, new)
        path = scratch / "recipe.yaml"
        path.write_text(yaml.safe_dump(config))
        with mock.patch.object(sys, "argv", sys.argv[:1]):  # LightningCLI warns about this script's own
            cli = make_cli(["-c", str(path)], run=False)  # run=False: no subcommand
        timer = StepTimer(args.warmup, args.steps)
        cli.trainer.callbacks.append(timer)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        wall = time.perf_counter() - start
    data = config["data"]["init_args"]
    return {
        "pipeline": "new" if new else "old",
        "data": config["data"]["class_path"].rsplit(".", 1)[-1],
        "precision": config["trainer"]["precision"],
        "channels_last": bool(config["model"]["init_args"].get("channels_last", False)),
        "compile": bool(config["model"]["init_args"].get("compile", False)),
        "crops": data["crops"],
        "batch_size": data["batch_size"],
        "num_workers": data.get("num_workers"),
        "steps_per_s": round(timer.steps_per_second(), 3),
        "wall_s": round(wall, 1),
    }


def describe_device(accelerator: str) -> str:
    if on_cuda(accelerator):
        return torch.cuda.get_device_name()
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="the data folder (holds the recipes' train_dir)")
    parser.add_argument("--recipe", action="append", help=f"a recipe (repeatable; default {DEFAULT_RECIPES})")
    parser.add_argument("--accelerator", default="auto", help="Lightning's accelerator: cpu, gpu, auto")
    parser.add_argument("--steps", type=int, default=50, help="timed training batches per run")
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first (compilation, cuDNN)")
    parser.add_argument("--precision", default="auto", help="the new pipeline's: auto, bf16-mixed, 32-true")
    parser.add_argument("--compile", action="store_true", help="the new pipeline compiles its networks")
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True,
        help="the new pipeline's channels_last (default on; --no-channels-last to measure without it)",
    )  # fmt: skip
    parser.add_argument("--crop", type=int, help="every crop of the mix at this size (small CPU runs)")
    parser.add_argument("--batch-size", type=int, help="override the recipes' batch size")
    parser.add_argument("--pipelines", default="old,new", help="which to run: old, new or old,new")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    pipelines = [p.strip() for p in args.pipelines.split(",")]
    if not set(pipelines) <= {"old", "new"}:
        parser.error("--pipelines takes old, new or old,new")

    rows = []
    for recipe in args.recipe or DEFAULT_RECIPES:
        path = Path(recipe) if Path(recipe).is_file() else REPO / recipe
        for pipeline in pipelines:
            row = {"recipe": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)}
            row |= time_phase(path, args, new=pipeline == "new")
            rows.append(row)
            print(json.dumps(row), flush=True)
    old = {r["recipe"]: r["steps_per_s"] for r in rows if r["pipeline"] == "old"}
    for row in rows:
        if row["pipeline"] == "new" and row["recipe"] in old:
            row["speedup"] = round(row["steps_per_s"] / old[row["recipe"]], 2)

    result = {
        "device": describe_device(args.accelerator),
        "torch": torch.__version__,
        "steps": args.steps,
        "warmup": args.warmup,
        "results": rows,
    }
    print(f"\n{result['device']}, torch {result['torch']}, {args.steps} timed steps after {args.warmup}")
    header = (
        "recipe",
        "pipeline",
        "data",
        "precision",
        "channels_last",
        "compile",
        "batch",
        "steps/s",
        "speed-up",
    )
    print(" | ".join(header))
    for r in rows:
        cells = (r["recipe"], r["pipeline"], r["data"], r["precision"], r["channels_last"], r["compile"],
                 r["batch_size"], r["steps_per_s"], r.get("speedup", ""))  # fmt: skip
        print(" | ".join(str(c) for c in cells))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
