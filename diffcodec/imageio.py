"""Image input/output for codecs: any PIL image, path or tensor in, a (1, 3, H, W) float tensor out.

Codecs never resize. Inputs are padded (right and bottom) to the method's multiple and the
reconstruction is cropped back to the original size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

ImageLike = Union[str, os.PathLike, Image.Image, torch.Tensor, np.ndarray]  # noqa: UP007 (runtime alias)

#: Largest side accepted by :func:`to_tensor` (also the container's limit).
MAX_SIDE = 1 << 16


def _from_pil(image: Image.Image) -> torch.Tensor:
    has_alpha = image.mode in ("RGBA", "LA", "PA")
    if has_alpha or (image.mode == "P" and "transparency" in image.info):
        # Alpha is not coded: composite on white, the way browsers show it.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        array = np.clip(array / peak, 0.0, 1.0).astype(np.float32)
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

    Grey images are replicated to RGB, alpha is composited on white, 16-bit images are scaled.
    Anything else that is not an image raises ``ValueError`` naming the problem.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        try:
            with Image.open(path) as opened:
                opened.load()
                tensor = _from_pil(opened)
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{path} is not a readable image: {error}") from error
    elif isinstance(image, Image.Image):
        tensor = _from_pil(image)
    elif isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim != 3:
            raise ValueError(f"expected an (H, W, C) array, got shape {image.shape}")
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
    return tensor


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad right and bottom so that H and W become multiples of ``multiple``.

    Reflect padding (the anchors' choice) needs the pad to be smaller than the side; for tiny images
    it falls back to replicate padding, which is what reflect would converge to.
    """
    height, width = x.shape[-2:]
    pad_h = -height % multiple
    pad_w = -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    if mode == "reflect" and (pad_h >= height or pad_w >= width):
        mode = "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def to_pil(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) tensor in [0, 1] → 8-bit RGB PIL image, **rounded** (not truncated)."""
    if x.dim() == 4:
        x = x[0]
    array = x.detach().float().clamp(0, 1).mul(255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, mode="RGB")


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round a [0, 1] tensor to the 8-bit grid, as saving it to PNG would."""
    return x.clamp(0, 1).mul(255.0).round().div(255.0)
