"""A crop bank: training photos decoded once into uint8 tensors, random crops and flips cut on the device.

The image-folder path (:class:`~diffcodec.data.folder.ImageFolder`) decodes a whole photo with Pillow for
every training patch. For a 1.5-megapixel photo and a 128² patch that is ~100× more decoding than pixels
used, and on a GPU it starves the training step (the bundled models' last run: 6 VAE steps/s on an H200).
A :class:`CropBank` decodes every photo once, keeps it as a uint8 (3, H, W) tensor (¼ of float32's
memory) in one flat buffer, optionally on the training device, and cuts whole batches with one gather::

    photos ──decode once──▶ flat uint8 buffer (+ offset, H, W per image)      [on the device]
    batch:  image index, top, left, flip variant  ◀── torch.Generator (seeded per batch)
            └─ torch.take(buffer, offset + c·H·W + (top+y)·W + (left+x)) ─▶ (B, 3, s, s) / 255
            └─ optional bicubic downscale (Crop.downscale_from), then the per-item flip (one gather)

The patches are exactly those of :mod:`diffcodec.data.crops` (same windows, same flip transforms, same
bicubic antialiased downscale), drawn from another random stream (torch, not Python's ``random``).

Differences from the image-folder path, by design:

- images are drawn uniformly *with replacement* (no per-epoch permutation);
- ``min_size`` is applied once, when the bank is built, against the largest ``source_size`` of the crop
  mix (``"upscale"``: bicubic resize of the short side to it, as :mod:`~diffcodec.data.crops` does;
  ``"skip"``: the image is left out of the bank); ``"pad"`` is not supported (:class:`UsageError`);
- ``Crop.jitter`` (OSCAR's two-step crop) is not supported (:class:`UsageError`); ``within``,
  ``downscale_from`` and ``batch_fraction`` are.
- 16-bit images are stored at 8 bits.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from diffcodec.data.crops import Crop, FlipMode, MinSizePolicy, as_crops, check_policies, upscale
from diffcodec.data.folder import DECODE_ERRORS, list_images, open_rgb
from diffcodec.errors import UsageError
from diffcodec.imageio import to_tensor

#: How many transforms each flip mode draws from (uniformly), see :func:`flip_grids`.
FLIP_VARIANTS = {"none": 1, "horizontal": 2, "both": 4, "dihedral": 8}


def flip_grids(mode: FlipMode, size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Source indices of every flip variant of ``mode``: (variants, size·size) int64 into a flat s×s patch.

    Variant ``k`` of a patch ``x`` is ``x.flatten(-2)[..., grids[k]]``; the transforms are those of
    :func:`diffcodec.data.crops.flip`: ``"horizontal"`` k ∈ {identity, horizontal flip}; ``"both"`` bit 0 a
    horizontal flip, bit 1 a vertical one; ``"dihedral"`` KAIR's ``augment_img`` modes (transposed if
    k ≥ 4, then rotated by 90°·(k mod 4)).
    """
    check_policies(mode, "upscale")
    index = torch.arange(size * size, device=device).view(size, size)
    grids = []
    for k in range(FLIP_VARIANTS[mode]):
        g = index
        if mode in ("horizontal", "both"):
            g = g.flip(-1) if k & 1 else g
            g = g.flip(-2) if k & 2 else g
        elif mode == "dihedral":
            g = torch.rot90(g.transpose(-1, -2) if k >= 4 else g, k % 4, dims=(-2, -1))
        grids.append(g.reshape(-1))
    return torch.stack(grids)


