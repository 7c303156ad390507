"""Benchmark: training batches per second, image-folder DataLoader vs crop bank, as a recipe configures them.

Reads a recipe's ``data.init_args`` (default ``recipes/base/vae.yaml``: 128² crops, half of them
downscaled from 256², flips ``both``, batch 8, one worker), then times ``--batches`` batches of

- ``ImageFolderDataModule`` (the recipe as it is: Pillow decodes a whole photo for every crop, in
  ``num_workers`` worker processes), and
- ``CropBankDataModule`` with the same crops, flips and batch size (every photo decoded once at setup,
  batches cut on ``--device`` by one gather; the one-off setup time is reported apart).

Both loops take each batch to ``--device`` (as Lightning does) and synchronise CUDA before stopping the
clock. Run (a script, not a test)::

    HF_HUB_OFFLINE=1 python benchmarks/data_loading.py --root ../shared/data [--recipe R] [--batches N] \
        [--device cuda] [--num-workers W]

Prints one JSON object: batches/s of each path, their ratio, the bank's setup time and size.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import yaml

from diffcodec.data import CropBankDataModule, ImageFolderDataModule

REPO = Path(__file__).resolve().parents[1]


def batches_per_second(
    loader: Iterable[torch.Tensor], count: int, device: torch.device, warmup: int = 2
) -> float:
    """Batches/s over ``count`` batches of ``loader`` (after ``warmup`` batches), each moved to ``device``."""
    iterator, done, start = iter(loader), 0, 0.0
    while done < count + warmup:
        try:
            batch = next(iterator)
        except StopIteration:  # next epoch
            iterator = iter(loader)
            continue
        batch = batch.to(device, non_blocking=True)
        done += 1
        if done == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="the data folder (holds the recipe's train_dir)")
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "base" / "vae.yaml"))
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--num-workers", type=int, default=None, help="image-folder workers (default: the recipe's)"
    )
    args = parser.parse_args(argv)
    data = dict(yaml.safe_load(Path(args.recipe).read_text())["data"]["init_args"])
    data.update(root=args.root, val_dir=None)
    if args.num_workers is not None:
        data["num_workers"] = args.num_workers
    device = torch.device(args.device)

    folder = ImageFolderDataModule(**data)
    folder.setup("fit")
    old = batches_per_second(folder.train_dataloader(), args.batches, device)

    start = time.perf_counter()
    bank = CropBankDataModule(**data, device=args.device)
    bank.setup("fit")
    setup_s = time.perf_counter() - start
    new = batches_per_second(bank.train_dataloader(), args.batches, device)

    result = {
        "recipe": str(
            Path(args.recipe).relative_to(REPO) if Path(args.recipe).is_relative_to(REPO) else args.recipe
        ),
        "crops": str(data.get("crops")),
        "batch_size": data.get("batch_size"),
        "num_workers": data.get("num_workers"),
        "images": len(bank.bank),
        "batches": args.batches,
        "device": str(device),
        "host": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "image_folder_batches_per_s": round(old, 2),
        "crop_bank_batches_per_s": round(new, 2),
        "ratio": round(new / old, 1),
        "crop_bank_setup_s": round(setup_s, 2),
        "crop_bank_mb": round(bank.bank.nbytes / 2**20, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
