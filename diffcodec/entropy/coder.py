"""Stream coding of integer symbols with integer CDF tables, over constriction's range coder.

One stream can hold any number of ``encode`` calls, each with its own symbols, table-row indexes and table;
the decoder repeats the same calls in the same order, so a context model can decode step by step and run its
network between steps (StableCodec's quadtree codes its four steps into one stream)::

    enc = SymbolEncoder()
    enc.encode(symbols_0, indexes_0, table)      # step 0
    enc.encode(symbols_1, indexes_1, table)      # step 1 (indexes_1 computed from step 0's symbols)
    data = enc.finish()

    dec = SymbolDecoder(data)
    symbols_0 = dec.decode(indexes_0, table)
    symbols_1 = dec.decode(indexes_1, table)     # indexes_1 computed from the decoded symbols_0
    dec.finish()                                 # DecodeError unless the stream was consumed exactly

Layout of one ``encode`` call (the decoder knows ``indexes``, so it can replay it):

1. the symbols grouped by table row, rows in increasing order, each group in element order (one vectorised
   constriction call per distinct row instead of one Python call per symbol);
2. for every symbol outside its row's range, in element order, the escape: CompressAI's bypass code
   (``compressai/cpp_exts/rans/rans_interface.cpp``): the row's last bin (the tail mass) is coded in place of
   the symbol, ``raw = −2v − 1`` for ``v < 0`` or ``2(v − max)`` for ``v ≥ max`` (``v = symbol − offset``,
   ``max = cdf_length − 2``) is split into ``n`` 4-bit chunks, ``n`` is coded with a uniform 16-ary model,
   then the chunks, low chunk first. Every int32 symbol is coded losslessly.

Choice of coder (measured, see ``docs/entropy.md``): constriction's range coder (queue) and ANS (stack) are
both within 0.01 % of the information content on large streams; on short streams the range coder's
overhead is smaller (2.0 vs 2.8 bytes on average after trimming), so the range coder is used. The encoder
drops the trailing zero bytes of the last 32-bit word; the decoder pads them back, which restores the
words exactly (lossless). This byte format is *not* CompressAI's rANS format.
"""

from __future__ import annotations

import sys

import constriction
import numpy as np
from torch import Tensor

from diffcodec.bitstream import DecodeError
from diffcodec.entropy.tables import CdfTable
from diffcodec.timing import timed

__all__ = ["SymbolDecoder", "SymbolEncoder", "decode_symbols", "encode_symbols"]

_CHUNK_BITS = 4  # CompressAI's bypass precision
_CHUNK_VALUES = 1 << _CHUNK_BITS
#: raw escape values of int32 symbols need at most 9 chunks (≤ 33 bits + the table's range).
_MAX_CHUNKS = 9
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def _uniform_chunk_model():
    return constriction.stream.model.Uniform(_CHUNK_VALUES)


