"""EntropyBottleneck: the factorized (non-parametric) prior of Ballé et al. 2018.

J. Ballé, D. Minnen, S. Singh, S. J. Hwang, N. Johnston, "Variational image compression with a scale
hyperprior", ICLR 2018, appendix 6.1: every channel c has its own cumulative density
``P_c(x) = sigmoid(f_c(x))`` where ``f_c`` is a small monotone network (filters ``(1, 3, 3, 3, 3, 1)``)::

    v ← softplus(H_k) · v + b_k,   v ← v + tanh(a_k) ⊙ tanh(v)   (k < K),   f_c(x) = v after layer K

and the likelihood of a quantised value is ``P_c(x + ½) − P_c(x − ½)``. This is CompressAI's
``EntropyBottleneck`` (the maths, the CDF tables and the state-dict names of compressai ≥ 1.2.7), with a
loader that also accepts the ≤ 1.2.6 names used by the official StableCodec checkpoints
(``_matrix0`` … ``_factor3``). Quantisation is median-relative: ``ẑ = round(z − med) + med`` with
``med = quantiles[:, 0, 1]`` (the official StableCodec code).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffcodec.entropy.entropy_model import EntropyModel
from diffcodec.entropy.ops import full_precision
from diffcodec.entropy.tables import pmfs_to_quantized_cdfs

__all__ = ["EntropyBottleneck"]

_LEGACY_KEY = re.compile(r"^_(matrix|bias|factor)(\d+)$")
_LEGACY_TO_LIST = {"matrix": "matrices", "bias": "biases", "factor": "factors"}


def modern_parameter_name(name: str) -> str:
    """compressai <= 1.2.6's ``_matrix{i}`` / ``_bias{i}`` / ``_factor{i}`` → ``matrices.{i}`` / … (others
    unchanged); ``name`` is relative to the EntropyBottleneck."""
    match = _LEGACY_KEY.match(name)
    return name if match is None else f"{_LEGACY_TO_LIST[match.group(1)]}.{int(match.group(2))}"


def _cumulative_logits(
    inputs: Tensor, matrices: Sequence[Tensor], biases: Sequence[Tensor], factors: Sequence[Tensor]
) -> Tensor:
    """The density network: ``v ← softplus(H_k)·v + b_k``, then ``v ← v + tanh(a_k) ⊙ tanh(v)`` for k < K."""
    logits = inputs
    for i, (matrix, bias) in enumerate(zip(matrices, biases)):
        logits = torch.matmul(F.softplus(matrix), logits) + bias
        if i < len(factors):
            logits = logits + torch.tanh(factors[i]) * torch.tanh(logits)
    return logits


class EntropyBottleneck(EntropyModel):
    """Factorized prior over ``channels`` channels (CompressAI-compatible).

    Args:
        channels: number of channels of the latent (dimension 1 of the input).
        filters: hidden widths of the per-channel density network.
        init_scale: initial width of the density (quantiles start at ``(−s, 0, s)``).
        tail_mass: probability mass outside the tabulated range (escape-coded).
        likelihood_bound: lower bound of the returned likelihoods.

    ``forward(z)`` → ``(ẑ, likelihoods)``: noise in training mode, median-relative rounding with a
    straight-through gradient in eval mode. Before ``compress`` / ``decompress`` call ``update()``.
    """

    def __init__(
        self,
        channels: int,
        filters: Sequence[int] = (3, 3, 3, 3),
        init_scale: float = 10.0,
        tail_mass: float = 1e-9,
        likelihood_bound: float = 1e-9,
    ) -> None:
        super().__init__(likelihood_bound=likelihood_bound, tail_mass=tail_mass)
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        if any(f < 1 for f in self.filters):
            raise ValueError(f"filters must be positive, got {self.filters}")
        self.init_scale = float(init_scale)

        widths = (1, *self.filters, 1)
        scale = self.init_scale ** (1 / (len(self.filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(self.filters) + 1):
            # same initialisation (and order of random draws) as CompressAI
            init = float(np.log(np.expm1(1 / scale / widths[i + 1])))
            self.matrices.append(nn.Parameter(torch.full((self.channels, widths[i + 1], widths[i]), init)))
            bias = torch.empty(self.channels, widths[i + 1], 1)
            nn.init.uniform_(bias, -0.5, 0.5)
            self.biases.append(nn.Parameter(bias))
            if i < len(self.filters):
                self.factors.append(nn.Parameter(torch.zeros(self.channels, widths[i + 1], 1)))

        quantiles = torch.tensor([-self.init_scale, 0.0, self.init_scale], dtype=torch.float32)
        self.quantiles = nn.Parameter(quantiles.repeat(self.channels, 1, 1))
        target = float(np.log(2 / self.tail_mass - 1))
        self.register_buffer("target", torch.tensor([-target, 0.0, target], dtype=torch.float32))

    # ------------------------------------------------------------------ density
    @property
    def medians(self) -> Tensor:
        """Per-channel medians ``quantiles[:, 0, 1]`` (shape ``(C,)``), the quantisation offsets."""
        return self.quantiles[:, 0, 1]

    def _get_medians(self) -> Tensor:
        """``(C, 1, 1)`` medians (CompressAI's helper)."""
        return self.quantiles[:, :, 1:2]

    def _logits_cumulative(self, inputs: Tensor, stop_gradient: bool) -> Tensor:
        """``f_c(x)`` for inputs of shape ``(C, 1, N)`` (Ballé 2018, appendix 6.1)."""
        params = (self.matrices, self.biases, self.factors)
        if stop_gradient:
            params = tuple([p.detach() for p in group] for group in params)
        return _cumulative_logits(inputs, *params)

    def _likelihood(self, inputs: Tensor, stop_gradient: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """``(P(x + ½) − P(x − ½), f(x − ½), f(x + ½))`` for inputs of shape ``(C, 1, N)``."""
        lower = self._logits_cumulative(inputs - 0.5, stop_gradient=stop_gradient)
        upper = self._logits_cumulative(inputs + 0.5, stop_gradient=stop_gradient)
        return torch.sigmoid(upper) - torch.sigmoid(lower), lower, upper

    @full_precision
    def loss(self) -> Tensor:
        """Auxiliary loss that fits ``quantiles`` to the tail_mass/2, median and 1 − tail_mass/2 quantiles."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    @full_precision
    def forward(self, z: Tensor, training: bool | None = None) -> tuple[Tensor, Tensor]:
        """``(ẑ, likelihoods)`` for ``z`` of shape ``(B, C, ...)``.

        Training: ``ẑ = z + u``, u ~ U(−½, ½). Eval: ``ẑ = round(z − med) + med`` (straight-through
        gradient). Likelihoods are lower-bounded by ``likelihood_bound``; float32 under autocast too
        (:func:`~diffcodec.entropy.ops.full_precision`).
        """
        self._check_input(z)
        if training is None:
            training = self.training
        perm = (1, 0, *range(2, z.dim()))  # channels first
        values = z.permute(*perm).contiguous()
        shape = values.shape
        values = values.reshape(self.channels, 1, -1)
        outputs = self.quantize(values, "noise" if training else "ste", self._get_medians())
        likelihood, _, _ = self._likelihood(outputs)
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        outputs = outputs.reshape(shape).permute(*perm).contiguous()
        likelihood = likelihood.reshape(shape).permute(*perm).contiguous()
        return outputs, likelihood

    # ------------------------------------------------------------------ tables
    @torch.no_grad()
    def update(self, force: bool = False, update_quantiles: bool = False) -> bool:
        """Build the integer CDF tables (CompressAI's ``update``); returns whether they were (re)built.

        Per channel: ``minima = max(⌈med − q₀⌉, 0)``, ``maxima = max(⌈q₂ − med⌉, 0)``, ``offset = −minima``,
        ``pmf_length = minima + maxima + 1``; the PMF is sampled at ``med − minima + j`` for
        ``j < max_length`` (the longest channel's length) and the tail mass is
        ``sigmoid(f(first − ½)) + sigmoid(−f(last + ½))`` with *last* the ``max_length``-th sample even for
        shorter channels — CompressAI's behaviour (``EntropyBottleneck.update``), kept for identical tables.

        ``update_quantiles=True`` first re-fits the quantiles by bisection (CompressAI's option); the
        official StableCodec models use their stored quantiles as they are (the default).
        """
        if self.is_updated and not force:
            return False
        if update_quantiles:
            self._update_quantiles()
        # Tables are computed on the CPU in float32 whatever the module's device, so that every machine that
        # rebuilds them gets the same integers (GPU transcendental functions may differ in the last ulp).
        quantiles = self.quantiles.detach().cpu().float()
        matrices, biases, factors = (
            [p.detach().cpu().float() for p in group] for group in (self.matrices, self.biases, self.factors)
        )
        medians = quantiles[:, 0, 1]
        minima = torch.clamp(torch.ceil(medians - quantiles[:, 0, 0]).int(), min=0)
        maxima = torch.clamp(torch.ceil(quantiles[:, 0, 2] - medians).int(), min=0)
        pmf_start = medians - minima
        pmf_length = maxima + minima + 1
        max_length = int(pmf_length.max().item())
        if max_length + 2 > 1 << 16:
            raise ValueError(f"quantiles span {max_length} values; too wide for 16-bit CDF tables")
        samples = torch.arange(max_length)[None, :] + pmf_start[:, None, None]
        lower = _cumulative_logits(samples - 0.5, matrices, biases, factors)
        upper = _cumulative_logits(samples + 0.5, matrices, biases, factors)
        pmf = (torch.sigmoid(upper) - torch.sigmoid(lower))[:, 0, :]
        tail_mass = torch.sigmoid(lower[:, 0, :1]) + torch.sigmoid(-upper[:, 0, -1:])
        quantized_cdf = pmfs_to_quantized_cdfs(
            pmf, tail_mass, pmf_length, max_length, self.entropy_coder_precision
        )
        self._set_tables(quantized_cdf, pmf_length + 2, -minima)
        return True

    @torch.no_grad()
    def _update_quantiles(self, search_radius: float = 1e5, rtol: float = 1e-4, atol: float = 1e-3) -> None:
        """Bisection for ``f_c(q_i) = target_i`` (CompressAI ≥ 1.2.7's ``_update_quantiles``)."""
        shape = (self.channels, 1, 1)
        device = self.quantiles.device
        for i in range(len(self.target)):
            low = torch.full(shape, -search_radius, device=device)
            high = torch.full(shape, search_radius, device=device)
            target = self.target[i]

            def f(x: Tensor) -> Tensor:
                return self._logits_cumulative(x, stop_gradient=True)

            low = torch.where(target <= f(high), low, high)
            high = torch.where(f(low) <= target, high, low)
            while not torch.isclose(low, high, rtol=rtol, atol=atol).all():
                mid = (low + high) / 2
                f_mid = f(mid)
                low = torch.where(f_mid <= target, mid, low)
                high = torch.where(f_mid >= target, mid, high)
            self.quantiles[:, :, i] = ((low + high) / 2)[:, :, 0]

    # ------------------------------------------------------------------ coding
    def build_indexes(self, size: Sequence[int]) -> Tensor:
        """CDF row of every element of a ``(B, C, ...)`` tensor: its channel."""
        if len(size) < 2 or size[1] != self.channels:
            raise ValueError(f"expected a size (B, {self.channels}, ...), got {tuple(size)}")
        view = (1, -1, *([1] * (len(size) - 2)))
        device = self._quantized_cdf.device
        return torch.arange(self.channels, dtype=torch.int32, device=device).view(view).expand(*size)

    def _medians_like(self, batch: int, spatial_dims: int) -> Tensor:
        medians = self.medians.detach().reshape(1, -1, *([1] * spatial_dims))
        return medians.expand(batch, -1, *([-1] * spatial_dims))

    def compress(self, z: Tensor) -> list[bytes]:
        """One byte string per batch item: symbols ``round(z − med)`` in (c, h, w) order, row = channel."""
        self._check_input(z)
        indexes = self.build_indexes(z.shape)
        medians = self._medians_like(z.shape[0], z.dim() - 2).to(z.dtype)
        return self._compress(z, indexes, medians)

    def decompress(self, strings: Sequence[bytes], size: Sequence[int]) -> Tensor:
        """``ẑ`` of shape ``(len(strings), C, *size)`` from :meth:`compress`'s strings."""
        size = tuple(int(s) for s in size)
        if any(s < 1 for s in size):
            raise ValueError(f"invalid spatial size {size}")
        indexes = self.build_indexes((len(strings), self.channels, *size))
        medians = self._medians_like(len(strings), len(size))
        return self._decompress(strings, indexes, medians, medians.dtype)

    # ------------------------------------------------------------------ helpers
    def _check_input(self, z: Tensor) -> None:
        if z.dim() < 2 or z.shape[1] != self.channels:
            raise ValueError(f"expected a tensor (B, {self.channels}, ...), got shape {tuple(z.shape)}")

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # compressai <= 1.2.6 named the parameters _matrix{i}, _bias{i}, _factor{i}; >= 1.2.7 (and this class)
        # use ParameterLists matrices.{i}, biases.{i}, factors.{i}. Accept both (the official
        # StableCodec checkpoints use the old names).
        for key in [k for k in state_dict if k.startswith(prefix)]:
            new_key = prefix + modern_parameter_name(key[len(prefix) :])
            if new_key == key:
                continue
            if new_key in state_dict:
                error_msgs.append(f"both {key!r} and {new_key!r} are in the state dict")
                continue
            state_dict[new_key] = state_dict.pop(key)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
