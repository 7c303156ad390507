"""WebDataset shards: reading them into training batches, and writing them from an image folder.

Reading (:func:`patch_pipeline`), per rank and DataLoader worker::

    shard URLs ──(resampled: a stream of random shards, seeded by rank and worker | or: shuffled, then
                  split between ranks, then between workers)──► tar samples ──shuffle buffer──►
    decode + crop (per batch, crop mix synchronised across ranks) ──► (B, 3, S, S) batches

URLs are anything WebDataset opens: local paths, brace patterns (``shards/train-{000000..000099}.tar``),
``https://`` and ``pipe:`` commands (``pipe:aws s3 cp s3://bucket/train-000001.tar -``).
Corrupt samples and unreadable shards are skipped with a warning and counted, never fatal.
"""

from __future__ import annotations

import json
import math
import os
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import get_worker_info

from diffcodec.data.crops import (
    Crop,
    FlipMode,
    MinSizePolicy,
    TooSmall,
    check_policies,
    choose_crop,
    cut_patch,
)
from diffcodec.data.folder import DECODE_ERRORS, SkipCounter, list_images, open_rgb

#: Sample fields read as images, in order of preference (WebDataset keys are extensions).
IMAGE_KEYS = ("png", "jpg", "jpeg", "webp", "ppm", "pgm", "pbm", "bmp", "tif", "tiff", "gif", "avif", "img")

#: Pillow format name → the extension a sample stores it under (other formats go under ``img``).
_FORMAT_KEYS = {
    "JPEG": "jpg",
    "MPO": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "PPM": "ppm",
    "BMP": "bmp",
    "TIFF": "tiff",
    "GIF": "gif",
    "AVIF": "avif",
}


def expand_shards(shards: str | os.PathLike | Sequence[str]) -> list[str]:
    """URL list from a directory (its ``*.tar``), a brace pattern, a single URL, or a list of them."""
    if isinstance(shards, (str, os.PathLike)):
        shards = [os.fspath(shards)]
    urls: list[str] = []
    for spec in shards:
        if os.path.isdir(spec):
            found = sorted(str(p) for p in Path(spec).glob("*.tar"))
            if not found:
                raise FileNotFoundError(f"no .tar shards in {spec}")
            urls.extend(found)
        else:
            urls.extend(wds.shardlists.expand_urls(spec))
    if not urls:
        raise ValueError("no shard URLs given")
    return urls


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _worker_seed(seed: int, rank: int) -> int:
    worker, _ = _worker()
    return hash((seed, rank, worker)) & (2**63 - 1)


def _split_by_rank(src: Iterable[dict], rank: int, world: int) -> Iterator[dict]:
    """Rank ``rank`` of ``world`` takes every ``world``-th shard (explicit: no process group needed)."""
    for position, item in enumerate(src):
        if position % world == rank:
            yield item


def _shuffle(src: Iterable[dict], bufsize: int, seed: int, rank: int) -> Iterator[dict]:
    """WebDataset's shuffle buffer with a seed of its own per rank and worker."""
    return wds.shuffle(bufsize, initial=min(bufsize, 100), rng=random.Random(_worker_seed(seed, rank)))(src)


class _Skipper:
    """WebDataset error handler: warn, count, continue."""

    def __init__(self, counter: SkipCounter) -> None:
        self.counter = counter

    def __call__(self, error: Exception) -> bool:
        self.counter.add()
        warnings.warn(f"skipping unreadable shard data: {error!r}", stacklevel=2)
        return True


