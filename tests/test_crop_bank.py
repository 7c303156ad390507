"""The crop bank (diffcodec.data.crop_bank) and its DataModule: exact windows, the flips of crops.py,
seeded determinism, minimum sizes, resumable batches, and a `diffcodec fit` run on it."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from recipe_utils import write_test_recipe

from diffcodec.data import Crop, CropBank, CropBankDataModule
from diffcodec.data.crop_bank import FLIP_VARIANTS, flip_grids
from diffcodec.data.crops import flip
from diffcodec.errors import UsageError
from diffcodec.training.cli import run_argv

REPO = Path(__file__).resolve().parents[1]
SIZES = [(40, 30), (33, 52), (64, 64)]  # (width, height)


def write_images(folder: Path, sizes: list[tuple[int, int]] = SIZES, seed: int = 0) -> list[torch.Tensor]:
    """Random RGB PNGs of the given sizes; returns them as uint8 (3, H, W) tensors, in file order."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for i, (width, height) in enumerate(sizes):
        array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(array).save(folder / f"img{i}.png")
        images.append(torch.from_numpy(array).permute(2, 0, 1))
    return images


def windows_of(image: torch.Tensor, side: int) -> torch.Tensor:
    """Every side×side window of a (3, H, W) image, as (N, 3, side, side) float in [0, 1]."""
    patches = image.float().div(255).unfold(1, side, 1).unfold(2, side, 1)  # (3, h, w, s, s)
    return patches.permute(1, 2, 0, 3, 4).reshape(-1, 3, side, side)