class CropBank:
    """Decoded training images as uint8 tensors; :meth:`sample` cuts a batch of random crops on their device.

    Args:
        images: uint8 (3, H, W) tensors (any sizes).
        device: where the bank (and so every batch) lives; None: where the first image is.

    Build one from a folder with :meth:`from_folder`.
    """

    def __init__(self, images: Sequence[torch.Tensor], device: torch.device | str | None = None) -> None:
        if not images:
            raise UsageError("a crop bank needs at least one image")
        for image in images:
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
                raise UsageError(
                    f"crop bank images are uint8 (3, H, W) tensors, got {image.dtype} {tuple(image.shape)}"
                )
        device = torch.device(device) if device is not None else images[0].device
        self.sizes = torch.tensor([image.shape[1:] for image in images], dtype=torch.int64, device=device)
        numel = self.sizes.prod(1) * 3
        self.offsets = torch.cumsum(numel, 0) - numel
        self.data = torch.cat([image.reshape(-1).to(device) for image in images])
        self.min_side = min(min(image.shape[1:]) for image in images)
        self._grids: dict[tuple[str, int], torch.Tensor] = {}

    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike,
        *,
        min_side: int = 0,
        min_size: MinSizePolicy = "upscale",
        extensions: Sequence[str] | None = None,
        max_images: int | None = None,
        device: torch.device | str = "cpu",
    ) -> CropBank:
        """Decode every image under ``root`` (as :class:`~diffcodec.data.folder.ImageFolder` lists them).

        Images whose short side is under ``min_side`` are upscaled (``min_size="upscale"``) or left out
        (``"skip"``); unreadable files are left out with a warning. Raises :class:`UsageError` for
        ``"pad"``, or when no usable image remains.
        """
        check_policies("none", min_size)
        if min_size == "pad":
            raise UsageError("a crop bank does not pad small images; use min_size 'upscale' or 'skip'")
        files = list_images(root, extensions)
        images = []
        for path in files:
            if max_images is not None and len(images) >= max_images:
                break
            try:
                image = open_rgb(path)
                if min(image.size) < min_side:
                    if min_size == "skip":
                        continue
                    image = upscale(image, min_side)
                x = to_tensor(image)[0]
            except DECODE_ERRORS as error:
                warnings.warn(f"skipping unreadable image {path}: {error}", stacklevel=2)
                continue
            images.append(x.mul(255).round_().to(torch.uint8))
        if not images:
            raise UsageError(
                f"no usable image under {Path(root)} for a crop bank"
                + (f" (none is at least {min_side} px on its short side)" if min_size == "skip" else "")
            )
        return cls(images, device=device)

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def nbytes(self) -> int:
        """Memory the decoded images take."""
        return self.data.numel()

    def to(self, device: torch.device | str) -> CropBank:
        """Move the bank to ``device`` (in place); returns it."""
        self.data, self.sizes, self.offsets = (t.to(device) for t in (self.data, self.sizes, self.offsets))
        self._grids = {}
        return self

    def windows(self, index: torch.Tensor, top: torch.Tensor, left: torch.Tensor, side: int) -> torch.Tensor:
        """The uint8 (B, 3, side, side) windows of images ``index`` at (``top``, ``left``), one gather."""
        height, width = self.sizes[index, 0], self.sizes[index, 1]
        rows = torch.arange(side, device=self.device)
        channel = torch.arange(3, device=self.device).view(1, 3, 1, 1)
        flat = (
            self.offsets[index].view(-1, 1, 1, 1)
            + channel * (height * width).view(-1, 1, 1, 1)
            + (top.view(-1, 1, 1, 1) + rows.view(1, 1, -1, 1)) * width.view(-1, 1, 1, 1)
            + left.view(-1, 1, 1, 1)
            + rows.view(1, 1, 1, -1)
        )
        return torch.take(self.data, flat)

    def sample(
        self,
        batch_size: int,
        crop: int | Crop,
        generator: torch.Generator | None = None,
        *,
        flips: FlipMode = "none",
    ) -> torch.Tensor:
        """A float32 (B, 3, s, s) batch in [0, 1] of random crops, on the bank's device.

        ``crop`` is a size or a :class:`~diffcodec.data.crops.Crop` (``within``, ``downscale_from`` and
        ``batch_fraction`` honoured; B is ``crop.kept(batch_size)``). Every random draw (image, position,
        flip) comes from ``generator``, which must live on the bank's device: the same seed gives the
        same batch. Images too small for the crop raise :class:`UsageError` (build the bank with
        ``min_side`` = the crop mix's largest ``source_size``).
        """
        (crop,) = as_crops(crop)
        if crop.jitter:
            raise UsageError("a crop bank does not cut jittered crops (Crop.jitter, OSCAR's two-step crop)")
        check_policies(flips, "upscale")
        side, count = crop.source_size, crop.kept(batch_size)
        if self.min_side < side:
            raise UsageError(
                f"the crop bank holds images smaller than the {side}px crop; build it with min_side={side}"
            )
        device = self.device

        def draw(high: torch.Tensor | int) -> torch.Tensor:  # uniform integers in [0, high] per item
            u = torch.rand(count, generator=generator, device=device)
            return (u * (torch.as_tensor(high, device=device) + 1)).long().clamp_max_(high)

        index = torch.randint(len(self), (count,), generator=generator, device=device)
        top, left = draw(self.sizes[index, 0] - side), draw(self.sizes[index, 1] - side)
        if crop.within:  # a uniform size crop inside a uniform `within` window: one uniform crop
            top, left = top + draw(crop.within - crop.size), left + draw(crop.within - crop.size)
            side = crop.size
        variant = torch.randint(FLIP_VARIANTS[flips], (count,), generator=generator, device=device)
        x = self.windows(index, top, left, side).float().div_(255)
        if crop.downscale_from:
            x = F.interpolate(
                x, size=(crop.size, crop.size), mode="bicubic", antialias=True, align_corners=False
            )
            x = x.clamp_(0, 1)
        if flips == "none":
            return x
        key = (flips, crop.size)
        if key not in self._grids:
            self._grids[key] = flip_grids(flips, crop.size, device)
        grids = self._grids[key][variant]  # (B, s·s)
        x = x.flatten(-2).gather(-1, grids[:, None].expand(-1, 3, -1))
        return x.view(count, 3, crop.size, crop.size)
