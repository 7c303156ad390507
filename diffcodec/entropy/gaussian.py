"""GaussianConditional: a quantised Gaussian whose scale (and mean) come from another network.

Ballé et al. 2018 ("Variational image compression with a scale hyperprior"), with means as in Minnen et al.
2018: for ``ỹ`` and its predicted ``μ, σ``::

    L(ỹ) = Φ((½ − |ỹ − μ|) / σ') − Φ((−½ − |ỹ − μ|) / σ'),    σ' = max(σ, scale_bound),  Φ(t) = ½ erfc(−t/√2)

For real coding the scales are *quantised to a table*: each element codes with the integer CDF of the table
entry ``index = #{j < N−1 : table_j < σ'}`` (:meth:`GaussianConditional.build_indexes`), tabulated once by
``update()``. This is CompressAI's ``GaussianConditional`` (maths, tables and state-dict names; spec
the official StableCodec code) with the ELIC / Ballé scale table of :func:`get_scale_table`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from diffcodec.entropy.entropy_model import EntropyModel
from diffcodec.entropy.ops import LowerBound, full_precision
from diffcodec.entropy.tables import pmfs_to_quantized_cdfs

__all__ = ["GaussianConditional", "get_scale_table"]

SCALES_MIN = 0.11
SCALES_MAX = 256.0
SCALES_LEVELS = 64


def get_scale_table(min: float = SCALES_MIN, max: float = SCALES_MAX, levels: int = SCALES_LEVELS) -> Tensor:
    """``exp(linspace(ln min, ln max, levels))`` in float32 — the 64-entry table of CompressAI / ELIC."""
    if not 0 < min < max or levels < 2:
        raise ValueError(f"need 0 < min < max and levels >= 2, got min={min}, max={max}, levels={levels}")
    return torch.exp(torch.linspace(math.log(min), math.log(max), levels))


def _standardized_cumulative(x: Tensor) -> Tensor:
    """Φ(x) = ½ erfc(−x/√2) (erfc keeps precision in the lower tail)."""
    return 0.5 * torch.erfc(-(2**-0.5) * x)


def _standardized_quantile(q: float) -> float:
    """Φ⁻¹(q) in float64 (cephes ``ndtri``, the routine behind ``scipy.stats.norm.ppf``)."""
    return float(torch.special.ndtri(torch.tensor(q, dtype=torch.float64)))


class GaussianConditional(EntropyModel):
    """Conditional Gaussian entropy model with a quantised scale table (CompressAI-compatible).

    Args:
        scale_table: increasing positive scales tabulated for coding, or ``None`` to install one later with
            :meth:`update_scale_table` (e.g. ``update_scale_table(get_scale_table())``).
        scale_bound: lower bound σ' = max(σ, scale_bound) applied to predicted scales.
        tail_mass: probability mass outside each tabulated range (escape-coded).
        likelihood_bound: lower bound of the returned likelihoods.
    """

    scale_table: Tensor
    scale_bound: Tensor
    _resizable_buffers = (*EntropyModel._resizable_buffers, "scale_table")

    def __init__(
        self,
        scale_table: Sequence[float] | Tensor | None,
        scale_bound: float = SCALES_MIN,
        tail_mass: float = 1e-9,
        likelihood_bound: float = 1e-9,
    ) -> None:
        super().__init__(likelihood_bound=likelihood_bound, tail_mass=tail_mass)
        if scale_bound is None or not scale_bound > 0:
            raise ValueError(f"scale_bound must be > 0, got {scale_bound}")
        self.lower_bound_scale = LowerBound(scale_bound)
        table = self._prepare_scale_table(scale_table) if scale_table is not None else torch.zeros(0)
        self.register_buffer("scale_table", table)
        self.register_buffer("scale_bound", torch.tensor([float(scale_bound)], dtype=torch.float32))

    @staticmethod
    def _prepare_scale_table(scale_table: Sequence[float] | Tensor) -> Tensor:
        if isinstance(scale_table, Tensor):
            values = [float(s) for s in scale_table.detach().reshape(-1).cpu()]
        else:
            values = [float(s) for s in scale_table]
        if len(values) < 1:
            raise ValueError("scale_table is empty")
        if any(not math.isfinite(s) or s <= 0 for s in values) or values != sorted(values):
            raise ValueError("scale_table must hold finite, positive, increasing scales")
        return torch.tensor(values, dtype=torch.float32)

    # ------------------------------------------------------------------ likelihood
    def _likelihood(self, inputs: Tensor, scales: Tensor, means: Tensor | None = None) -> Tensor:
        values = inputs - means if means is not None else inputs
        scales = self.lower_bound_scale(scales)
        values = torch.abs(values)
        upper = _standardized_cumulative((0.5 - values) / scales)
        lower = _standardized_cumulative((-0.5 - values) / scales)
        return upper - lower

    @full_precision
    def forward(
        self, y: Tensor, scales: Tensor, means: Tensor | None = None, training: bool | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(ŷ, likelihoods)``: ``ŷ = y + u`` in training mode, ``round(y − μ) + μ`` (straight-through
        gradient) in eval mode; likelihoods of ``ŷ`` under N(μ, σ'²) integrated over the unit bin. In float32
        under autocast too (:func:`~diffcodec.entropy.ops.full_precision`)."""
        if training is None:
            training = self.training
        outputs = self.quantize(y, "noise" if training else "ste", means)
        likelihood = self._likelihood(outputs, scales, means)
        if self.use_likelihood_bound:
            likelihood = self.likelihood_lower_bound(likelihood)
        return outputs, likelihood

    # ------------------------------------------------------------------ tables
    def update_scale_table(self, scale_table: Sequence[float] | Tensor, force: bool = False) -> bool:
        """Install ``scale_table`` and build its CDF tables, unless tables exist and ``force`` is False."""
        if self.is_updated and not force:
            return False
        self.scale_table = self._prepare_scale_table(scale_table).to(self.scale_table.device)
        self.update(force=True)
        return True

    @torch.no_grad()
    def update(self, force: bool = False) -> bool:
        """Build one integer CDF per scale-table entry (CompressAI's ``update``); returns whether it did.

        With κ = −Φ⁻¹(tail_mass / 2): ``center = ⌈s·κ⌉``, ``pmf_length = 2·center + 1``,
        ``offset = −center``, PMF of ``|j − center|`` under N(0, s²), tail mass ``2·Φ((−½ − center)/s)``.
        """
        if self.is_updated and not force:
            return False
        if self.scale_table.numel() == 0:
            raise RuntimeError(
                "GaussianConditional has no scale table: call update_scale_table(get_scale_table()) first"
            )
        # computed on the CPU in float32 whatever the module's device (same integers on every machine)
        scale_table = self.scale_table.detach().cpu().float()
        multiplier = -_standardized_quantile(self.tail_mass / 2)
        pmf_center = torch.ceil(scale_table * multiplier).int()
        pmf_length = 2 * pmf_center + 1
        max_length = int(torch.max(pmf_length).item())
        if max_length + 2 > 1 << 16:
            raise ValueError(f"scale {float(self.scale_table.max())} is too large for 16-bit CDF tables")
        samples = torch.abs(torch.arange(max_length).int() - pmf_center[:, None]).float()
        samples_scale = scale_table.unsqueeze(1)
        upper = _standardized_cumulative((0.5 - samples) / samples_scale)
        lower = _standardized_cumulative((-0.5 - samples) / samples_scale)
        pmf = upper - lower
        tail_mass = 2 * lower[:, :1]
        quantized_cdf = pmfs_to_quantized_cdfs(
            pmf, tail_mass, pmf_length, max_length, self.entropy_coder_precision
        )
        self._set_tables(quantized_cdf, pmf_length + 2, -pmf_center)
        return True

    def build_indexes(self, scales: Tensor) -> Tensor:
        """int32 table index of every scale: ``#{j < N−1 : table_j < max(σ, scale_bound)}`` (CompressAI's
        ``GaussianConditional.build_indexes``).

        Equals CompressAI's ``N − 1 − Σ_j [σ' ≤ table_j]``. Exact float comparisons only, so the same scales
        give the same indexes on every device; NaN scales are rejected.
        """
        if self.scale_table.numel() == 0:
            raise RuntimeError("GaussianConditional has no scale table: call update_scale_table() first")
        if torch.isnan(scales).any():
            raise ValueError("scales contain NaN")
        with torch.no_grad():
            bounded = torch.max(
                scales, self.lower_bound_scale.bound.to(device=scales.device, dtype=scales.dtype)
            )
            dtype = torch.promote_types(bounded.dtype, self.scale_table.dtype)
            thresholds = self.scale_table[:-1].to(device=scales.device, dtype=dtype).contiguous()
            indexes = torch.searchsorted(thresholds, bounded.to(dtype).contiguous().reshape(-1), right=False)
        return indexes.to(torch.int32).reshape(scales.shape)

    # ------------------------------------------------------------------ coding
    def compress(self, y: Tensor, indexes: Tensor, means: Tensor | None = None) -> list[bytes]:
        """One byte string per batch item: symbols ``round(y − μ)`` in row-major order, rows ``indexes``."""
        return self._compress(y, indexes, means)

    def decompress(
        self,
        strings: Sequence[bytes],
        indexes: Tensor,
        means: Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """``ŷ = symbols + μ`` shaped like ``indexes`` (``means`` may broadcast over the spatial dims).

        Note the argument order ``(strings, indexes, means, dtype)``; CompressAI's is
        ``(strings, indexes, dtype, means)``.
        """
        if means is not None and means.shape != indexes.shape:
            means = means.expand(indexes.shape)
        return self._decompress(strings, indexes, means, dtype)