def variants(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The transforms crops.flip draws from under ``mode`` (found by drawing until all have appeared)."""
    seen: dict[bytes, torch.Tensor] = {}
    rng = random.Random(0)
    for _ in range(200):
        y = flip(x, mode, rng)
        seen[y.numpy().tobytes()] = y
    return list(seen.values())


def matches(patch: torch.Tensor, candidates: torch.Tensor, atol: float = 0.0) -> bool:
    return bool(((candidates - patch).abs().flatten(1).amax(1) <= atol).any())


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[torch.Tensor]]:
    return tmp_path / "photos", write_images(tmp_path / "photos")


def test_bank_holds_the_decoded_images(folder: tuple[Path, list[torch.Tensor]]) -> None:
    root, images = folder
    bank = CropBank.from_folder(root)
    assert len(bank) == 3 and bank.nbytes == sum(i.numel() for i in images)
    index = torch.arange(3)
    zero = torch.zeros(3, dtype=torch.long)
    assert torch.equal(bank.windows(index, zero, zero, 30), torch.stack([i[:, :30, :30] for i in images]))


def test_windows_are_slices(folder: tuple[Path, list[torch.Tensor]]) -> None:
    root, images = folder
    bank = CropBank.from_folder(root)
    index, top, left = torch.tensor([0, 1, 2, 1]), torch.tensor([3, 22, 0, 0]), torch.tensor([7, 1, 48, 17])
    got = bank.windows(index, top, left, 16)
    for b in range(4):
        t, l = int(top[b]), int(left[b])
        assert torch.equal(got[b], images[int(index[b])][:, t : t + 16, l : l + 16])


@pytest.mark.parametrize("flips", ["none", "horizontal", "both", "dihedral"])
def test_samples_are_flipped_windows_of_the_images(
    folder: tuple[Path, list[torch.Tensor]], flips: str
) -> None:
    root, images = folder
    bank = CropBank.from_folder(root)
    batch = bank.sample(12, 16, torch.Generator().manual_seed(1), flips=flips)
    assert batch.shape == (12, 3, 16, 16) and batch.dtype == torch.float32
    assert batch.min() >= 0 and batch.max() <= 1
    windows = torch.cat([windows_of(image, 16) for image in images])
    for patch in batch:
        assert any(matches(v, windows) for v in variants(patch, flips)), "not a flipped window of any image"


@pytest.mark.parametrize("mode", ["none", "horizontal", "both", "dihedral"])
def test_flip_grids_are_the_transforms_of_crops_flip(mode: str) -> None:
    x = torch.arange(3 * 25, dtype=torch.float32).view(3, 5, 5)
    grids = flip_grids(mode, 5)
    ours = {x.flatten(-2)[:, g].view(3, 5, 5).numpy().tobytes() for g in grids}
    theirs = {v.numpy().tobytes() for v in variants(x, mode)}
    assert len(grids) == FLIP_VARIANTS[mode] and ours == theirs


def test_every_flip_variant_is_drawn() -> None:
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    bank = CropBank([image])  # a 16x16 image and 16x16 crops: one position, only the flip varies
    batch = bank.sample(200, 16, torch.Generator().manual_seed(0), flips="dihedral")
    drawn = {p.numpy().tobytes() for p in batch}
    assert drawn == {v.numpy().tobytes() for v in variants(image.float() / 255, "dihedral")}


def test_crop_mix_options(folder: tuple[Path, list[torch.Tensor]]) -> None:
    root, images = folder
    bank = CropBank.from_folder(root)
    g = torch.Generator().manual_seed(3)
    small = bank.sample(5, Crop(8, downscale_from=16), g)
    assert small.shape == (5, 3, 8, 8)
    resized = torch.cat(
        [
            F.interpolate(windows_of(i, 16), size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
            for i in images
        ]
    ).clamp(0, 1)
    assert all(matches(p, resized, atol=1e-5) for p in small)
    inner = bank.sample(5, Crop(8, within=24), g)
    windows = torch.cat([windows_of(i, 8) for i in images])
    assert inner.shape == (5, 3, 8, 8) and all(matches(p, windows) for p in inner)
    assert bank.sample(7, Crop(16, batch_fraction=0.25), g).shape == (2, 3, 16, 16)


def test_seeded_samples_repeat(folder: tuple[Path, list[torch.Tensor]]) -> None:
    root, _ = folder
    bank = CropBank.from_folder(root)

    def draw(seed: int) -> torch.Tensor:
        return bank.sample(6, Crop(16, downscale_from=24), torch.Generator().manual_seed(seed), flips="both")

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))


def test_min_size_policies(tmp_path: Path) -> None:
    write_images(tmp_path / "p")  # short sides 30, 33, 64
    assert len(CropBank.from_folder(tmp_path / "p", min_side=32, min_size="skip")) == 2
    bank = CropBank.from_folder(tmp_path / "p", min_side=48, min_size="upscale")
    assert len(bank) == 3 and int(bank.sizes.min()) == 48
    assert bank.sizes.tolist()[0] == [48, 64]  # 40x30 (W x H) scaled by 48/30, as crops.py resizes
    with pytest.raises(UsageError, match="pad"):
        CropBank.from_folder(tmp_path / "p", min_side=48, min_size="pad")
    with pytest.raises(UsageError, match="at least 100"):
        CropBank.from_folder(tmp_path / "p", min_side=100, min_size="skip")
    with pytest.raises(UsageError, match="min_side=32"):
        CropBank.from_folder(tmp_path / "p").sample(2, 32)
    with pytest.raises(UsageError, match="jitter"):
        CropBank.from_folder(tmp_path / "p").sample(2, Crop(16, jitter=4))


def test_unreadable_files_are_left_out(tmp_path: Path) -> None:
    write_images(tmp_path / "p")
    (tmp_path / "p" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.warns(UserWarning, match="broken.png"):
        assert len(CropBank.from_folder(tmp_path / "p")) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no usable image"):
        CropBank.from_folder(tmp_path / "empty")


def test_datamodule_batches_are_seeded_and_resumable(tmp_path: Path) -> None:
    write_images(tmp_path / "photos", SIZES * 3)

    def module(**kwargs: object) -> CropBankDataModule:
        dm = CropBankDataModule(
            "photos",
            root=tmp_path,
            crops=[{"size": 16}, {"size": 16, "downscale_from": 24}],
            flips="both",
            batch_size=2,
            **kwargs,
        )
        dm.setup("fit")
        return dm

    loader = module().train_dataloader()
    assert len(loader) == 4  # 9 images // batch 2
    epoch0 = list(loader)
    epoch1 = list(loader)
    assert [b.shape for b in epoch0] == [(2, 3, 16, 16)] * 4
    assert all(b.dtype == torch.float32 and b.min() >= 0 and b.max() <= 1 for b in epoch0)
    assert not any(torch.equal(a, b) for a, b in zip(epoch0, epoch1, strict=True))
    again = module().train_dataloader()
    assert all(torch.equal(a, b) for a, b in zip(epoch0, list(again), strict=True))
    cut_short = module().train_dataloader()
    next(iter(cut_short))  # an epoch stopped after one batch (limit_train_batches): the next is epoch 1
    assert all(torch.equal(a, b) for a, b in zip(epoch1, list(cut_short), strict=True))
    resumed = module(batches_per_epoch=4).train_dataloader()
    resumed.resume(1, 2)
    assert all(torch.equal(a, b) for a, b in zip(epoch1[2:], list(resumed), strict=True))
    with pytest.raises(UsageError, match="jitter"):
        CropBankDataModule("photos", root=tmp_path, crops=[{"size": 16, "jitter": 2}])


def test_fit_runs_on_the_crop_bank(tmp_path: Path) -> None:
    """`diffcodec fit` of a shipped recipe with `--data diffcodec.data.CropBankDataModule --data.root`."""
    write_images(tmp_path / "data" / "photos", [(200, 150), (160, 180), (150, 150), (170, 140)])
    recipe = yaml.safe_load((REPO / "recipes" / "reference" / "small_cpu.yaml").read_text())
    recipe["model"]["init_args"]["codec"]["init_args"].update(
        channels=16, latent_channels=16, hyper_channels=8
    )
    config = write_test_recipe(recipe, tmp_path, "run", max_steps=4)  # 2 optimiser steps per batch
    argv = [
        "-c",
        str(config),
        "--data",
        "diffcodec.data.CropBankDataModule",
        "--data.root",
        str(tmp_path / "data"),
    ]
    assert (
        run_argv("fit", [*argv, "--data.init_args.val_dir", "null", "--data.init_args.batch_size", "2"]) == 0
    )
    (metrics,) = (tmp_path / "run").rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    assert len(rows) == 2 and all(math.isfinite(float(row["train/loss"])) for row in rows)  # 2 batches
    (saved,) = (tmp_path / "run").rglob("config.yaml")
    data = yaml.safe_load(saved.read_text())["data"]
    assert data["class_path"] == "diffcodec.data.CropBankDataModule"
    assert data["init_args"]["crops"] == 128 and data["init_args"]["flips"] == "both"


def test_datamodule_names_a_missing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"--data\.root"):
        CropBankDataModule("photos", crops=16).setup("fit")
