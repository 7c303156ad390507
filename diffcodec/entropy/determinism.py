"""Entropy parameters that every machine computes bit for bit alike: CPU, float32, one thread, one image.

The decoder must rebuild exactly the CDF indexes the encoder used, or the range decoder reads garbage (a
file that fails to decode, or decodes to the wrong symbols). The indexes are a step function of the entropy
parameters (a scale σ falls in one bucket of a log-spaced table), so *any* difference in the parameter
networks' floating-point results — another GPU, TF32, another cuDNN/oneDNN kernel, another thread count
(oneDNN splits reductions by thread) or another batch size (other GEMM blocking) — can move a σ across a
bucket edge. On this project's CPU a 448² OneDC file written with 2 threads differed from the 1-thread
one by one index at a parameter difference of 4·10⁻⁷; files written on an H200 failed to decode on a CPU.

diffcodec therefore runs the parameter path — the hyper-synthesis h_s, the quadtree context heads and LRP,
OneDC's prior fusion and spatial prior, and the scale → index mapping — in one fixed arithmetic at both
ends (Ballé et al. 2019, "Integer networks for data compression", §1 name the problem; their integer
networks are the other cure, which would need retrained networks):

- on the **CPU in float32**, whatever device the codec is on (:func:`cpu_replica` keeps a CPU copy of a
  module that lives elsewhere, refreshed when its weights change, e.g. on a rung switch);
- with **one thread** and deterministic, non-TF32 settings (:func:`parameter_mode`);
- **one image at a time** (batches are split), so a batch codes each image exactly as it would alone.

The CDF tables themselves are built on the CPU in float32 from the stored parameters (``update``), and the
analysis side (VAE encoder, g_a, h_a) only decides *which* symbols are written, never whether they decode.
The cost is the parameter networks' CPU time at both ends (``diffcodec bench`` reports it under
``latent_codec``); the U-Net, VAE and captioner stay on the codec's device.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor, nn

__all__ = [
    "cpu_replica",
    "device_parameter_path",
    "parameter_mode",
    "parameter_net",
    "portable",
    "to_parameter_device",
]

_REPLICA = "_diffcodec_cpu_replica"
_PORTABLE: ContextVar[bool] = ContextVar("diffcodec_portable_parameters", default=True)


def portable() -> bool:
    """Whether the parameter path runs portably (CPU, the default) rather than on the codec's device."""
    return _PORTABLE.get()


@contextmanager
def device_parameter_path() -> Iterator[None]:
    """Inside the block the parameter path runs on the codec's own device (float32, no TF32, deterministic
    cuDNN, image by image) instead of the CPU: fast on a GPU, but a file then decodes reliably only where
    the same kind of device and kernels compute the parameters. For speed measurements (``diffcodec bench
    --parameter-path device``) and closed systems; files written inside decode anywhere only by chance."""
    token = _PORTABLE.set(False)
    try:
        yield
    finally:
        _PORTABLE.reset(token)


def _is_cpu_fp32(module: nn.Module) -> bool:
    tensors = [*module.parameters(), *module.buffers()]
    return all(
        t.device.type == "cpu" and (not t.is_floating_point() or t.dtype == torch.float32) for t in tensors
    )


def _weights_key(module: nn.Module) -> tuple:
    key = []
    for tensor in (*module.parameters(), *module.buffers()):
        try:
            version = tensor._version
        except RuntimeError:  # an inference tensor has no version counter: key on its storage only
            version = -1
        key.append((tensor.data_ptr(), version, str(tensor.device), tensor.dtype))
    return tuple(key)


def cpu_replica(module: nn.Module) -> nn.Module:
    """``module`` itself if its weights are float32 on the CPU, else a cached CPU float32 copy of it.

    The copy is rebuilt whenever a parameter or buffer of ``module`` changed (storage, version counter,
    device or dtype), so rung switches and ``load_state_dict`` are picked up. It is not part of the state
    dict and is not moved by ``module.to``.
    """
    if not portable() or _is_cpu_fp32(module):
        return module
    key = _weights_key(module)
    cached = module.__dict__.get(_REPLICA)
    if cached is not None and cached[0] == key:
        return cached[1]
    module.__dict__.pop(_REPLICA, None)  # do not copy an old replica along
    with torch.inference_mode(False), torch.no_grad():
        replica = copy.deepcopy(module).to(device="cpu", dtype=torch.float32).eval()
    module.__dict__[_REPLICA] = (key, replica)
    return replica


def to_parameter_device(tensor: Tensor, module: nn.Module) -> Tensor:
    """``tensor`` where ``module`` (a :func:`cpu_replica`) computes: float32 (integers keep their dtype) on
    the CPU, or on the module's device under :func:`device_parameter_path`."""
    dtype = torch.float32 if tensor.is_floating_point() else tensor.dtype
    device = next(module.parameters(), tensor).device if not portable() else torch.device("cpu")
    return tensor.to(device=device, dtype=dtype)


@contextmanager
def parameter_mode() -> Iterator[None]:
    """One CPU thread and IEEE float32 (no TF32, deterministic cuDNN) inside the block, restored after."""
    from diffcodec.entropy.quadtree import strict_fp32

    threads = torch.get_num_threads() if portable() else 1
    if threads != 1:
        torch.set_num_threads(1)
    try:
        with strict_fp32():
            yield
    finally:
        if threads != 1:
            torch.set_num_threads(threads)


def parameter_net(module: nn.Module, inputs: Tensor) -> Tensor:
    """``module(inputs)`` on the parameter path: CPU float32 replica, one thread, one image at a time.

    Returns a float32 CPU tensor (the quadtree consumes it there; on the module's device under
    :func:`device_parameter_path`); ``inputs`` may be on any device.
    """
    net = cpu_replica(module)
    with parameter_mode():
        return torch.cat([net(to_parameter_device(item, net)) for item in inputs.split(1)])
