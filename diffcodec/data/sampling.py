"""Distributed, resumable sampling of map-style datasets with a per-batch crop choice.

:class:`CropMixSampler` is a :class:`~torch.utils.data.DistributedSampler` (so Lightning keeps it instead of
injecting its own) that

- splits a shuffled permutation between ranks (``DistributedSampler``'s rule: rank r takes every
  ``world``-th index starting at r), reshuffled each epoch from ``(seed, epoch)``;
- yields :class:`~diffcodec.data.folder.SampleKey` s: for the b-th batch of an epoch the crop is
  :func:`~diffcodec.data.crops.choose_crop` ``(seed, epoch, b)`` on every rank, and each item carries its own
  seed for its crop position and flips, so a given step sees the same patches whatever the worker count;
- can start an epoch at a batch offset (:meth:`CropMixSampler.resume`), which is how a run resumed from a
  mid-epoch checkpoint continues with exactly the batches it had not yet seen.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from torch.utils.data import DataLoader, Dataset, DistributedSampler

from diffcodec.data.crops import Crop, choose_crop
from diffcodec.data.folder import SampleKey


class CropMixSampler(DistributedSampler):
    """Per-rank sample keys in whole batches of ``batch_size`` (the epoch's remainder is dropped)."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        crops: Sequence[Crop],
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.crops = tuple(crops)
        self.batches_per_epoch = self.num_samples // batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{len(dataset)} images cannot fill one batch of {batch_size} on each of {num_replicas} "
                "rank(s); lower the batch size or add images"
            )
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if self._resume is not None and self._resume[0] != epoch:
            self._resume = None

    def resume(self, epoch: int, batches_done: int) -> None:
        """Make ``epoch`` the current epoch and skip its first ``batches_done`` batches when iterated."""
        if not 0 <= batches_done <= self.batches_per_epoch:
            raise ValueError(f"cannot resume at batch {batches_done} of an epoch of {self.batches_per_epoch}")
        self.set_epoch(epoch)
        self._resume = (epoch, batches_done)

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def __iter__(self) -> Iterator[SampleKey]:
        indices = list(super().__iter__())
        first = self._resume[1] if self._resume is not None and self._resume[0] == self.epoch else 0
        for batch in range(first, self.batches_per_epoch):
            choice = choose_crop(self.crops, self.seed, self.epoch, batch)
            kept = self.crops[choice].kept(self.batch_size)
            for slot in range(self.batch_size):
                position = batch * self.batch_size + slot
                seed = hash((self.seed, self.epoch, self.rank, position)) & (2**63 - 1)
                yield SampleKey(indices[position], choice, slot < kept, seed)


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`CropMixSampler` that Lightning treats as resumable mid-epoch.

    The position itself is restored from the trainer's loop progress (see
    ``ImageFolderDataModule._resume_position``), which counts the batches the model actually trained on;
    the state saved here only lets a resumed run check that the data order is the same (same seed).
    """

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.sampler.seed, "num_replicas": self.sampler.num_replicas}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        current = self.state_dict()
        if state != current:
            warnings.warn(
                f"resuming with a different data order (checkpoint {state}, now {current}): the run "
                "continues, but not with the exact batches the interrupted run would have seen",
                stacklevel=2,
            )
