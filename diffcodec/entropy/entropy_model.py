"""The shared base of the entropy models: quantisation, integer coding tables, and real coding.

An entropy model keeps three integer buffers, filled by ``update()`` and saved in checkpoints under
CompressAI's names: ``_quantized_cdf`` (one 16-bit CDF per row), ``_cdf_length`` and ``_offset``. Coding uses
only these integers plus integer row indexes and integer symbols (:mod:`diffcodec.entropy.coder`), so a
decoder on another machine rebuilds exactly the encoder's distributions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from diffcodec.entropy.coder import SymbolDecoder, SymbolEncoder
from diffcodec.entropy.ops import LowerBound, ste_round
from diffcodec.entropy.tables import CDF_PRECISION, CdfTable

__all__ = ["EntropyModel", "QuantizationMode"]

QuantizationMode = Literal["noise", "ste", "dequantize", "symbols"]
_MAX_SYMBOL = 2**31 - 1


class EntropyModel(nn.Module):
    """Base class: CDF buffers, quantisation modes, per-batch-item compress / decompress.

    Args:
        likelihood_bound: lower bound of the likelihoods returned by ``forward`` (0 disables it).
        tail_mass: probability mass left outside the coded range of each CDF row (escape-coded).
    """

    _offset: Tensor
    _quantized_cdf: Tensor
    _cdf_length: Tensor
    #: buffers whose shape follows the checkpoint on load (empty in training checkpoints)
    _resizable_buffers: tuple[str, ...] = ("_offset", "_quantized_cdf", "_cdf_length")

    def __init__(self, likelihood_bound: float = 1e-9, tail_mass: float = 1e-9) -> None:
        super().__init__()
        if not 0 < tail_mass < 1:
            raise ValueError(f"tail_mass must be in (0, 1), got {tail_mass}")
        if likelihood_bound < 0:
            raise ValueError(f"likelihood_bound must be >= 0, got {likelihood_bound}")
        self.tail_mass = float(tail_mass)
        self.entropy_coder_precision = CDF_PRECISION
        self.use_likelihood_bound = likelihood_bound > 0
        if self.use_likelihood_bound:
            self.likelihood_lower_bound = LowerBound(likelihood_bound)
        self.register_buffer("_offset", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_quantized_cdf", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_cdf_length", torch.zeros(0, dtype=torch.int32))
        self._table_cache: tuple[tuple[int, ...], CdfTable] | None = None

    # ------------------------------------------------------------------ tables
    @property
    def offset(self) -> Tensor:
        return self._offset

    @property
    def quantized_cdf(self) -> Tensor:
        return self._quantized_cdf

    @property
    def cdf_length(self) -> Tensor:
        return self._cdf_length

    @property
    def is_updated(self) -> bool:
        """Whether the integer coding tables exist (``update()`` was called or they were loaded)."""
        return self._offset.numel() > 0 and self._quantized_cdf.numel() > 0 and self._cdf_length.numel() > 0

    def cdf_table(self) -> CdfTable:
        """The integer coding tables as a :class:`CdfTable` (cached until the buffers change)."""
        if not self.is_updated:
            raise RuntimeError(f"{type(self).__name__} has no CDF tables yet: call update() first")
        buffers = (self._quantized_cdf, self._cdf_length, self._offset)
        # (inference tensors, e.g. tables built under torch.inference_mode(), keep no version counter)
        key = tuple(v for b in buffers for v in (id(b), b.data_ptr(), -1 if b.is_inference() else b._version))
        if self._table_cache is None or self._table_cache[0] != key:
            table = CdfTable(*buffers, precision=self.entropy_coder_precision)
            self._table_cache = (key, table)
        return self._table_cache[1]

    def _set_tables(self, quantized_cdf: Tensor, cdf_length: Tensor, offset: Tensor) -> None:
        device = self._offset.device
        self._quantized_cdf = quantized_cdf.to(device=device, dtype=torch.int32)
        self._cdf_length = cdf_length.to(device=device, dtype=torch.int32)
        self._offset = offset.to(device=device, dtype=torch.int32)
        self._table_cache = None

    # ------------------------------------------------------------------ quantisation
    def quantize(self, inputs: Tensor, mode: QuantizationMode, means: Tensor | None = None) -> Tensor:
        """Quantise relative to ``means``.

        - ``"noise"``: ``x + u``, u ~ U(−½, ½) (training proxy; ``means`` is irrelevant and ignored);
        - ``"ste"``: ``round(x − μ) + μ`` with an identity gradient (straight-through);
        - ``"dequantize"``: ``round(x − μ) + μ`` (no gradient through the rounding);
        - ``"symbols"``: the int32 symbols ``round(x − μ)`` that the coder writes.

        ``round`` is ``torch.round`` (half to even), as in CompressAI.
        """
        if mode == "noise":
            return inputs + torch.empty_like(inputs).uniform_(-0.5, 0.5)
        if mode not in ("ste", "dequantize", "symbols"):
            raise ValueError(
                f"unknown quantization mode {mode!r}; use 'noise', 'ste', 'dequantize' or 'symbols'"
            )
        centered = inputs - means if means is not None else inputs
        if mode == "ste":
            rounded = ste_round(centered)
            return rounded + means if means is not None else rounded
        rounded = torch.round(centered.detach() if mode == "symbols" else centered)
        if mode == "dequantize":
            return rounded + means if means is not None else rounded
        largest = rounded.abs().max() if rounded.numel() else rounded.new_zeros(())
        if not largest <= _MAX_SYMBOL:  # also catches NaN
            if not torch.isfinite(rounded).all():
                raise ValueError("cannot code non-finite values (NaN or inf in the inputs or means)")
            raise ValueError(f"symbols must fit in int32, found |round(x - mean)| = {largest:.3g}")
        return rounded.to(torch.int32)

    @staticmethod
    def dequantize(
        symbols: Tensor, means: Tensor | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """``symbols + means`` (in ``means``' dtype), or ``symbols`` cast to ``dtype`` without means."""
        if means is not None:
            return symbols.to(means.dtype) + means
        return symbols.to(dtype)

    # ------------------------------------------------------------------ coding
    def _compress(self, inputs: Tensor, indexes: Tensor, means: Tensor | None) -> list[bytes]:
        if inputs.dim() < 2:
            raise ValueError(f"inputs must be batched (at least 2-D), got shape {tuple(inputs.shape)}")
        if tuple(indexes.shape) != tuple(inputs.shape):
            raise ValueError(
                f"inputs {tuple(inputs.shape)} and indexes {tuple(indexes.shape)} must have the same shape"
            )
        table = self.cdf_table()
        with torch.no_grad():
            symbols = self.quantize(inputs, "symbols", means).cpu().numpy()
        rows = indexes.detach().cpu().numpy()
        strings = []
        for item in range(symbols.shape[0]):
            encoder = SymbolEncoder()
            encoder.encode(symbols[item], rows[item], table)
            strings.append(encoder.finish())
        return strings

    def _decompress(
        self, strings: Sequence[bytes], indexes: Tensor, means: Tensor | None, dtype: torch.dtype
    ) -> Tensor:
        if not isinstance(strings, (list, tuple)) or not all(
            isinstance(s, (bytes, bytearray, memoryview)) for s in strings
        ):
            raise TypeError("strings must be a list of bytes (one per batch item)")
        if indexes.dim() < 2 or indexes.shape[0] != len(strings):
            raise ValueError(
                f"indexes must be batched with one item per string: {len(strings)} strings, "
                f"indexes {tuple(indexes.shape)}"
            )
        if means is not None and means.shape[:2] != indexes.shape[:2]:
            raise ValueError(f"means {tuple(means.shape)} do not match indexes {tuple(indexes.shape)}")
        table = self.cdf_table()
        rows = indexes.detach().cpu().numpy()
        symbols = torch.empty(tuple(indexes.shape), dtype=torch.int32)
        for item, data in enumerate(strings):
            decoder = SymbolDecoder(data)
            symbols[item] = torch.from_numpy(decoder.decode(rows[item], table))
            decoder.finish()
        device = means.device if means is not None else self._quantized_cdf.device
        return self.dequantize(symbols.to(device), means, dtype)

    # ------------------------------------------------------------------ checkpoints
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
        # Training checkpoints store the table buffers empty (CompressAI fills them in update()); take the
        # checkpoint's shape so that both empty and filled tables load strictly.
        for name in self._resizable_buffers:
            value = state_dict.get(prefix + name)
            current = getattr(self, name)
            if isinstance(value, Tensor) and value.shape != current.shape:
                setattr(self, name, torch.empty(value.shape, dtype=current.dtype, device=current.device))
        self._table_cache = None
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