def _as_int_array(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        if x.is_floating_point() or x.is_complex():
            raise TypeError(f"{name} must hold integers, got a {x.dtype} tensor")
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
    return x.astype(np.int64).reshape(-1)


def _groups(indexes: np.ndarray, num_rows: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Stable order that groups equal indexes, and (row, start, stop) of every group in that order."""
    # a stable sort of 8/16-bit keys is a radix sort in numpy: O(n), ~10x faster than on int64
    key_type = np.uint8 if num_rows <= 1 << 8 else np.uint16 if num_rows <= 1 << 16 else np.int64
    order = np.argsort(indexes.astype(key_type), kind="stable")
    counts = np.bincount(indexes, minlength=num_rows)
    stops = np.cumsum(counts)
    rows = np.flatnonzero(counts)
    return order, [(int(r), int(stops[r] - counts[r]), int(stops[r])) for r in rows]


def _check_indexes(indexes: np.ndarray, table: CdfTable) -> None:
    if not isinstance(table, CdfTable):
        raise TypeError(f"table must be a CdfTable, got {type(table).__name__}")
    if indexes.size and (indexes.min() < 0 or indexes.max() >= len(table)):
        raise ValueError(
            f"indexes must lie in [0, {len(table)}) for this table, found [{indexes.min()}, {indexes.max()}]"
        )


class SymbolEncoder:
    """Accumulates ``encode`` calls into one stream; :meth:`finish` returns its bytes."""

    def __init__(self) -> None:
        self._coder = constriction.stream.queue.RangeEncoder()
        self._data: bytes | None = None

    @timed("entropy")
    def encode(self, symbols: Tensor | np.ndarray, indexes: Tensor | np.ndarray, table: CdfTable) -> None:
        """Append ``symbols`` (any shape, int32 range) coded with table rows ``indexes`` (same shape)."""
        if self._data is not None:
            raise RuntimeError("this SymbolEncoder is finished; start a new one")
        symbols = symbols if isinstance(symbols, Tensor) else np.asarray(symbols)
        indexes = indexes if isinstance(indexes, Tensor) else np.asarray(indexes)
        symbols_shape = tuple(symbols.shape)
        if tuple(indexes.shape) != symbols_shape:
            raise ValueError(
                f"symbols {symbols_shape} and indexes {tuple(indexes.shape)} must have the same shape"
            )
        sym = _as_int_array(symbols, "symbols")
        idx = _as_int_array(indexes, "indexes")
        _check_indexes(idx, table)
        if sym.size and (sym.min() < _INT32_MIN or sym.max() > _INT32_MAX):
            raise ValueError("symbols must fit in int32")
        if sym.size == 0:
            return
        max_value = table.cdf_length[idx].astype(np.int64) - 2
        value = sym - table.offset[idx]
        escaped = (value < 0) | (value >= max_value)
        coded = np.where(escaped, max_value, value).astype(np.int32)
        order, groups = _groups(idx, len(table))
        coded = coded[order]
        for row, start, stop in groups:
            self._coder.encode(coded[start:stop], table.model(row))
        if escaped.any():
            self._encode_escapes(value[escaped], max_value[escaped])

    def _encode_escapes(self, value: np.ndarray, max_value: np.ndarray) -> None:
        raw = np.where(value < 0, -2 * value - 1, 2 * (value - max_value)).astype(np.uint64)
        shifts = np.arange(_MAX_CHUNKS, dtype=np.uint64) * np.uint64(_CHUNK_BITS)
        chunks = (raw[:, None] >> shifts[None, :]) & np.uint64(_CHUNK_VALUES - 1)
        num_chunks = np.sum((raw[:, None] >> shifts[None, :]) != 0, axis=1)  # CompressAI's n_bypass
        model = _uniform_chunk_model()
        self._coder.encode(num_chunks.astype(np.int32), model)
        payload = chunks[np.arange(_MAX_CHUNKS)[None, :] < num_chunks[:, None]]  # row-major: per escape
        if payload.size:
            self._coder.encode(payload.astype(np.int32), model)

    @timed("entropy")
    def finish(self) -> bytes:
        """The stream's bytes (trailing zero bytes dropped). Further calls return the same bytes."""
        if self._data is None:
            words = self._coder.get_compressed().astype("<u4", copy=False)
            self._data = words.tobytes().rstrip(b"\0")
            self._coder = None
        return self._data


class SymbolDecoder:
    """Replays the ``encode`` calls of a :class:`SymbolEncoder` on its bytes.

    Any inconsistency — a stream that is too short, corrupted, or has data left at :meth:`finish` — raises
    :class:`~diffcodec.bitstream.DecodeError`. Range coding alone cannot see most damage (a damaged stream
    usually still decodes, to wrong symbols), so with ``verify=True`` (default) :meth:`finish` re-encodes the
    decoded symbols and requires the identical bytes: only the canonical encoding of *some* symbol sequence
    is accepted, which rejects practically every truncation, bit flip or appended byte at zero size cost
    (it roughly doubles the decoding time).
    """

    def __init__(self, data: bytes | bytearray | memoryview, verify: bool = True) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        data = bytes(data)
        self._data = data
        self._calls: list[tuple[np.ndarray, np.ndarray, CdfTable]] | None = [] if verify else None
        words = np.frombuffer(data + b"\0" * (-len(data) % 4), dtype="<u4").astype(np.uint32)
        if sys.byteorder != "little":  # pragma: no cover - constriction wants native words
            words = words.byteswap()
        self._num_bytes = len(data)
        self._decoder = constriction.stream.queue.RangeDecoder(words)
        self._finished = False

    @timed("entropy")
    def decode(self, indexes: Tensor | np.ndarray, table: CdfTable) -> np.ndarray:
        """Decode the symbols of one ``encode`` call: an int32 array shaped like ``indexes``."""
        if self._finished:
            raise RuntimeError("this SymbolDecoder is finished")
        indexes = indexes if isinstance(indexes, Tensor) else np.asarray(indexes)
        shape = tuple(indexes.shape)
        idx = _as_int_array(indexes, "indexes")
        _check_indexes(idx, table)
        value = np.empty(idx.size, dtype=np.int64)
        if idx.size == 0:
            return value.astype(np.int32).reshape(shape)
        order, groups = _groups(idx, len(table))
        try:
            for row, start, stop in groups:
                value[order[start:stop]] = self._decoder.decode(table.model(row), stop - start)
        except Exception as err:  # constriction reports invalid data with assorted exception types
            raise DecodeError(f"corrupted entropy-coded stream ({err})") from err
        max_value = table.cdf_length[idx].astype(np.int64) - 2
        escaped = value == max_value
        if escaped.any():
            value[escaped] = self._decode_escapes(max_value[escaped])
        symbols = value + table.offset[idx]
        if symbols.min() < _INT32_MIN or symbols.max() > _INT32_MAX:
            raise DecodeError("corrupted entropy-coded stream (escaped symbol outside int32)")
        symbols = symbols.astype(np.int32)
        if self._calls is not None:
            self._calls.append((symbols, idx, table))
        return symbols.reshape(shape)

    def _decode_escapes(self, max_value: np.ndarray) -> np.ndarray:
        model = _uniform_chunk_model()
        try:
            num_chunks = self._decoder.decode(model, max_value.size).astype(np.int64)
            if num_chunks.max() > _MAX_CHUNKS:
                raise DecodeError(f"corrupted entropy-coded stream (escape of {num_chunks.max()} chunks)")
            payload = self._decoder.decode(model, int(num_chunks.sum())).astype(np.uint64)
        except DecodeError:
            raise
        except Exception as err:
            raise DecodeError(f"corrupted entropy-coded stream ({err})") from err
        owner = np.repeat(np.arange(max_value.size), num_chunks)
        first = np.concatenate([[0], np.cumsum(num_chunks)[:-1]])
        position = np.arange(payload.size) - first[owner]
        raw = np.zeros(max_value.size, dtype=np.uint64)
        np.add.at(raw, owner, payload << (position.astype(np.uint64) * np.uint64(_CHUNK_BITS)))
        raw = raw.astype(np.int64)
        return np.where(raw & 1 == 1, -(raw >> 1) - 1, (raw >> 1) + max_value)

    def finish(self) -> None:
        """Check that the whole stream was consumed (:class:`DecodeError` otherwise)."""
        if self._finished:
            return
        self._finished = True
        problem = (
            f"entropy-coded stream of {self._num_bytes} bytes is corrupted, or was decoded with other "
            "tables/indexes than it was encoded with"
        )
        if not self._decoder.maybe_exhausted():
            raise DecodeError(f"{problem} (data left over)")
        if self._calls is not None:
            encoder = SymbolEncoder()
            for symbols, indexes, table in self._calls:
                encoder.encode(symbols, indexes, table)
            self._calls = None
            if encoder.finish() != self._data:
                raise DecodeError(f"{problem} (not the canonical encoding of the decoded symbols)")


def encode_symbols(symbols: Tensor | np.ndarray, indexes: Tensor | np.ndarray, table: CdfTable) -> bytes:
    """One-call stream: ``SymbolEncoder().encode(symbols, indexes, table)`` then ``finish()``."""
    encoder = SymbolEncoder()
    encoder.encode(symbols, indexes, table)
    return encoder.finish()


def decode_symbols(
    data: bytes, indexes: Tensor | np.ndarray, table: CdfTable, verify: bool = True
) -> np.ndarray:
    """Inverse of :func:`encode_symbols` (checks that the stream is consumed exactly)."""
    decoder = SymbolDecoder(data, verify=verify)
    symbols = decoder.decode(indexes, table)
    decoder.finish()
    return symbols
