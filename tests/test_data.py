"""Data modules: crops and crop mixes, image folders with broken files, distributed resumable sampling,
WebDataset shards (writing, reading, per-rank / per-worker splitting)."""

from __future__ import annotations

import json
import random
import tarfile
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from diffcodec.data import (
    Crop,
    ImageFolder,
    ImageFolderDataModule,
    WebDatasetDataModule,
    list_images,
    write_shards,
)
from diffcodec.data import cli as data_cli
from diffcodec.data.crops import TooSmall, as_crops, choose_crop, cut_patch, flip
from diffcodec.data.folder import SampleKey, SkipCounter, collate_patches
from diffcodec.data.sampling import CropMixSampler
from diffcodec.data.shards import PatchBatches, patch_pipeline


def _photo(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    image = Image.fromarray(array, "RGB")
    return image.convert(mode) if mode != "RGB" else image


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """A nested folder of mixed formats and modes, one truncated PNG and one text file named .jpg."""
    root = tmp_path / "images"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    _photo(96, 80, 0).save(root / "a.png")
    _photo(120, 90, 1).save(root / "sub" / "b.jpg", quality=90)
    _photo(100, 100, 2, "L").save(root / "sub" / "c.webp")
    _photo(90, 70, 3, "RGBA").save(root / "sub" / "deeper" / "d.PNG")
    _photo(80, 80, 4).save(root / "sub" / "deeper" / "e.bmp")
    _photo(64, 64, 5).save(root / ".hidden" / "f.png")
    (root / "notes.txt").write_text("not an image")
    good = (root / "a.png").read_bytes()
    (root / "sub" / "truncated.png").write_bytes(good[: len(good) // 3])
    (root / "sub" / "text.jpg").write_text("this is not a jpeg")
    return root


# ------------------------------------------------------------------------------------------------ crops
def test_crop_spec_validation_and_normalisation() -> None:
    assert as_crops(256) == (Crop(256),)
    assert as_crops([{"size": 64, "weight": 2.0}, Crop(128)]) == (Crop(64, weight=2.0), Crop(128))
    assert Crop(256, jitter=8).source_size == 264
    assert Crop(512, downscale_from=1024).source_size == 1024
    assert Crop(1024, batch_fraction=0.25).kept(8) == 2
    for bad in (dict(size=0), dict(size=8, weight=0), dict(size=8, batch_fraction=0), dict(size=8, within=4)):
        with pytest.raises(ValueError):
            Crop(**bad)
    with pytest.raises(ValueError, match="at most one"):
        Crop(8, within=16, jitter=2)
    with pytest.raises(ValueError, match="empty"):
        as_crops([])
    with pytest.raises(TypeError):
        as_crops([True])


def test_cut_patch_policies() -> None:
    big, small = _photo(200, 150, 0), _photo(50, 40, 1)
    rng = random.Random(0)
    for crop in (Crop(64), Crop(64, jitter=8), Crop(32, downscale_from=128), Crop(48, within=100)):
        patch = cut_patch(big, crop, flips="both", min_size="skip", rng=rng)
        assert patch.shape == (3, crop.size, crop.size) and patch.min() >= 0 and patch.max() <= 1
    with pytest.raises(TooSmall):
        cut_patch(small, Crop(64), flips="none", min_size="skip", rng=rng)
    up = cut_patch(small, Crop(64), flips="none", min_size="upscale", rng=rng)
    padded = cut_patch(small, Crop(64), flips="none", min_size="pad", rng=rng)
    assert up.shape == padded.shape == (3, 64, 64)
    # padding keeps the original pixels in the top-left corner and reflects them beyond
    original = torch.from_numpy(np.array(small)).permute(2, 0, 1).float() / 255
    assert torch.allclose(padded[:, :40, :50], original)
    assert torch.allclose(padded[:, 40, :50], original[:, 38, :])
    # an exact crop of a same-size image is the image
    exact = cut_patch(big.crop((0, 0, 64, 64)), Crop(64), flips="none", min_size="skip", rng=rng)
    assert torch.equal(exact, torch.from_numpy(np.array(big.crop((0, 0, 64, 64)))).permute(2, 0, 1) / 255)


def test_flips_cover_the_dihedral_group() -> None:
    x = torch.arange(9.0).reshape(1, 3, 3).expand(3, 3, 3)
    seen = {tuple(flip(x, "dihedral", random.Random(s)).flatten().tolist()) for s in range(200)}
    assert len(seen) == 8
    assert len({tuple(flip(x, "both", random.Random(s)).flatten().tolist()) for s in range(100)}) == 4
    assert len({tuple(flip(x, "horizontal", random.Random(s)).flatten().tolist()) for s in range(100)}) == 2
    with pytest.raises(ValueError, match="flip mode"):
        flip(x, "sideways", random.Random(0))  # type: ignore[arg-type]


def test_crop_choice_is_deterministic_and_weighted() -> None:
    crops = as_crops([Crop(64, weight=0.2), Crop(64, weight=0.5, within=128), Crop(128, weight=0.3)])
    choices = [choose_crop(crops, seed=3, epoch=1, batch=b) for b in range(3000)]
    assert choices == [choose_crop(crops, seed=3, epoch=1, batch=b) for b in range(3000)]
    frequencies = Counter(choices)
    for index, crop in enumerate(crops):
        assert abs(frequencies[index] / 3000 - crop.weight) < 0.04
    assert choices != [choose_crop(crops, seed=4, epoch=1, batch=b) for b in range(3000)]


# ------------------------------------------------------------------------------------------ image folders
def test_list_images_recursive_any_format(folder: Path) -> None:
    names = [p.relative_to(folder).as_posix() for p in list_images(folder)]
    assert names == [
        "a.png",
        "sub/b.jpg",
        "sub/c.webp",
        "sub/deeper/d.PNG",
        "sub/deeper/e.bmp",
        "sub/text.jpg",
        "sub/truncated.png",
    ]
    assert [p.name for p in list_images(folder, extensions=["png"])] == ["a.png", "d.PNG", "truncated.png"]
    with pytest.raises(FileNotFoundError):
        list_images(folder / "missing")


def test_unreadable_images_are_skipped_and_counted(folder: Path) -> None:
    dataset = ImageFolder(folder, Crop(32), flips="horizontal")
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        patches = [dataset[SampleKey(i, 0, True, seed=i)] for i in range(len(dataset))]
    assert all(p.shape == (3, 32, 32) for p in patches)  # broken files were replaced, batches stay full
    assert dataset.skipped.value == 3  # text.jpg, truncated.png twice (after text.jpg, then on its own)
    # grey and RGBA images became RGB; the same key gives the same patch (resumable)
    assert torch.equal(dataset[SampleKey(2, 0, True, seed=7)], dataset[SampleKey(2, 0, True, seed=7)])
    assert dataset[SampleKey(0, 0, False, seed=0)] is None
    # a validation folder checks its files up front and drops the broken ones
    with pytest.warns(UserWarning):
        val = ImageFolder(folder, None, check=True, pad_multiple=32)
    assert len(val) == 5 and val.skipped.value == 2
    assert val[0].shape == (3, 96, 96) and val.load(0).shape == (1, 3, 80, 96)


def test_too_small_images_skipped_without_warning(tmp_path: Path) -> None:
    _photo(40, 40, 0).save(tmp_path / "small.png")
    _photo(80, 80, 1).save(tmp_path / "large.png")
    dataset = ImageFolder(tmp_path, Crop(64), min_size="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        patch = dataset[SampleKey(1, 0, True, 0)]  # 'small.png' sorts last: replaced by 'large.png'
    assert patch.shape == (3, 64, 64) and dataset.skipped.value == 1
    only_small = tmp_path / "only_small"
    only_small.mkdir()
    _photo(40, 40, 0).save(only_small / "x.png")
    with pytest.raises(RuntimeError, match="can give a 64px crop"):
        ImageFolder(only_small, Crop(64), min_size="skip")[0]
    with pytest.raises(ValueError, match="unknown flip mode"):
        ImageFolder(tmp_path, Crop(64), flips="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown min_size"):
        ImageFolder(tmp_path, Crop(64), min_size="stretch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no readable images"):
        ImageFolder(tmp_path / "only_small", None, extensions=["jpg"])


def test_collate_drops_batch_fraction_items() -> None:
    batch = collate_patches([torch.zeros(3, 4, 4), None, torch.ones(3, 4, 4), None])
    assert batch.shape == (2, 3, 4, 4)
    with pytest.raises(RuntimeError):
        collate_patches([None])


# ------------------------------------------------------------------------------------------------ sampling
def test_sampler_splits_ranks_and_synchronises_crops() -> None:
    dataset = list(range(50))
    crops = as_crops([Crop(8), Crop(16, batch_fraction=0.5)])
    ranks = [
        list(CropMixSampler(dataset, batch_size=4, crops=crops, num_replicas=2, rank=r, seed=1))
        for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 24  # 25 per rank, whole batches of 4
    assert not {k.index for k in ranks[0]} & {k.index for k in ranks[1]}
    for b in range(6):  # the b-th batch has the same crop on both ranks, and keeps 2 of 4 at 16 px
        batch0, batch1 = ranks[0][4 * b : 4 * b + 4], ranks[1][4 * b : 4 * b + 4]
        assert len({k.crop for k in batch0 + batch1}) == 1
        assert sum(k.keep for k in batch0) == crops[batch0[0].crop].kept(4)
    sampler = CropMixSampler(dataset, batch_size=4, crops=crops, num_replicas=2, rank=0, seed=1)
    sampler.set_epoch(1)
    assert [k.index for k in sampler] != [k.index for k in ranks[0]]
    with pytest.raises(ValueError, match="cannot fill one batch"):
        CropMixSampler(list(range(5)), batch_size=4, crops=crops, num_replicas=2, rank=0)


def test_sampler_resumes_mid_epoch_exactly() -> None:
    dataset = list(range(40))
    full = CropMixSampler(dataset, batch_size=4, crops=as_crops(8), seed=5)
    full.set_epoch(2)
    expected = list(full)
    resumed = CropMixSampler(dataset, batch_size=4, crops=as_crops(8), seed=5)
    resumed.resume(epoch=2, batches_done=3)
    assert list(resumed) == expected[12:]
    assert list(resumed) == expected[12:]  # iterating twice in the epoch still resumes
    resumed.set_epoch(3)  # the next epoch is whole again
    assert len(list(resumed)) == 40
    with pytest.raises(ValueError):
        resumed.resume(epoch=0, batches_done=11)


def test_folder_datamodule_batches_and_validation(folder: Path, tmp_path: Path) -> None:
    module = ImageFolderDataModule(
        folder,
        folder,
        crops=[Crop(16), Crop(32, batch_fraction=0.5)],
        batch_size=2,
        num_workers=0,
        val_pad_multiple=64,
    )
    with pytest.warns(UserWarning):
        module.setup("fit")
        batches = list(module.train_dataloader())
        val = list(module.val_dataloader())
    assert len(batches) == 3
    assert all(b.shape[1:] in ((3, 16, 16), (3, 32, 32)) for b in batches)
    assert all(b.shape[0] == (2 if b.shape[-1] == 16 else 1) for b in batches)
    assert [tuple(v.shape) for v in val] == [
        (1, 3, 128, 128),
        (1, 3, 128, 128),
        (1, 3, 128, 128),
        (1, 3, 128, 128),
        (1, 3, 128, 128),
    ]
    assert module.skipped_images >= 4  # 2 in the validation scan, at least 2 while training
    no_val = ImageFolderDataModule(folder, batch_size=2, num_workers=0)
    assert no_val.val_dataloader() == []


# ------------------------------------------------------------------------------------------------ shards
def test_write_shards_and_cli(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        summary = write_shards(folder, tmp_path / "shards", max_count=2)
    assert summary["num_samples"] == 5 and summary["num_skipped"] == 2
    assert summary["shards"] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert json.loads((tmp_path / "shards" / "shards.json").read_text())["num_samples"] == 5
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert sorted(names) == ["000000000.json", "000000000.png", "000000001.jpg", "000000001.json"]
    # stored bytes are the original files
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar") as tar:
        assert tar.extractfile("000000001.jpg").read() == (folder / "sub" / "b.jpg").read_bytes()
    with pytest.raises(FileExistsError):
        write_shards(folder, tmp_path / "shards")
    with pytest.warns(UserWarning):
        code = data_cli.main([str(folder), str(tmp_path / "cli"), "--max-count", "10", "--min-side", "85"])
    assert code == 0
    out = capsys.readouterr().out
    assert "wrote 2 images into 1 shard(s)" in out and "5 skipped" in out
    assert data_cli.main([str(tmp_path / "nothing"), str(tmp_path / "x")]) == 2


def _batches(dataset, n: int) -> list[torch.Tensor]:
    iterator = iter(dataset)
    return [next(iterator) for _ in range(n)]


def test_webdataset_pipeline_ranks_and_corrupt_samples(folder: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning):
        write_shards(folder, tmp_path / "shards", max_count=1)
    # a corrupt sample inside a shard: an image field that does not decode
    with tarfile.open(tmp_path / "shards" / "shard-000000.tar", "a") as tar:
        payload = tmp_path / "bad.png"
        payload.write_bytes(b"\x89PNG broken")
        tar.add(payload, arcname="999999999.png")
    urls = sorted(str(p) for p in (tmp_path / "shards").glob("*.tar"))

    def pipeline(rank: int, world: int, resampled: bool, skipped: SkipCounter):
        stage = PatchBatches(
            as_crops(16),
            batch_size=2,
            flips="none",
            min_size="upscale",
            seed=0,
            rank=rank,
            skipped=skipped,
            batches=None if not resampled else 6,
        )
        return patch_pipeline(
            urls,
            stage,
            resampled=resampled,
            shuffle_buffer=4,
            seed=0,
            rank=rank,
            world=world,
            skipped=skipped,
        )

    skipped = SkipCounter()
    with pytest.warns(UserWarning, match="skipping unreadable sample"):
        r0 = list(pipeline(0, 2, True, skipped))
        r1 = list(pipeline(1, 2, True, skipped))
        again = list(pipeline(0, 2, True, SkipCounter()))
    assert len(r0) == len(r1) == 6 and all(b.shape == (2, 3, 16, 16) for b in r0 + r1)
    assert not all(torch.equal(a, b) for a, b in zip(r0, r1))  # ranks draw different streams
    assert [torch.equal(a, b) for a, b in zip(r0, again)] == [True] * 6  # seeded: reproducible
    assert skipped.value >= 1
    # one pass, split by rank: each rank reads a disjoint half of the 5 shards (3 + 2 images)
    split = [torch.cat(list(pipeline(r, 2, False, SkipCounter()))) for r in (0, 1)]
    assert split[0].shape[0] + split[1].shape[0] == 4  # 5 readable images, batches of 2, partial dropped
    with pytest.raises(ValueError, match="cannot be split"):
        pipeline(0, 8, False, SkipCounter())
    # two DataLoader workers split the shards of a rank: every image once, none twice
    in_workers = SkipCounter()
    loader = DataLoader(pipeline(0, 1, False, in_workers), batch_size=None, num_workers=2)
    patches = [patch for batch in loader for patch in batch]
    assert len(patches) == 4  # worker 0: shards 0, 2, 4 (one full batch), worker 1: shards 1, 3
    assert len({patch.numpy().tobytes() for patch in patches}) == 4
    assert in_workers.value == 1  # the corrupt sample, counted in a worker process, seen here


def test_webdataset_datamodule(tmp_path: Path, photos_dir: Path) -> None:
    source = tmp_path / "few"
    source.mkdir()
    for path in sorted(photos_dir.glob("*.png"))[:3]:
        (source / path.name).symlink_to(path)
    write_shards(source, tmp_path / "shards", max_count=2)
    module = WebDatasetDataModule(
        str(tmp_path / "shards"), crops=32, batch_size=3, num_workers=0, batches_per_epoch=2, shuffle_buffer=2
    )
    loader = module.train_dataloader()
    assert len(loader) == 2
    batches = list(loader)
    assert [tuple(b.shape) for b in batches] == [(3, 3, 32, 32)] * 2
    assert module.skipped_images == 0
    with pytest.raises(ValueError, match="must be at least num_workers"):
        WebDatasetDataModule(str(tmp_path / "shards"), num_workers=4, batches_per_epoch=2)
    with pytest.raises(FileNotFoundError):
        WebDatasetDataModule(str(tmp_path))
