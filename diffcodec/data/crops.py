"""Training patches: random crops, multi-resolution crop mixes, flips and minimum-size handling.

A :class:`Crop` says how one training patch is cut from a decoded image; a list of them with ``weight``s is
a *crop mix*, from which one crop is drawn **per batch** (all items of a batch share a size), identically
on every rank (see :func:`choose_crop`). The methods' settings:

============  =====================================================================================
StableCodec   ``[Crop(512)]``, flips ``"both"``, ``min_size="skip"`` (only images with both sides ≥ 512
              are used; official ``train.py``). CADC uses the same.
OSCAR         ``[Crop(256, jitter=8)]``, flips ``"dihedral"``: a 264 crop, one of the 8 dihedral
              transforms (KAIR ``augment_img``), then with probability ½ a random 256 crop inside it,
              else its top-left 256 crop (official ``main_train_hyper_enc.py``).
OneDC         ``[Crop(512, weight=0.2, downscale_from=1024), Crop(512, weight=0.5, within=1024),
              Crop(1024, weight=0.3, batch_fraction=0.25)]``, flips ``"horizontal"``,
              ``min_size="upscale"``: images whose short side is under 1024 are resized up, a 1024 patch
              is cut, then per batch it is resized to 512, cropped to 512, or kept with a quarter of the
              batch (the official stage-1 config; the appendix's {512, 1024} at {0.6, 0.4} is
              ``[Crop(512, weight=0.6, within=1024), Crop(1024, weight=0.4)]``).
============  =====================================================================================
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from PIL import Image

from diffcodec.errors import TooSmall
from diffcodec.imageio import to_tensor

FlipMode = Literal["none", "horizontal", "both", "dihedral"]
MinSizePolicy = Literal["upscale", "skip", "pad"]


@dataclass(frozen=True)
class Crop:
    """One way of cutting a square training patch of side ``size``.

    Args:
        size: side of the patch the model sees.
        weight: relative probability of this crop in a crop mix (one crop is drawn per batch).
        downscale_from: cut a ``downscale_from`` patch and resize it (bicubic, antialiased) to ``size``.
        within: cut a ``within`` patch first, then a random ``size`` crop inside it. The result is a
            uniform random crop, but images are held to the larger minimum size (OneDC resizes images
            to a 1024 short side before any of its crops).
        jitter: OSCAR's two-step crop: cut ``size + jitter``, flip/rotate it, then with probability ½ a
            random ``size`` crop inside it, otherwise its top-left ``size`` crop.
        batch_fraction: keep only this fraction of the batch (rounded up) when this crop is drawn
            (OneDC trains 1024 patches with a quarter of the batch).
    """

    size: int
    weight: float = 1.0
    downscale_from: int | None = None
    within: int | None = None
    jitter: int = 0
    batch_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"crop size must be positive, got {self.size}")
        if not (self.weight > 0 and math.isfinite(self.weight)):
            raise ValueError(f"crop weight must be a positive number, got {self.weight}")
        if not 0 < self.batch_fraction <= 1:
            raise ValueError(f"batch_fraction must lie in (0, 1], got {self.batch_fraction}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")
        for name in ("downscale_from", "within"):
            value = getattr(self, name)
            if value is not None and value < self.size:
                raise ValueError(f"{name}={value} must be at least the crop size {self.size}")
        if sum(v is not None and v > 0 for v in (self.downscale_from, self.within, self.jitter or None)) > 1:
            raise ValueError("use at most one of downscale_from, within and jitter in a Crop")

    @property
    def source_size(self) -> int:
        """Side of the square first cut from the image (the minimum image side this crop needs)."""
        return max(self.size + self.jitter, self.downscale_from or 0, self.within or 0)

    def kept(self, batch_size: int) -> int:
        """How many items of a batch of ``batch_size`` are kept when this crop is drawn."""
        return max(1, math.ceil(batch_size * self.batch_fraction))


def as_crops(crops: int | Crop | Sequence[int | Crop | dict]) -> tuple[Crop, ...]:
    """Normalise a crop spec (a size, a :class:`Crop`, dicts from YAML, or a list of them) to a tuple."""
    if isinstance(crops, (int, Crop, dict)):
        crops = [crops]
    result = []
    for crop in crops:
        if isinstance(crop, bool):
            raise TypeError("a crop is a size, a Crop or a dict of Crop fields, not a bool")
        if isinstance(crop, int):
            crop = Crop(crop)
        elif isinstance(crop, dict):
            crop = Crop(**crop)
        elif not isinstance(crop, Crop):
            raise TypeError(f"a crop is a size, a Crop or a dict of Crop fields, got {type(crop).__name__}")
        result.append(crop)
    if not result:
        raise ValueError("the crop mix is empty")
    return tuple(result)


def choose_crop(crops: Sequence[Crop], seed: int, epoch: int, batch: int) -> int:
    """Index of the crop for batch ``batch`` of ``epoch``: a pure function of its arguments.

    Every rank computes the same choice for its ``batch``-th batch, so the ranks of a DDP job train on the
    same patch size at each step (as OneDC synchronises its per-step transform across processes).
    """
    if len(crops) == 1:
        return 0
    rng = random.Random(f"diffcodec-crop:{seed}:{epoch}:{batch}")
    return rng.choices(range(len(crops)), weights=[c.weight for c in crops])[0]


def check_policies(flips: str, min_size: str) -> None:
    """Raise ``ValueError`` for an unknown flip mode or minimum-size policy (before any image is read)."""
    if flips not in ("none", "horizontal", "both", "dihedral"):
        raise ValueError(f"unknown flip mode {flips!r}; use 'none', 'horizontal', 'both' or 'dihedral'")
    if min_size not in ("upscale", "skip", "pad"):
        raise ValueError(f"unknown min_size policy {min_size!r}; use 'upscale', 'skip' or 'pad'")


def upscale(image: Image.Image, side: int) -> Image.Image:
    """``image`` resized (bicubic) so that its short side is ``side`` (``min_size="upscale"``)."""
    width, height = image.size
    scale = side / min(width, height)
    return image.resize(
        (max(side, round(width * scale)), max(side, round(height * scale))), Image.Resampling.BICUBIC
    )


def _source_patch(image: Image.Image, side: int, policy: MinSizePolicy, rng: random.Random) -> torch.Tensor:
    """A random ``side`` × ``side`` square of ``image`` as a (3, side, side) tensor, small images handled."""
    width, height = image.size
    if min(width, height) < side:
        if policy == "skip":
            raise TooSmall(f"{width}x{height} is smaller than the {side}x{side} crop")
        if policy == "upscale":
            image = upscale(image, side)
            width, height = image.size
        elif policy != "pad":
            raise ValueError(f"unknown min_size policy {policy!r}; use 'upscale', 'skip' or 'pad'")
    crop_w, crop_h = min(side, width), min(side, height)
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    x = to_tensor(image.crop((left, top, left + crop_w, top + crop_h)))
    if crop_w < side or crop_h < side:  # policy "pad": reflect right and bottom, as the codecs pad
        pad_w, pad_h = side - crop_w, side - crop_h
        mode = "reflect" if pad_w < crop_w and pad_h < crop_h else "replicate"
        x = torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x[0]


def flip(x: torch.Tensor, mode: FlipMode, rng: random.Random) -> torch.Tensor:
    """Random flips of a (3, H, W) patch: none, horizontal, horizontal+vertical, or one of 8 dihedral maps."""
    if mode == "none":
        return x
    if mode == "horizontal":
        return x.flip(-1) if rng.random() < 0.5 else x
    if mode == "both":
        if rng.random() < 0.5:
            x = x.flip(-1)
        if rng.random() < 0.5:
            x = x.flip(-2)
        return x
    if mode == "dihedral":
        k = rng.randrange(8)  # KAIR augment_img modes 0..7: rotations by 90°·(k mod 4), transposed if k ≥ 4
        if k >= 4:
            x = x.transpose(-1, -2)
        return torch.rot90(x, k % 4, dims=(-2, -1))
    raise ValueError(f"unknown flip mode {mode!r}; use 'none', 'horizontal', 'both' or 'dihedral'")


def cut_patch(
    image: Image.Image, crop: Crop, *, flips: FlipMode, min_size: MinSizePolicy, rng: random.Random
) -> torch.Tensor:
    """Cut one training patch (3, ``crop.size``, ``crop.size``) in [0, 1] from a decoded image.

    Only the patch is converted to a tensor, so large images cost little. Raises :class:`TooSmall` when
    the image cannot hold the crop and ``min_size="skip"``.
    """
    x = _source_patch(image, crop.source_size, min_size, rng)
    if crop.jitter:
        x = flip(x, flips, rng)
        if rng.random() < 0.5:
            top, left = rng.randint(0, crop.jitter), rng.randint(0, crop.jitter)
        else:
            top = left = 0
        return x[:, top : top + crop.size, left : left + crop.size].contiguous()
    if crop.downscale_from:
        x = torch.nn.functional.interpolate(
            x[None], size=(crop.size, crop.size), mode="bicubic", antialias=True, align_corners=False
        )[0].clamp_(0, 1)
    elif crop.within:
        top = rng.randint(0, crop.within - crop.size)
        left = rng.randint(0, crop.within - crop.size)
        x = x[:, top : top + crop.size, left : left + crop.size]
    return flip(x, flips, rng).contiguous()
