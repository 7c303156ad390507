"""The 4-step quadtree context model: a latent coded in four interleaved groups, each conditioned on the last.

Quadtree partition of DCVC-DC (Li et al., "Neural video compression with diverse contexts", CVPR 2023), as
used by StableCodec (Zhang et al., ICCV 2025, §3.2 and the official StableCodec code), CADC
(``docs/methods/cadc.md``, without LRP) and OneDC (the official OneDC code, scale-first heads)::

    channel group g (C/4 channels each) × position in the 2×2 cell, per step k:

              G0  G1  G2  G3            2×2 cell:  ┌────┬────┐
        k=0   m0  m1  m2  m3                       │ m0 │ m1 │
        k=1   m3  m2  m1  m0                       ├────┼────┤
        k=2   m2  m3  m0  m1                       │ m2 │ m3 │
        k=3   m1  m0  m3  m2                       └────┴────┘

    B₀ = params (the hyperprior's h_s(ẑ))
    for k = 0..3:
        (μ_k, σ_k) = head(k, params, B_k, ŷ_<k)                      entropy parameters of step k
        ŷ_k  = M_k ⊙ (Q(y − μ_k) + μ_k)                              code / decode on the mask only
        ŷ'_k = ŷ_k + 0.5·tanh(M_k ⊙ LRP_k([ŷ_k, B_k]))              optional latent residual prediction
        B_{k+1} = B_k ⊙ (1 − M_k) + ŷ'_k                             context: decoded values replace params
    ŷ = Σ_k ŷ'_k

Every position is coded in exactly one group per step and every (channel, position) exactly once over the four
steps, so each step sees a quarter of the latent in every 2×2 neighbourhood and in every channel group.

One loop (:meth:`QuadtreeContextModel._run`) serves the three entry points; they differ only in the
quantiser ``Q`` of a step:

- :meth:`~QuadtreeContextModel.forward` — straight-through rounding (training and eval likelihoods);
- :meth:`~QuadtreeContextModel.compress` — rounding; the step's symbols are written to the stream;
- :meth:`~QuadtreeContextModel.decompress` — the step's symbols are read back from the stream.

Real coding runs on the parameter path of :mod:`~diffcodec.entropy.determinism` (CPU float32, one
thread, one image at a time, :func:`strict_fp32`), so that a file decodes on any device, thread count or
batch exactly as it was encoded.

Symbol order (the official StableCodec/OneDC quadtree coders): at step k the masked symbols and their CDF
indexes are "squeezed" from C to C/4
channels (at each position the one group coded at this step), then flattened row-major ``(c, h, w)``. The four
steps go into **one** stream per image. With diffcodec's constriction coder (``SymbolEncoder``), each step is
one ``encode`` call; the decoder replays the calls step by step, running the head between them.

The head is pluggable (:class:`QuadtreeParameters`): StableCodec / CADC use :class:`SharedContextParameters`
(per-step adapters around one shared context network, means first); OneDC supplies its own (scales first,
step 0 straight from the hyperprior). A head may return ``means=None`` for a zero-mean (scale-only) Gaussian.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from diffcodec.entropy.coder import SymbolDecoder, SymbolEncoder
from diffcodec.entropy.determinism import cpu_replica, parameter_mode, to_parameter_device
from diffcodec.entropy.gaussian import GaussianConditional
from diffcodec.entropy.ops import ste_round
from diffcodec.nn.blocks import LRP, Adapter, BasicBlock

__all__ = [
    "NUM_STEPS",
    "STEP_PATTERNS",
    "QuadtreeContextModel",
    "QuadtreeParameters",
    "SharedContextParameters",
    "SpatialContext",
    "quadtree_masks",
    "squeeze_groups",
    "strict_fp32",
    "unsqueeze_groups",
]

NUM_STEPS = 4
#: ``STEP_PATTERNS[k][g]`` = the 2×2 position (2·row parity + column parity) channel group g codes at step k.
STEP_PATTERNS: tuple[tuple[int, ...], ...] = ((0, 1, 2, 3), (3, 2, 1, 0), (2, 3, 0, 1), (1, 0, 3, 2))


def quadtree_masks(
    channels: int, height: int, width: int, *, device: torch.device | str | None = None, dtype=torch.float32
) -> Tensor:
    """The four step masks ``M_k`` as a ``(4, channels, height, width)`` 0/1 tensor (StableCodec paper
    §3.2, Fig. 3).

    Channels split into four equal groups; group g at step k covers the positions ``(h, w)`` with
    ``2·(h mod 2) + (w mod 2) == STEP_PATTERNS[k][g]``; patterns are tiled from the top-left corner, so odd
    sizes follow the same parity rule.
    """
    for name, value in (("channels", channels), ("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if channels % NUM_STEPS:
        raise ValueError(f"the quadtree splits channels into {NUM_STEPS} groups; {channels} is not divisible")
    rows = torch.arange(height, device=device) % 2
    cols = torch.arange(width, device=device) % 2
    position = 2 * rows[:, None] + cols[None, :]  # (H, W) pattern index of every position
    patterns = torch.tensor(STEP_PATTERNS, device=device)  # (step, group)
    group = torch.arange(channels, device=device) // (channels // NUM_STEPS)  # (C,)
    masks = patterns[:, group][:, :, None, None] == position[None, None]  # (4, C, H, W)
    return masks.to(dtype)


@contextmanager
def strict_fp32() -> Iterator[None]:
    """IEEE float32 for every CUDA op (no TF32) and deterministic cuDNN inside the block, restored after.

    The entropy parameters (h_s, the heads, LRP) decide the CDF indexes, so the decoder must compute them
    bit for bit as the encoder did; TF32 and non-deterministic kernels break that across GPUs (the
    official StableCodec code runs them with global TF32 on). No effect on CPU.
    """
    with torch.backends.cudnn.flags(
        enabled=torch.backends.cudnn.enabled, benchmark=False, deterministic=True, allow_tf32=False,
        fp32_precision="ieee",
    ):  # fmt: skip
        yield


def squeeze_groups(values: Tensor, mask: Tensor) -> Tensor:
    """``(B, C, H, W)`` → ``(B, C/4, H, W)``: per position, the value of the group ``mask`` codes there."""
    b, c, h, w = values.shape
    return (
        (values * mask.to(values.dtype))
        .reshape(b, NUM_STEPS, c // NUM_STEPS, h, w)
        .sum(1, dtype=values.dtype)
    )


def unsqueeze_groups(values: Tensor, mask: Tensor) -> Tensor:
    """Inverse of :func:`squeeze_groups` on the mask: ``(B, C/4, H, W)`` → ``(B, C, H, W)`` (0 off it)."""
    return values.repeat(1, NUM_STEPS, 1, 1) * mask.to(values.dtype)


class QuadtreeParameters(nn.Module):
    """Interface of a quadtree head: the entropy parameters of step ``k``.

    ``forward(step, params, context, y_hat)`` → ``(means or None, scales)``, each ``(B, C, H, W)``, where
    ``params`` is the hyperprior output, ``context`` is ``B_k`` (``params`` with the values decoded so far put
    in place) and ``y_hat`` the decoded values so far (zero elsewhere).
    """

    def forward(
        self, step: int, params: Tensor, context: Tensor, y_hat: Tensor
    ) -> tuple[Tensor | None, Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


class SpatialContext(nn.Module):
    """StableCodec's shared context network ``g_c``: ``depth`` × BasicBlock(width); keys ``block.{i}``."""

    def __init__(self, width: int = 960, depth: int = 4) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.block = nn.Sequential(*(BasicBlock(width) for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x)


class SharedContextParameters(QuadtreeParameters):
    """StableCodec §5.4 step 1: ``P_k = adapter_out[k](g_c(adapter_in[k](B_k)))``, ``μ, σ = P[:C], P[C:]``.

    Means first, scales second (the opposite of ELIC). Scales get no activation: the Gaussian's 0.11 lower
    bound does all the work (official code). Per-step adapters, one shared ``g_c``.

    Args:
        channels: C, channels of the latent (320).
        width: channels inside the shared context network (960).
        depth: BasicBlocks in the context network (4).
    """

    def __init__(self, channels: int = 320, width: int = 960, depth: int = 4) -> None:
        super().__init__()
        self.channels = channels
        self.adapter_in = nn.ModuleList(Adapter(channels, width) for _ in range(NUM_STEPS))
        self.g_c = SpatialContext(width, depth)
        self.adapter_out = nn.ModuleList(Adapter(width, 2 * channels) for _ in range(NUM_STEPS))

    def forward(self, step: int, params: Tensor, context: Tensor, y_hat: Tensor) -> tuple[Tensor, Tensor]:
        out = self.adapter_out[step](self.g_c(self.adapter_in[step](context)))
        means, scales = out.split(self.channels, dim=1)
        return means, scales


# A step's quantiser: (step, mask, means, scales) → M_k ⊙ (Q(y − μ) + μ), the masked quantised latent.
_Quantizer = Callable[[int, Tensor, "Tensor | None", Tensor], Tensor]


class QuadtreeContextModel(nn.Module):
    """Four-step quadtree context model over a Gaussian conditional (see the module docstring).

    Args:
        parameters: the head giving ``(μ_k, σ_k)`` per step (:class:`QuadtreeParameters`).
        lrp: optional per-step latent residual prediction (4 × :class:`~diffcodec.nn.blocks.LRP`,
            StableCodec); None disables it (CADC, OneDC).
        gaussian_conditional: the entropy model (default: a CompressAI ``GaussianConditional(None)``; call
            ``update_scale_table(get_scale_table())`` before coding).

    Contract (CompressAI latent codecs):

    - ``forward(y, params)`` → ``{"likelihoods": {"y": L}, "y_hat": ŷ, "means": μ, "scales": σ}``;
    - ``compress(y, params)`` → ``{"strings": [[bytes per image]], "shape": (H, W), "y_hat": ŷ}``;
    - ``decompress(strings, shape, params)`` → ``{"y_hat": ŷ}``.
    """

    def __init__(
        self,
        parameters: QuadtreeParameters,
        lrp: Sequence[LRP] | nn.ModuleList | None = None,
        gaussian_conditional: GaussianConditional | None = None,
    ) -> None:
        super().__init__()
        self.entropy_parameters = parameters
        if lrp is not None:
            lrp = nn.ModuleList(lrp)
            if len(lrp) != NUM_STEPS:
                raise ValueError(f"lrp must hold one module per step ({NUM_STEPS}), got {len(lrp)}")
        self.lrp = lrp
        self.gaussian_conditional = gaussian_conditional or GaussianConditional(None)

    # ------------------------------------------------------------------ the one loop
    def _run(self, params: Tensor, quantize: _Quantizer) -> Tensor:
        """The recursion of the module docstring with the step quantiser ``quantize``; returns ŷ."""
        _, c, h, w = params.shape
        masks = quadtree_masks(c, h, w, device=params.device, dtype=params.dtype)
        context = params
        y_hat = torch.zeros_like(params)
        for step in range(NUM_STEPS):
            mask = masks[step]
            means, scales = self.entropy_parameters(step, params, context, y_hat)
            y_hat_k = quantize(step, mask, means, scales)
            if self.lrp is not None:
                y_hat_k = y_hat_k + self.lrp[step].residual(y_hat_k, context, mask)
            context = context * (1 - mask) + y_hat_k
            y_hat = y_hat + y_hat_k
        return y_hat

    # ------------------------------------------------------------------ training path
    def forward(self, y: Tensor, params: Tensor) -> dict[str, Any]:
        """Straight-through quadtree pass; likelihoods of y under the gathered ``(μ, σ)`` (paper
        Eq. 2).

        The likelihood uses the Gaussian conditional's own mode: noise ``y + u`` in training, rounding
        around ``μ`` in eval.
        """
        self._check(y, params)
        gathered: dict[str, Tensor] = {}  # Σ_k μ_k ⊙ M_k and Σ_k σ_k ⊙ M_k

        def quantize(step: int, mask: Tensor, means: Tensor | None, scales: Tensor) -> Tensor:
            gathered["scales"] = gathered.get("scales", 0) + scales * mask
            if means is None:
                return ste_round(y) * mask
            gathered["means"] = gathered.get("means", 0) + means * mask
            return (ste_round(y - means) + means) * mask

        y_hat = self._run(params, quantize)
        means, scales = gathered.get("means"), gathered["scales"]
        _, likelihoods = self.gaussian_conditional(y, scales, means)
        return {"likelihoods": {"y": likelihoods}, "y_hat": y_hat, "means": means, "scales": scales}

    # ------------------------------------------------------------------ real coding
    def compress(self, y: Tensor, params: Tensor) -> dict[str, Any]:
        """Entropy-code y in four steps, one stream per image; also returns the decoder's ŷ.

        The recursion runs on the parameter path (:mod:`~diffcodec.entropy.determinism`: CPU float32,
        one thread, image by image), so any machine's :meth:`decompress` rebuilds the same CDF indexes.
        """
        self._check(y, params)
        model = cpu_replica(self)
        gaussian = model.gaussian_conditional
        table = gaussian.cdf_table()
        strings, y_hats = [], []
        with parameter_mode():
            for y_item, params_item in zip(y.split(1), params.split(1)):
                y_item = to_parameter_device(y_item, model)
                encoder = SymbolEncoder()

                def quantize(
                    step: int, mask: Tensor, means: Tensor | None, scales: Tensor, y_item: Tensor = y_item,
                    encoder: SymbolEncoder = encoder,
                ) -> Tensor:  # fmt: skip
                    symbols = gaussian.quantize(y_item, "symbols", means)
                    indexes = gaussian.build_indexes(scales)
                    encoder.encode(squeeze_groups(symbols, mask)[0], squeeze_groups(indexes, mask)[0], table)
                    return _dequantize(symbols, means, mask)

                y_hats.append(model._run(to_parameter_device(params_item, model), quantize))
                strings.append(encoder.finish())
        y_hat = torch.cat(y_hats).to(device=y.device, dtype=y.dtype)
        return {"strings": [strings], "shape": tuple(y.shape[-2:]), "y_hat": y_hat}

    def decompress(
        self, strings: Sequence[Sequence[bytes]], shape: Sequence[int], params: Tensor
    ) -> dict[str, Any]:
        """Decode ŷ from ``compress``'s strings, given ``params`` (the hyperprior output) on the y grid.

        Runs on the parameter path like :meth:`compress`; ŷ is returned as float32 on this module's device
        (``params`` may be on the CPU already: :func:`~diffcodec.entropy.determinism.parameter_net`).
        """
        if len(strings) != 1:
            raise ValueError(f"expected one list of y strings, got {len(strings)}")
        (y_strings,) = strings
        if params.dim() != 4 or tuple(params.shape[-2:]) != tuple(shape) or params.shape[0] != len(y_strings):
            raise ValueError(f"params {tuple(params.shape)} must be (B={len(y_strings)}, C, *{tuple(shape)})")
        model = cpu_replica(self)
        gaussian = model.gaussian_conditional
        table = gaussian.cdf_table()
        y_hats = []
        with parameter_mode():
            for data, params_item in zip(y_strings, params.split(1)):
                decoder = SymbolDecoder(data)

                def quantize(
                    step: int, mask: Tensor, means: Tensor | None, scales: Tensor,
                    decoder: SymbolDecoder = decoder,
                ) -> Tensor:  # fmt: skip
                    indexes = squeeze_groups(gaussian.build_indexes(scales), mask)[0]
                    symbols = torch.from_numpy(decoder.decode(indexes, table))[None].to(mask.device)
                    return _dequantize(unsqueeze_groups(symbols, mask), means, mask)

                y_hats.append(model._run(to_parameter_device(params_item, model), quantize))
                decoder.finish()
        device = next(self.parameters(), params).device
        return {"y_hat": torch.cat(y_hats).to(device)}

    # ------------------------------------------------------------------ helpers
    def _check(self, y: Tensor, params: Tensor) -> None:
        if y.dim() != 4 or y.shape != params.shape:
            raise ValueError(
                f"y and params must be (B, C, H, W) tensors of the same shape, got {tuple(y.shape)} "
                f"and {tuple(params.shape)}"
            )
        if y.shape[1] % NUM_STEPS:
            raise ValueError(f"the quadtree needs a channel count divisible by {NUM_STEPS}, got {y.shape[1]}")


def _dequantize(symbols: Tensor, means: Tensor | None, mask: Tensor) -> Tensor:
    """``M ⊙ (symbols + μ)``, in the means' dtype (the value the decoder reconstructs)."""
    if means is None:
        return symbols.to(mask.dtype) * mask
    return (symbols.to(means.dtype) + means) * mask
