"""Image input/output for codecs: any PIL image, path or tensor in, a (1, 3, H, W) float tensor out.

Codecs never resize. Inputs are padded (right and bottom) to the method's multiple and the
reconstruction is cropped back to the original size. Images are taken as people have them:

- the EXIF orientation of a photo is applied (``ImageOps.exif_transpose``), so it is coded upright;
- 16-bit images are scaled by 65535 (their full range), never by their own maximum;
- an alpha channel is composited on **white** (as browsers show it) with an :class:`AlphaWarning`: the
  codecs code RGB only;
- an image too large to decode safely (Pillow's decompression-bomb limit) raises
  :class:`ImageTooLargeError`, a ``ValueError``.

:func:`save_image` writes images atomically (:func:`diffcodec.files.write_atomic`).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from diffcodec.files import write_atomic

ImageLike = Union[str, os.PathLike, Image.Image, torch.Tensor, np.ndarray]  # noqa: UP007 (runtime alias)

#: Largest side accepted by :func:`to_tensor` (also the container's limit).
MAX_SIDE = 1 << 16


class ImageTooLargeError(ValueError):
    """An image file larger than Pillow decodes safely (``Image.MAX_IMAGE_PIXELS``, decompression bombs)."""


class AlphaWarning(UserWarning):
    """An image's alpha channel was composited on white: the codecs code RGB only."""


def _from_pil(image: Image.Image) -> torch.Tensor:
    image = ImageOps.exif_transpose(image) or image  # EXIF orientation: code the photo upright
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La")
    if has_alpha or (image.mode == "P" and "transparency" in image.info):
        warnings.warn(
            f"the {image.mode} image has an alpha channel: composited on white (diffcodec codes RGB only)",
            AlphaWarning,
            stacklevel=3,
        )
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey (PNG opens as I;16 or I)
        array = np.asarray(image, dtype=np.float64)
        array = np.clip(array / 65535.0, 0.0, 1.0).astype(np.float32)
        tensor = torch.from_numpy(array)[None].expand(3, -1, -1)
        return tensor[None].contiguous()
    if image.mode == "F":
        raise ValueError("floating-point PIL images (mode 'F') are ambiguous; pass a [0, 1] tensor")
    image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float().div_(255.0)


def _from_tensor(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dim() == 3:
        tensor = tensor[None]
    if tensor.dim() != 4:
        raise ValueError(f"expected an image of shape (3, H, W) or (1, 3, H, W): {tuple(tensor.shape)}")
    if tensor.shape[0] != 1:
        raise ValueError(
            f"compress takes one image at a time, got a batch of {tensor.shape[0]}; loop over the batch"
        )
    if tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    if tensor.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels (RGB), got {tensor.shape[1]}")
    if tensor.shape[-2] < 1 or tensor.shape[-1] < 1:
        raise ValueError(f"empty image ({tensor.shape[-2]}x{tensor.shape[-1]})")
    if tensor.dtype == torch.uint8:
        return tensor.float().div(255.0)
    if not tensor.is_floating_point():
        raise ValueError(f"image tensors must be uint8 or floating point in [0, 1], got {tensor.dtype}")
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError("image tensor contains NaN or infinite values")
    lo, hi = float(tensor.min()), float(tensor.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"float image tensors must lie in [0, 1], got values in [{lo:.3f}, {hi:.3f}]")
    return tensor.clamp(0.0, 1.0)


def to_tensor(image: ImageLike) -> torch.Tensor:
    """Convert a path, PIL image, HWC uint8 array or tensor to a (1, 3, H, W) float32 tensor in [0, 1].

    Grey images are replicated to RGB, the EXIF orientation is applied, alpha is composited on white
    (with an :class:`AlphaWarning`), 16-bit images and arrays are scaled by 65535. Anything else that is
    not an image raises ``ValueError`` naming the problem (:class:`ImageTooLargeError` for a
    decompression bomb).
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        try:
            with Image.open(path) as opened:
                opened.load()
                tensor = _from_pil(opened)
        except Image.DecompressionBombError as error:
            raise ImageTooLargeError(f"{path} is too large to decode safely: {error}") from error
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{path} is not a readable image: {error}") from error
    elif isinstance(image, Image.Image):
        tensor = _from_pil(image)
    elif isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3:
            raise ValueError(f"expected an (H, W, C) array, got shape {image.shape}")
        if image.dtype == np.uint16:
            image = image.astype(np.float32) / 65535.0
        tensor = _from_tensor(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    elif isinstance(image, torch.Tensor):
        tensor = _from_tensor(image.detach().cpu())
    else:
        raise TypeError(f"cannot read an image from {type(image).__name__}; pass a path, PIL image or tensor")
    height, width = tensor.shape[-2:]
    if height < 1 or width < 1:
        raise ValueError(f"empty image ({height}x{width})")
    if height >= MAX_SIDE or width >= MAX_SIDE:
        raise ValueError(f"image of {height}x{width} exceeds the largest supported side ({MAX_SIDE - 1})")
    # one memory layout whatever the source (a permuted HWC array would make padding keep channels-last
    # strides, and convolutions pick other kernels: different rounding, different bits)
    return tensor.contiguous()


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad right and bottom so that H and W become multiples of ``multiple`` (see :func:`pad_to`)."""
    height, width = x.shape[-2:]
    return pad_to(x, height + -height % multiple, width + -width % multiple, mode)


def pad_to(x: torch.Tensor, height: int, width: int, mode: str = "reflect") -> torch.Tensor:
    """Pad right and bottom to ``height`` × ``width`` (at least the image's size).

    Reflect padding (the anchors' choice) needs the pad to be smaller than the side; for tiny images
    it falls back to replicate padding, which is what reflect would converge to.
    """
    pad_h = height - x.shape[-2]
    pad_w = width - x.shape[-1]
    if pad_h < 0 or pad_w < 0:
        raise ValueError(f"cannot pad {tuple(x.shape[-2:])} to the smaller {height}x{width}")
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == "reflect" and (pad_h >= x.shape[-2] or pad_w >= x.shape[-1]):
        mode = "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def to_pil(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) tensor in [0, 1] → 8-bit RGB PIL image, **rounded** (not truncated)."""
    if x.dim() == 4:
        x = x[0]
    array = x.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def save_image(
    image: Image.Image | torch.Tensor,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
    **params: object,
) -> None:
    """Save a PIL image or a [0, 1] tensor atomically, in the format its suffix names (.png, .jpg, …).

    ``overwrite=False`` raises ``FileExistsError`` for an existing file (the default replaces it, like
    ``PIL.Image.save``). ``params`` go to ``PIL.Image.save`` (e.g. ``quality=95``).
    """
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise ValueError(f"cannot tell an image format from {path.name!r}; name it .png, .jpg, .webp, ...")
    if isinstance(image, torch.Tensor):
        image = to_pil(image)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **params)
    write_atomic(path, buffer.getvalue(), overwrite=overwrite)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round a [0, 1] tensor to the 8-bit grid, as saving it to PNG would."""
    return x.clamp(0, 1).mul(255.0).round().div(255.0)
