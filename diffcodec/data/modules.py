"""LightningDataModules: training patches from an image folder (or its crop bank) or WebDataset shards, whole
validation images.

Batches are plain (B, 3, S, S) float tensors in [0, 1], the input of every codec's ``training_step``.
Validation batches are single whole images (1, 3, H, W), padded right and bottom to ``val_pad_multiple``
(by default the codec's ``pad_multiple``) so that any image fits the training forward; bpp from real
coding on the *unpadded* images is measured by :class:`~diffcodec.training.callbacks.RealCodingValidation`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from diffcodec.data.crop_bank import CropBank
from diffcodec.data.crops import Crop, FlipMode, MinSizePolicy, as_crops, choose_crop
from diffcodec.data.folder import ImageFolder, SkipCounter, collate_patches
from diffcodec.data.sampling import CropMixSampler, ResumableDataLoader
from diffcodec.data.shards import PatchBatches, expand_shards, patch_pipeline
from diffcodec.errors import UsageError


class ValidationFolderMixin:
    """The validation side shared by both DataModules: a folder of whole images, batch size 1."""

    val_dir: str | None
    val_pad_multiple: int | None
    val_max_images: int | None
    num_workers: int
    val_set: ImageFolder | None = None

    def _setup_validation(self) -> None:
        if self.val_dir is not None and self.val_set is None:
            pad = self.val_pad_multiple
            trainer = getattr(self, "trainer", None)
            if pad is None and trainer is not None:  # the codec's own multiple
                pad = getattr(trainer.lightning_module, "pad_multiple", None)
            self.val_set = ImageFolder(
                self.val_dir, None, pad_multiple=pad, check=True, max_images=self.val_max_images
            )

    def val_dataloader(self) -> DataLoader | list:
        self._setup_validation()
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=1, shuffle=False, num_workers=min(self.num_workers, 2))


def under_root(root: str | os.PathLike | None, path: str | os.PathLike) -> str:
    """``path`` inside ``root`` when it is relative and a root is given; otherwise ``path`` as it is."""
    return str(path) if root is None else os.path.join(os.fspath(root), os.fspath(path))


def world_of(module: L.LightningDataModule) -> tuple[int, int]:
    """``(rank, world_size)`` of the trainer the DataModule is attached to; ``(0, 1)`` without one."""
    trainer = module.trainer
    if trainer is None:
        return 0, 1
    return trainer.global_rank, trainer.world_size


def on_gpu(module: L.LightningDataModule) -> bool:
    """Whether the attached trainer runs on a CUDA device (then batches are pinned)."""
    return module.trainer is not None and module.trainer.strategy.root_device.type == "cuda"


class ImageFolderDataModule(ValidationFolderMixin, L.LightningDataModule):
    """Random patches from every image under ``train_dir``; whole images from ``val_dir``.

    Args:
        train_dir: training folder (recursive; any format Pillow reads; converted to RGB).
        val_dir: validation folder evaluated at full resolution, or None.
        root: the data folder that relative ``train_dir`` / ``val_dir`` are under (``--data.root DIR``
            on the command line; the recipes name ``photos`` / ``kodak`` or the paper's sets inside it).
            None: relative paths are taken from the working directory.
        crops: crop size, :class:`~diffcodec.data.crops.Crop`, or a crop mix (list), see that module.
        flips: ``"none"``, ``"horizontal"``, ``"both"`` or ``"dihedral"``.
        min_size: images smaller than a crop are ``"upscale"`` d, ``"skip"`` ped, or ``"pad"`` ded.
        batch_size: per-rank batch size (of the largest ``batch_fraction``).
        num_workers: DataLoader worker processes.
        seed: shuffling and crop seed (the same on every rank; ranks get disjoint indices).
        val_pad_multiple: pad validation images to this multiple; None: the codec's ``pad_multiple``.
        val_max_images: evaluate at most this many validation images.

    Resuming: a run restarted from a mid-epoch checkpoint continues the epoch with exactly the batches
    the interrupted run had not seen (same order, same crops).
    """

    def __init__(
        self,
        train_dir: str | os.PathLike,
        val_dir: str | os.PathLike | None = None,
        *,
        crops: int | Crop | Sequence[int | Crop] = 256,
        flips: FlipMode = "horizontal",
        min_size: MinSizePolicy = "upscale",
        batch_size: int = 8,
        num_workers: int = 4,
        seed: int = 0,
        extensions: Sequence[str] | None = None,
        val_pad_multiple: int | None = None,
        val_max_images: int | None = None,
        pin_memory: bool = True,
        root: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.root = None if root is None else str(root)
        self.train_dir = under_root(root, train_dir)
        self.val_dir = None if val_dir is None else under_root(root, val_dir)
        self.crops = as_crops(crops)
        self.flips = flips
        self.min_size = min_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.extensions = extensions
        self.val_pad_multiple = val_pad_multiple
        self.val_max_images = val_max_images
        self.pin_memory = pin_memory
        self.train_set: ImageFolder | None = None

    def _check_folders(self, stage: str | None) -> None:
        for name in ("train_dir", "val_dir") if stage in (None, "fit") else ("val_dir",):
            folder = getattr(self, name)
            if folder is not None and not os.path.isdir(folder) and self.root is None:
                raise FileNotFoundError(
                    f"{name} {folder!r} is not a folder; pass the data folder with --data.root DIR "
                    f"(relative {name} paths are inside it) or give {name} in full"
                )

    def setup(self, stage: str | None = None) -> None:
        self._check_folders(stage)
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = ImageFolder(
                self.train_dir,
                self.crops,
                flips=self.flips,
                min_size=self.min_size,
                extensions=self.extensions,
            )
        if stage in (None, "fit", "validate"):
            self._setup_validation()

    @property
    def skipped_images(self) -> int:
        """Images skipped so far (unreadable, or too small under ``min_size="skip"``), over all workers."""
        return sum(s.skipped.value for s in (self.train_set, self.val_set) if s is not None)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        rank, world = world_of(self)
        sampler = CropMixSampler(
            self.train_set,
            batch_size=self.batch_size,
            crops=self.crops,
            num_replicas=world,
            rank=rank,
            seed=self.seed,
        )
        self._resume_position(sampler)
        return ResumableDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_patches,
            drop_last=True,
            pin_memory=self.pin_memory and on_gpu(self),
            persistent_workers=self.num_workers > 0,
        )

    def _resume_position(self, sampler: CropMixSampler | CropBankBatches) -> None:
        """Point the sampler at the trainer's position (restored from a checkpoint, or 0 on a fresh run)."""
        if self.trainer is None:
            return
        fit_loop = self.trainer.fit_loop
        epoch = fit_loop.epoch_progress.current.processed
        done = fit_loop.epoch_loop.batch_progress.current.processed
        per_epoch, limit = sampler.batches_per_epoch, self.trainer.limit_train_batches
        per_epoch = min(per_epoch, limit) if isinstance(limit, int) else int(per_epoch * limit)
        if done >= per_epoch:  # saved at the end of an epoch: the next one starts from its beginning
            epoch, done = epoch + 1, 0
        sampler.resume(epoch, done)


class WebDatasetDataModule(ValidationFolderMixin, L.LightningDataModule):
    """Random patches from WebDataset shards (local, ``https://``, ``pipe:``); whole images from ``val_dir``.

    Args:
        shards: a directory of ``*.tar``, a brace pattern (``data/train-{000000..000099}.tar``), a URL, or a
            list of these (as written by ``diffcodec shards``).
        val_dir: validation folder evaluated at full resolution, or None.
        crops, flips, min_size: as :class:`ImageFolderDataModule`.
        batch_size: per-rank batch size.
        num_workers: DataLoader worker processes (persistent, so shard streams continue across epochs).
        resampled: draw shards at random with replacement, a different stream per rank and worker
            (infinite; the recommended mode for DDP). Otherwise each epoch is one pass over the shards,
            split between ranks and then workers (needs at least ``world × workers`` shards).
        shuffle_buffer: samples held in each worker's shuffle buffer.
        batches_per_epoch: batches per rank in an epoch (gives the loader a length; every rank runs the
            same number of steps). None: resampled streams never end an epoch, so set ``max_steps`` and an
            integer ``val_check_interval`` on the trainer.
        seed: seed of the shard streams, shuffle buffers and crops.

    A resumed run continues with fresh shard streams (seeded from the restored step), not at the exact
    sample where it stopped: iterable streams have no position to restore.
    """

    def __init__(
        self,
        shards: str | Sequence[str],
        val_dir: str | os.PathLike | None = None,
        *,
        crops: int | Crop | Sequence[int | Crop] = 256,
        flips: FlipMode = "horizontal",
        min_size: MinSizePolicy = "upscale",
        batch_size: int = 8,
        num_workers: int = 4,
        resampled: bool = True,
        shuffle_buffer: int = 1000,
        batches_per_epoch: int | None = None,
        seed: int = 0,
        val_pad_multiple: int | None = None,
        val_max_images: int | None = None,
    ) -> None:
        super().__init__()
        self.urls = expand_shards(shards)
        self.val_dir = None if val_dir is None else str(val_dir)
        self.crops = as_crops(crops)
        self.flips = flips
        self.min_size = min_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.resampled = resampled
        self.shuffle_buffer = shuffle_buffer
        self.batches_per_epoch = batches_per_epoch
        self.seed = seed
        self.val_pad_multiple = val_pad_multiple
        self.val_max_images = val_max_images
        self.skipped = SkipCounter()
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if batches_per_epoch is not None and batches_per_epoch < max(1, num_workers):
            raise ValueError(
                f"batches_per_epoch={batches_per_epoch} must be at least num_workers={num_workers}"
            )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate"):
            self._setup_validation()

    @property
    def skipped_images(self) -> int:
        """Samples skipped so far (unreadable or too small), over all workers of this rank."""
        return self.skipped.value + (self.val_set.skipped.value if self.val_set is not None else 0)

    def train_dataloader(self) -> DataLoader:
        rank, world = world_of(self)
        # a resumed run starts new streams rather than replaying those of step 0
        seed = self.seed + (self.trainer.global_step if self.trainer is not None else 0)
        stage = PatchBatches(
            self.crops,
            batch_size=self.batch_size,
            flips=self.flips,
            min_size=self.min_size,
            seed=seed,
            rank=rank,
            skipped=self.skipped,
            batches=self.batches_per_epoch,
        )
        pipeline = patch_pipeline(
            self.urls,
            stage,
            resampled=self.resampled,
            shuffle_buffer=self.shuffle_buffer,
            seed=seed,
            rank=rank,
            world=world,
            skipped=self.skipped,
        )
        if self.batches_per_epoch is not None:
            pipeline = pipeline.with_length(self.batches_per_epoch, silent=True)
        return DataLoader(
            pipeline,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=on_gpu(self),
        )


class CropBankBatches:
    """The batches of one rank, cut from a :class:`~diffcodec.data.crop_bank.CropBank` (an iterable for
    Lightning; resumable like :class:`~diffcodec.data.sampling.CropMixSampler`).

    Batch ``b`` of epoch ``e`` uses crop :func:`~diffcodec.data.crops.choose_crop` ``(seed, e, b)`` (the same
    on every rank) and a ``torch.Generator`` on the bank's device seeded from ``(seed, e, rank, b)``, so a
    resumed run sees exactly the batches the interrupted one would have.
    """

    def __init__(
        self,
        bank: CropBank,
        crops: Sequence[Crop],
        *,
        flips: FlipMode,
        batch_size: int,
        batches_per_epoch: int,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        if batch_size < 1 or batches_per_epoch < 1:
            raise ValueError(
                f"batch_size and batches_per_epoch must be positive, got {batch_size}, {batches_per_epoch}"
            )
        self.bank, self.crops, self.flips = bank, tuple(crops), flips
        self.batch_size, self.batches_per_epoch = batch_size, batches_per_epoch
        self.seed, self.rank = seed, rank
        self.epoch, self._first = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._first = epoch, 0

    def resume(self, epoch: int, batches_done: int) -> None:
        """Make ``epoch`` the current epoch and start it at batch ``batches_done``."""
        self.epoch, self._first = epoch, batches_done

    def __len__(self) -> int:
        return self.batches_per_epoch

    def batch(self, epoch: int, index: int) -> torch.Tensor:
        """Batch ``index`` of ``epoch`` (a pure function of the arguments and the bank)."""
        crop = self.crops[choose_crop(self.crops, self.seed, epoch, index)]
        generator = torch.Generator(self.bank.device)
        generator.manual_seed(hash((self.seed, epoch, self.rank, index)) & (2**63 - 1))
        return self.bank.sample(self.batch_size, crop, generator, flips=self.flips)

    def __iter__(self) -> Iterator[torch.Tensor]:
        """The current epoch's batches; the next call gives the next epoch's (even if this one is cut short
        by ``limit_train_batches`` or ``max_steps``)."""
        epoch, first = self.epoch, self._first
        self.set_epoch(epoch + 1)
        return (self.batch(epoch, index) for index in range(first, self.batches_per_epoch))


class CropBankDataModule(ImageFolderDataModule):
    """:class:`ImageFolderDataModule` with the training images decoded once into a GPU-side crop bank.

    Every training image is decoded once at ``setup`` into a :class:`~diffcodec.data.crop_bank.CropBank`
    (uint8, on the trainer's device unless ``device`` is given), and each batch is cut there with one
    gather (crops, the crop mix's bicubic downscale, flips), so no DataLoader worker decodes anything
    during training. Use it where the photos fit in device memory (3 bytes a pixel: 36 photos of
    1.5 MP take 160 MB) and decoding, not the model, limits the step rate::

        diffcodec fit -c recipes/base/vae.yaml --data diffcodec.data.CropBankDataModule --data.root DATA

    Args (besides :class:`ImageFolderDataModule`'s; ``num_workers`` and ``pin_memory`` only concern
    validation here):
        device: where the bank lives (``"cpu"``, ``"cuda:0"`` …); None: the trainer's root device.
        batches_per_epoch: training batches per epoch and rank; None: ``len(images) // batch_size``
            (at least 1), an epoch as long as the image-folder path's.

    Supported: a crop mix of square crops with ``within``, ``downscale_from`` and ``batch_fraction``;
    every flip mode; ``min_size`` ``"upscale"`` / ``"skip"`` (applied when the bank is built, against the
    mix's largest crop). Not supported (:class:`~diffcodec.errors.UsageError` at setup): ``Crop.jitter``
    and ``min_size="pad"``. Images are drawn uniformly with replacement, not one permutation per epoch;
    ranks draw independent streams.
    """

    def __init__(
        self,
        train_dir: str | os.PathLike,
        val_dir: str | os.PathLike | None = None,
        *,
        device: str | None = None,
        batches_per_epoch: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(train_dir, val_dir, **kwargs)
        if any(crop.jitter for crop in self.crops):
            raise UsageError(
                "CropBankDataModule does not cut jittered crops (Crop.jitter); use ImageFolderDataModule"
            )
        if self.min_size == "pad":
            raise UsageError("CropBankDataModule does not pad small images; use min_size 'upscale' or 'skip'")
        self.device = device
        self.batches_per_epoch = batches_per_epoch
        self.bank: CropBank | None = None

    def setup(self, stage: str | None = None) -> None:
        self._check_folders(stage)
        if stage in (None, "fit") and self.bank is None:
            if self.device is not None:
                device = torch.device(self.device)
            else:
                device = (
                    self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
                )
            self.bank = CropBank.from_folder(
                self.train_dir,
                min_side=max(crop.source_size for crop in self.crops),
                min_size=self.min_size,
                extensions=self.extensions,
                device=device,
            )
        if stage in (None, "fit", "validate"):
            self._setup_validation()

    def train_dataloader(self) -> CropBankBatches:
        self.setup("fit")
        rank, _ = world_of(self)
        batches = CropBankBatches(
            self.bank,
            self.crops,
            flips=self.flips,
            batch_size=self.batch_size,
            batches_per_epoch=self.batches_per_epoch or max(1, len(self.bank) // self.batch_size),
            seed=self.seed,
            rank=rank,
        )
        self._resume_position(batches)
        return batches
