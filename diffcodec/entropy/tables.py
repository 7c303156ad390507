"""Integer CDF tables: CompressAI-exact quantisation of probability mass functions.

The entropy models turn their continuous densities into 16-bit integer CDFs once (``update()``); from then on
coding uses only those integers, so encoder and decoder agree bit for bit on any machine.

:func:`pmf_to_quantized_cdf` is a port of CompressAI's C++ ``pmf_to_quantized_cdf``
(``compressai/cpp_exts/ops/ops.cpp``, itself from ryg_rans), reproduced exactly, including its float32
input, round-half-away-from-zero, integer rescaling and its "steal one count from the least frequent symbol
with count > 1" repair of zero-frequency symbols. :class:`CdfTable` bundles the tables of one entropy model
(``quantized_cdf``, ``cdf_length``, ``offset``) for :mod:`diffcodec.entropy.coder`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["CdfTable", "pmf_to_quantized_cdf", "pmfs_to_quantized_cdfs"]

#: Bits of precision of the integer CDFs (CompressAI's ``entropy_coder_precision``).
CDF_PRECISION = 16


def pmf_to_quantized_cdf(
    pmf: Tensor | np.ndarray | Sequence[float], precision: int = CDF_PRECISION
) -> np.ndarray:
    """Quantise a PMF (last entry: the tail / escape mass) to an integer CDF of ``len(pmf) + 1`` entries.

    Exactly CompressAI's algorithm: ``f_i = round(p_i · 2^precision)`` (float32, half away from zero),
    ``f_i ← ⌊2^precision · f_i / Σf⌋``, cumulative sum, last entry forced to ``2^precision``, then every
    symbol left with frequency 0 steals one count from the lowest-indexed symbol with the smallest
    frequency > 1.
    The result is strictly increasing from 0 to ``2^precision``, so every symbol can be coded.
    """
    if not 1 <= precision <= 24:
        raise ValueError(f"precision must be in [1, 24], got {precision}")
    if isinstance(pmf, Tensor):
        pmf = pmf.detach().cpu().numpy()
    p = np.asarray(pmf, dtype=np.float32).reshape(-1)  # the C++ code takes std::vector<float>
    if p.size == 0:
        raise ValueError("pmf is empty")
    if not np.all(np.isfinite(p)):
        raise ValueError("pmf contains NaN or infinite values")
    if p.size + 1 > (1 << precision):
        raise ValueError(f"{p.size} symbols do not fit a {precision}-bit CDF")
    one = 1 << precision
    scaled = p.astype(np.float64) * np.float64(np.float32(one))  # == the float32 product (power of two)
    freq = np.floor(np.abs(scaled) + 0.5)  # std::round: half away from zero (exact in float64)
    freq = np.where(scaled < 0, 0.0, freq).astype(np.uint64)  # negative mass (rounding noise) counts as 0
    total = int(freq.sum())
    if total == 0:
        raise ValueError("pmf has no mass at this precision (all entries round to zero)")
    freq = (np.uint64(one) * freq) // np.uint64(total)
    cdf = np.zeros(p.size + 1, dtype=np.int64)
    cdf[1:] = np.cumsum(freq)
    cdf[-1] = one
    counts = np.diff(cdf)
    # Repair zero-frequency symbols in increasing order; each repair turns one 0 into 1 and lowers one count
    # > 1, so the set of zero symbols is fixed up front (equivalent to the C++ loop over the CDF).
    for i in np.flatnonzero(counts == 0):
        candidates = np.where(counts > 1, counts, np.iinfo(np.int64).max)
        steal = int(np.argmin(candidates))  # first index of the smallest count > 1
        if counts[steal] <= 1:
            raise ValueError("cannot build a CDF: not enough probability mass to give every symbol a count")
        counts[steal] -= 1
        counts[i] += 1
    cdf[1:] = np.cumsum(counts)
    return cdf.astype(np.int32)


def pmfs_to_quantized_cdfs(
    pmf: Tensor, tail_mass: Tensor, pmf_length: Tensor, max_length: int, precision: int = CDF_PRECISION
) -> Tensor:
    """Rows ``[pmf_i[:pmf_length_i], tail_mass_i]`` → an int32 ``(N, max_length + 2)`` CDF table, zero-padded.

    CompressAI's ``EntropyModel._pmf_to_cdf``.
    """
    rows = pmf.shape[0]
    cdf = torch.zeros((rows, max_length + 2), dtype=torch.int32)
    pmf_np = pmf.detach().to(torch.float32).cpu().numpy()
    tail_np = tail_mass.detach().to(torch.float32).cpu().numpy().reshape(rows, -1)
    lengths = pmf_length.detach().cpu().numpy().astype(np.int64)
    for i in range(rows):
        row = pmf_to_quantized_cdf(np.concatenate([pmf_np[i, : lengths[i]], tail_np[i, :1]]), precision)
        cdf[i, : row.size] = torch.from_numpy(row)
    return cdf.to(pmf.device)


class CdfTable:
    """The integer coding tables of one entropy model.

    Row ``i`` codes symbols ``offset[i] … offset[i] + cdf_length[i] − 3`` directly; the last bin (index
    ``cdf_length[i] − 2``, the tail mass) is the escape that announces an out-of-range symbol
    (CompressAI's layout). Arrays are copied to read-only int32 numpy arrays; the constriction models are
    built lazily per row and cached.

    Args:
        quantized_cdf: ``(N, L)`` integer CDFs, row ``i`` valid up to ``cdf_length[i]`` entries.
        cdf_length: ``(N,)`` number of valid CDF entries per row (≥ 3: one symbol plus the escape).
        offset: ``(N,)`` the symbol value of bin 0 of each row.
        precision: bits of the CDF (the last valid entry must equal ``2^precision``).
    """

    def __init__(
        self,
        quantized_cdf: Tensor | np.ndarray,
        cdf_length: Tensor | np.ndarray,
        offset: Tensor | np.ndarray,
        precision: int = CDF_PRECISION,
    ) -> None:
        cdf = _to_int_array(quantized_cdf, "quantized_cdf")
        lengths = _to_int_array(cdf_length, "cdf_length").reshape(-1)
        offsets = _to_int_array(offset, "offset").reshape(-1)
        if cdf.ndim != 2 or cdf.shape[0] == 0:
            raise ValueError(
                f"quantized_cdf must be a non-empty 2-D table, got shape {tuple(cdf.shape)} "
                "(did you call update() on the entropy model?)"
            )
        rows = cdf.shape[0]
        if lengths.shape != (rows,) or offsets.shape != (rows,):
            raise ValueError(
                f"cdf_length {tuple(lengths.shape)} and offset {tuple(offsets.shape)} must have one entry "
                f"per CDF row ({rows})"
            )
        if np.any(lengths < 3) or np.any(lengths > cdf.shape[1]):
            raise ValueError(f"cdf_length must lie in [3, {cdf.shape[1]}]")
        valid = np.arange(cdf.shape[1])[None, :] < lengths[:, None]
        steps = np.diff(cdf, axis=1)
        if np.any(cdf[:, 0] != 0) or np.any(cdf[np.arange(rows), lengths - 1] != (1 << precision)):
            raise ValueError(f"every CDF row must run from 0 to 2^{precision}")
        if np.any((steps <= 0) & valid[:, 1:]):
            raise ValueError("CDF rows must be strictly increasing (every symbol needs a nonzero count)")
        self.precision = int(precision)
        self.quantized_cdf = _read_only(cdf.astype(np.int32))
        self.cdf_length = _read_only(lengths.astype(np.int32))
        self.offset = _read_only(offsets.astype(np.int32))
        self._models: dict[int, object] = {}

    def __getstate__(self) -> dict:
        # constriction models cannot be pickled; they are rebuilt lazily (deepcopy / torch.save of modules)
        return {**self.__dict__, "_models": {}}

    def __len__(self) -> int:
        return int(self.cdf_length.shape[0])

    def __repr__(self) -> str:
        longest = int(self.cdf_length.max())
        return f"CdfTable(rows={len(self)}, max_cdf_length={longest}, precision={self.precision})"

    def frequencies(self, row: int) -> np.ndarray:
        """Integer counts of row ``row``: ``cdf_length − 1`` bins, the last one the escape."""
        length = int(self.cdf_length[row])
        return np.diff(self.quantized_cdf[row, :length].astype(np.int64))

    def model(self, row: int):
        """The constriction categorical model of row ``row`` (cached)."""
        model = self._models.get(row)
        if model is None:
            import constriction

            probabilities = self.frequencies(row).astype(np.float64) / float(1 << self.precision)
            model = constriction.stream.model.Categorical(probabilities, perfect=False)
            self._models[row] = model
        return model

    def information_bits(self, symbols: np.ndarray, indexes: np.ndarray) -> float:
        """−Σ log₂ P(symbol) under the integer tables; out-of-range symbols count the escape bin only."""
        symbols = np.asarray(symbols, dtype=np.int64).reshape(-1)
        indexes = np.asarray(indexes, dtype=np.int64).reshape(-1)
        value = symbols - self.offset[indexes]
        value = np.clip(value, 0, self.cdf_length[indexes] - 2)
        counts = self.quantized_cdf[indexes, value + 1].astype(np.int64) - self.quantized_cdf[indexes, value]
        return float(np.sum(self.precision - np.log2(counts)))


def _to_int_array(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got {x.dtype}")
    return x.astype(np.int64)


def _read_only(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    x.setflags(write=False)
    return x