class PatchBatches:
    """Pipeline stage: tar samples → batches of patches, one crop of the mix per batch.

    The b-th batch of worker w is the (b·W + w)-th batch the DataLoader delivers (it reads workers round
    robin), so choosing the crop from that global index gives every rank the same crop at the same step.
    ``batches`` limits the batches per epoch on this rank (split between workers), for DDP where every
    rank must run the same number of steps.
    """

    def __init__(
        self,
        crops: Sequence[Crop],
        *,
        batch_size: int,
        flips: FlipMode,
        min_size: MinSizePolicy,
        seed: int,
        rank: int,
        skipped: SkipCounter,
        batches: int | None = None,
    ) -> None:
        self.crops = tuple(crops)
        check_policies(flips, min_size)
        self.batch_size = batch_size
        self.flips = flips
        self.min_size = min_size
        self.seed = seed
        self.rank = rank
        self.skipped = skipped
        self.batches = batches
        self.epoch = -1

    def _limit(self, worker: int, workers: int) -> float:
        if self.batches is None:
            return math.inf
        return self.batches // workers + (worker < self.batches % workers)

    def _patch(self, sample: dict, crop: Crop, rng: random.Random) -> torch.Tensor | None:
        key = next((k for k in IMAGE_KEYS if k in sample), None)
        try:
            if key is None:
                raise ValueError(f"sample has no image field (fields: {sorted(sample)})")
            return cut_patch(open_rgb(sample[key]), crop, flips=self.flips, min_size=self.min_size, rng=rng)
        except (TooSmall, *DECODE_ERRORS) as error:
            self.skipped.add()
            if not isinstance(error, TooSmall):
                warnings.warn(f"skipping unreadable sample {sample.get('__key__')!r}: {error}", stacklevel=2)
            return None

    def __call__(self, src: Iterable[dict]) -> Iterator[torch.Tensor]:
        self.epoch += 1
        worker, workers = _worker()
        rng = random.Random(hash((self.seed, self.rank, worker, self.epoch)))
        samples = iter(src)
        limit = self._limit(worker, workers)
        produced = 0
        while produced < limit:
            batch_index = produced * workers + worker
            crop = self.crops[choose_crop(self.crops, self.seed, self.epoch, batch_index)]
            patches: list[torch.Tensor] = []
            while len(patches) < crop.kept(self.batch_size):
                sample = next(samples, None)
                if sample is None:
                    return  # end of the shards: the partial batch is dropped
                patch = self._patch(sample, crop, rng)
                if patch is not None:
                    patches.append(patch)
            yield torch.stack(patches)
            produced += 1


def patch_pipeline(
    urls: Sequence[str],
    stage: PatchBatches,
    *,
    resampled: bool,
    shuffle_buffer: int,
    seed: int,
    rank: int,
    world: int,
    skipped: SkipCounter,
) -> wds.DataPipeline:
    """The WebDataset pipeline of one rank (an IterableDataset yielding batches); see the module docstring."""
    handler = _Skipper(skipped)
    if resampled:
        source: list[Callable] = [
            wds.ResampledShards(
                urls, seed=seed, worker_seed=partial(_worker_seed, seed, rank), deterministic=True
            )
        ]
    else:
        if len(urls) < world:
            raise ValueError(
                f"{len(urls)} shard(s) cannot be split between {world} ranks; use resampled=True"
            )
        source = [
            wds.SimpleShardList(urls),
            wds.detshuffle(bufsize=len(urls), initial=len(urls), seed=seed),
            partial(_split_by_rank, rank=rank, world=world),
            wds.split_by_worker,
        ]
    stages = [*source, wds.tarfile_to_samples(handler=handler)]
    if shuffle_buffer > 1:
        stages.append(partial(_shuffle, bufsize=shuffle_buffer, seed=seed, rank=rank))
    stages.append(stage)
    return wds.DataPipeline(*stages)


# ---------------------------------------------------------------------------------------------- writing
def write_shards(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    prefix: str = "shard",
    max_count: int = 1000,
    max_size: float = 1e9,
    min_side: int = 0,
    extensions: Sequence[str] | None = None,
    verbose: bool = False,
) -> dict:
    """Write every readable image under ``source`` into WebDataset shards ``out_dir/{prefix}-%06d.tar``.

    Files are stored as they are (no re-encoding, so nothing is lost), under their format's extension, with
    a ``json`` field holding the relative path and size. Unreadable files and images with a side under
    ``min_side`` are skipped (with a warning for the former) and counted. Returns the summary written to
    ``out_dir/shards.json``: the shard files, the number of samples and of skipped files.
    """
    files = list_images(source, extensions)
    if not files:
        raise ValueError(f"no images found under {source}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.glob(f"{prefix}-*.tar")):
        raise FileExistsError(
            f"{out_dir} already holds {prefix}-*.tar shards; remove them or pick another folder"
        )
    written, skipped = 0, []
    with wds.ShardWriter(
        str(out_dir / f"{prefix}-%06d.tar"), maxcount=max_count, maxsize=max_size, verbose=int(verbose)
    ) as sink:
        for path in files:
            try:
                with Image.open(path) as image:
                    image.load()
                    image_format, (width, height) = image.format, image.size
            except DECODE_ERRORS as error:
                warnings.warn(f"skipping unreadable image {path}: {error}", stacklevel=2)
                skipped.append(str(path))
                continue
            if min(width, height) < min_side:
                skipped.append(str(path))
                continue
            extension = _FORMAT_KEYS.get(image_format or "", "img")
            relative = path.relative_to(source).as_posix()
            sink.write(
                {
                    "__key__": f"{written:09d}",
                    extension: path.read_bytes(),
                    "json": {"path": relative, "width": width, "height": height},
                }
            )
            written += 1
    shards = sorted(p.name for p in out_dir.glob(f"{prefix}-*.tar"))
    summary = {"shards": shards, "num_samples": written, "num_skipped": len(skipped), "skipped": skipped}
    (out_dir / "shards.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
