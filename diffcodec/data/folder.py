"""Image folders: recursive listing, robust decoding, training patches and full-resolution validation images.

Unreadable files (truncated, not an image, an unsupported format) never end an epoch: they are skipped
with a warning and counted in a :class:`SkipCounter` that every DataLoader worker shares.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from diffcodec.data.crops import Crop, FlipMode, MinSizePolicy, TooSmall, as_crops, check_policies, cut_patch
from diffcodec.imageio import pad_to_multiple, to_tensor

#: Errors that mean "this file is not a usable image" (PIL raises OSError for truncated data).
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def image_extensions() -> frozenset[str]:
    """Every file extension Pillow can open here (``.png``, ``.jpg``, ``.webp``, ``.tif``, …), lower case."""
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def list_images(root: str | os.PathLike, extensions: Sequence[str] | None = None) -> list[Path]:
    """All image files under ``root`` (recursively, symlinks followed, hidden entries skipped), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a directory")
    allowed = frozenset(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions or ()) or (
        image_extensions()
    )
    files = []
    for directory, subdirs, names in os.walk(root, followlinks=True):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        files.extend(
            Path(directory) / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in allowed
        )
    return sorted(files)


def open_rgb(source: str | os.PathLike | bytes) -> Image.Image:
    """Decode an image file (path or bytes) fully; raises one of :data:`DECODE_ERRORS` if it is unusable."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.load()
        return image.copy()


class SkipCounter:
    """Counts skipped reads (a broken file met twice counts twice) over all worker processes of a loader."""

    def __init__(self) -> None:
        self._value = multiprocessing.get_context().Value("q", 0)

    def add(self, count: int = 1) -> None:
        with self._value.get_lock():
            self._value.value += count

    @property
    def value(self) -> int:
        return int(self._value.value)


class SampleKey(NamedTuple):
    """What a :class:`~diffcodec.data.sampling.CropMixSampler` hands the dataset for one item."""

    index: int
    crop: int  # index into the crop mix, the same for the whole batch
    keep: bool  # False: dropped by the crop's batch_fraction (the dataset returns None)
    seed: int  # seeds this item's crop position and flips: the same on a resumed run


class ImageFolder(Dataset):
    """Images under a folder, as random training patches (``crops`` given) or whole (``crops=None``).

    Args:
        root: the folder, searched recursively for any format Pillow opens.
        crops: a crop or crop mix (see :mod:`diffcodec.data.crops`); None yields whole images.
        flips: ``"none"``, ``"horizontal"``, ``"both"`` or ``"dihedral"``.
        min_size: what to do with images smaller than a crop: ``"upscale"``, ``"skip"`` or ``"pad"``.
        pad_multiple: whole images are padded (reflect, right and bottom) to this multiple.
        check: decode every file once now and drop unreadable ones (for small validation folders).

    An unreadable training image (or one too small under ``min_size="skip"``) is replaced by the next
    readable one in the folder, so batches stay full; each skip is counted in :attr:`skipped`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        crops: int | Crop | Sequence[int | Crop] | None = None,
        *,
        flips: FlipMode = "none",
        min_size: MinSizePolicy = "upscale",
        pad_multiple: int | None = None,
        extensions: Sequence[str] | None = None,
        check: bool = False,
        max_images: int | None = None,
    ) -> None:
        self.root = Path(root)
        self.files = list_images(self.root, extensions)
        self.crops = None if crops is None else as_crops(crops)
        check_policies(flips, min_size)
        self.flips = flips
        self.min_size = min_size
        self.pad_multiple = pad_multiple
        self.skipped = SkipCounter()
        if check:
            self.files = [f for f in self.files if self._readable(f)]
        if max_images is not None:
            self.files = self.files[:max_images]
        if not self.files:
            raise ValueError(f"no readable images found under {self.root}")

    def __len__(self) -> int:
        return len(self.files)

    def _readable(self, path: Path) -> bool:
        try:
            open_rgb(path)
        except DECODE_ERRORS as error:
            self._skip(path, error)
            return False
        return True

    def _skip(self, path: Path, error: Exception) -> None:
        self.skipped.add()
        if not isinstance(error, TooSmall):
            warnings.warn(f"skipping unreadable image {path}: {error}", stacklevel=3)

    def load(self, index: int) -> torch.Tensor:
        """The whole image ``index`` as a (1, 3, H, W) tensor in [0, 1], unpadded (raises if unreadable)."""
        return to_tensor(open_rgb(self.files[index]))

    def __getitem__(self, key: int | SampleKey) -> torch.Tensor | None:
        if self.crops is None:
            image = self.load(int(key))
            if self.pad_multiple:
                image = pad_to_multiple(image, self.pad_multiple)
            return image[0]
        if not isinstance(key, SampleKey):
            key = SampleKey(int(key), 0, True, random.getrandbits(63))
        if not key.keep:
            return None
        rng = random.Random(key.seed)
        crop = self.crops[key.crop]
        for attempt in range(len(self.files)):
            path = self.files[(key.index + attempt) % len(self.files)]
            try:
                return cut_patch(open_rgb(path), crop, flips=self.flips, min_size=self.min_size, rng=rng)
            except (TooSmall, *DECODE_ERRORS) as error:
                self._skip(path, error)
        raise RuntimeError(
            f"none of the {len(self.files)} images under {self.root} can give a {crop.source_size}px crop"
        )


def collate_patches(items: Sequence[torch.Tensor | None]) -> torch.Tensor:
    """Stack patches into a (B, 3, S, S) batch, leaving out items a crop's ``batch_fraction`` dropped."""
    kept = [item for item in items if item is not None]
    if not kept:
        raise RuntimeError("a batch lost all its items")
    return torch.stack(kept)
