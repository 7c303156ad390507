"""The diffcodec file format: a few bytes of header around a method's entropy-coded streams.

At 0.005 bpp a Kodak image is about 250 bytes, so the container is built to be small: a Kodak-size
file with two streams and no side information carries 8 bytes of container (a first stream shorter
than 128 bytes), 2 of them a check over the whole file. The exact layout is in ``docs/bitstream.md``;
in short (format version 2)::

    byte 0   0xD2                        magic nibble 0xD, format version 2
    byte 1   rung | side flag | streams  bits 0-4 rung (31 = escape), bit 5 side info, bits 6-7 n-1
    varint   rung - 31                   only when bits 0-4 of byte 1 are 31
    varint   (height-1, width-1)         bit-interleaved: width in the even bits, height in the odd
    [side]   count, then per field one byte (type << 5 | key) and the value
    varints  byte length of every stream but the last
    bytes    the streams, the last one running up to the check
    2 bytes  CRC-16 (big-endian) of every byte before it followed by the model tag

The model tag (low byte of CRC-32 of the model id, ``codecs/base.py``) is not stored: it is folded into
the check, so a file verifies only with the tag of the model that wrote it, and the tag is recovered
from the check when the model is not known (exactly one tag can verify an intact file). Version 1
files (the tag in byte 1, no check) still decode; :meth:`Bitstream.to_bytes` writes version 2.

Every varint is unsigned LEB128, minimal, at most 5 bytes and at most 2**32 - 1, so every file has
exactly one encoding: ``Bitstream.from_bytes(b).to_bytes() == b`` for every version-2 ``b`` that
decodes. Decoding verifies the check first, then validates each field before use, checks every count
against the bytes that remain before allocating, and reports any problem as :class:`DecodeError` with
the byte offset. Nothing is pickled.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path

import numpy as np

from diffcodec.errors import DecodeError
from diffcodec.files import write_atomic

__all__ = [
    "CHECK_BYTES",
    "FORMAT_VERSION",
    "MAX_DIMENSION",
    "MAX_PIXELS",
    "MAX_SIDE_KEY",
    "MAX_STREAMS",
    "Bitstream",
    "DecodeError",
    "SideType",
    "SideValue",
    "file_check",
    "model_tag",
]

MAGIC = 0xD
FORMAT_VERSION = 2
LEGACY_VERSION = 1  # the model tag in byte 1, no check; still decoded
CHECK_BYTES = 2
CHECK_INIT = 0xFFFF  # CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor
MAX_STREAMS = 4
MAX_SIDE_KEY = 31
MAX_DIMENSION = 65535
MAX_PIXELS = 2**31
MAX_VARINT_BYTES = 5
MAX_VARINT = 2**32 - 1
RUNG_ESCAPE = 31
MAX_RUNG = RUNG_ESCAPE + MAX_VARINT
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

SideValue = int | bytes | np.ndarray
"""A side-information value: an int (int32 range), bytes, or a 1-D array of a :class:`SideType` dtype."""


class SideType(IntEnum):
    """The 3-bit type code of a side-information field. All eight codes are assigned in version 1."""

    INT = 0  # zigzag varint, int32 range
    BYTES = 1  # varint length + raw bytes
    UINT8 = 2  # varint count + little-endian elements (same for the other array types)
    UINT16 = 3
    INT16 = 4
    INT32 = 5
    FLOAT16 = 6
    FLOAT32 = 7


_ARRAY_DTYPES: dict[SideType, np.dtype] = {
    SideType.UINT8: np.dtype("<u1"),
    SideType.UINT16: np.dtype("<u2"),
    SideType.INT16: np.dtype("<i2"),
    SideType.INT32: np.dtype("<i4"),
    SideType.FLOAT16: np.dtype("<f2"),
    SideType.FLOAT32: np.dtype("<f4"),
}
_ARRAY_TYPE_OF: dict[tuple[str, int], SideType] = {
    (dtype.kind, dtype.itemsize): side_type for side_type, dtype in _ARRAY_DTYPES.items()
}


# ---------------------------------------------------------------------------------------------- the check
def _check_register(body: bytes) -> int:
    return binascii.crc_hqx(body, CHECK_INIT)


def _check_with_tag(register: int, model_tag: int) -> int:
    return binascii.crc_hqx(bytes((model_tag,)), register)


def file_check(body: bytes, model_tag: int) -> bytes:
    """The 2-byte check a version-2 file ends with: CRC-16/CCITT-FALSE of ``body`` + the model tag byte.

    CRC-16 (polynomial 0x1021, which has the factor x + 1) detects every error of 1 to 3 bits and any odd
    number of bits in files up to 4 KB, every burst of up to 16 bits, and any other error but for one
    pattern in 65 536.
    """
    return _check_with_tag(_check_register(bytes(body)), model_tag).to_bytes(CHECK_BYTES, "big")


def _verified_body(data: bytes, model_tag: int | None) -> tuple[bytes, int]:
    """(file without its check, model tag that verifies it), or :class:`DecodeError`.

    With ``model_tag`` given only that tag is tried (a corrupted file passes 1 time in 65 536); without,
    the tag is recovered: tag ↦ check is injective, so at most one tag verifies (a corrupted file
    verifies with some tag 1 time in 256, and then the codec refuses the foreign tag).
    """
    if len(data) < 1 + CHECK_BYTES + 3:  # magic, rung/flags, dimensions, one stream byte, the check
        raise DecodeError(f"file truncated: {len(data)} bytes is shorter than the smallest file", len(data))
    body, stored = data[:-CHECK_BYTES], int.from_bytes(data[-CHECK_BYTES:], "big")
    register = _check_register(body)
    if model_tag is not None and _check_with_tag(register, model_tag) == stored:
        return body, model_tag
    matching = [tag for tag in range(256) if _check_with_tag(register, tag) == stored]
    if model_tag is None and matching:
        return body, matching[0]
    if matching:
        raise DecodeError(
            f"the file does not verify with model tag 0x{model_tag:02x}: it was written by another model "
            f"(its check matches tag 0x{matching[0]:02x}) or it is corrupted",
            len(body),
        )
    raise DecodeError(
        "checksum mismatch: the file is corrupted or truncated (its CRC-16 does not match its content)",
        len(body),
    )


# ---------------------------------------------------------------------------------------------- varints
def _write_varint(out: bytearray, value: int, what: str) -> None:
    """Append ``value`` as unsigned LEB128: 7 bits per byte, low bits first, high bit = more follows."""
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"{what} = {value} does not fit the format's 32-bit varints")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    """Signed → unsigned: 0, -1, 1, -2, 2, … → 0, 1, 2, 3, 4, …"""
    return (value << 1) if value >= 0 else ((-value) << 1) - 1


def _unzigzag(value: int) -> int:
    return (value >> 1) if not value & 1 else -((value + 1) >> 1)


def _interleave(even: int, odd: int) -> int:
    """Morton code of two 16-bit values: bit i of ``even`` → bit 2i, bit i of ``odd`` → bit 2i+1."""
    code = 0
    for i in range(16):
        code |= ((even >> i) & 1) << (2 * i) | ((odd >> i) & 1) << (2 * i + 1)
    return code


def _deinterleave(code: int) -> tuple[int, int]:
    """Inverse of :func:`_interleave`: returns ``(even, odd)``."""
    even = odd = 0
    for i in range(16):
        even |= ((code >> (2 * i)) & 1) << i
        odd |= ((code >> (2 * i + 1)) & 1) << i
    return even, odd


class _Reader:
    """A cursor over the file that raises :class:`DecodeError` (with the offset) on anything wrong."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise DecodeError(f"file truncated: it ends where the {what} byte should be", self.pos)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self, what: str) -> int:
        start = self.pos
        value = 0
        for i in range(MAX_VARINT_BYTES):
            if self.pos >= len(self.data):
                raise DecodeError(f"file truncated inside the {what} varint", start)
            b = self.data[self.pos]
            self.pos += 1
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if b == 0 and i > 0:
                    raise DecodeError(f"{what} varint is not minimal (it ends in a 0x00 byte)", start)
                if value > MAX_VARINT:
                    raise DecodeError(f"{what} varint value {value} does not fit 32 bits", start)
                return value
        raise DecodeError(f"{what} varint is longer than {MAX_VARINT_BYTES} bytes", start)

    def take(self, size: int, what: str) -> bytes:
        if size > self.remaining:
            raise DecodeError(
                f"{what} needs {size} bytes but only {self.remaining} remain in the file", self.pos
            )
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk


# ---------------------------------------------------------------------------------------------- validation
def _as_int(value: object, what: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an int, got {value!r}")
    return int(value)


def _side_type(value: SideValue) -> SideType:
    """The type code of a (normalized) side value."""
    if isinstance(value, int):
        return SideType.INT
    if isinstance(value, bytes):
        return SideType.BYTES
    return _ARRAY_TYPE_OF[(value.dtype.kind, value.dtype.itemsize)]


def _normalize_side_value(key: int, value: object) -> SideValue:
    """int / bytes / 1-D array of a supported dtype (native byte order), or ValueError."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"side-information field {key}: bool is not a side type; store it as an int")
    if isinstance(value, (int, np.integer)):
        value = int(value)
        if not INT32_MIN <= value <= INT32_MAX:
            raise ValueError(f"side-information field {key}: int {value} is outside the int32 range")
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"side-information field {key}: arrays must be 1-D, got shape {value.shape}")
        if (value.dtype.kind, value.dtype.itemsize) not in _ARRAY_TYPE_OF:
            raise ValueError(
                f"side-information field {key}: dtype {value.dtype} is not supported "
                "(uint8, uint16, int16, int32, float16, float32)"
            )
        return value if value.dtype.isnative else value.astype(value.dtype.newbyteorder("="))
    raise ValueError(
        f"side-information field {key}: {type(value).__name__} is not a side type (int, bytes, 1-D array)"
    )


def _side_identity(value: SideValue) -> tuple[int, bytes | int]:
    """What two side values must share to be equal: type code and exact bytes (NaN payloads included)."""
    if isinstance(value, int):
        return (SideType.INT, value)
    if isinstance(value, bytes):
        return (SideType.BYTES, value)
    side_type = _side_type(value)
    return (side_type, value.astype(_ARRAY_DTYPES[side_type], copy=False).tobytes())


# ---------------------------------------------------------------------------------------------- container
@dataclass(eq=False)
class Bitstream:
    """One compressed image: header fields, side information and entropy-coded streams.

    ``model_tag`` (0..255) identifies the model that wrote the file, ``rung`` the rate rung, ``height``
    and ``width`` the original (unpadded) image size. ``side`` maps method-defined keys 0..31 to small
    values (see :data:`SideValue`); ``streams`` holds 1 to 4 byte strings, the last one non-empty.
    Fields are validated on construction and again by :meth:`to_bytes` (``ValueError``).
    """

    model_tag: int
    rung: int
    height: int
    width: int
    side: dict[int, SideValue] = field(default_factory=dict)
    streams: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._normalize()

    def _normalize(self) -> None:
        """Validate every field and convert it to its canonical Python form, or raise ValueError."""
        self.model_tag = _as_int(self.model_tag, "model_tag")
        if not 0 <= self.model_tag <= 0xFF:
            raise ValueError(f"model_tag must be 0..255, got {self.model_tag}")
        self.rung = _as_int(self.rung, "rung")
        if not 0 <= self.rung <= MAX_RUNG:
            raise ValueError(f"rung must be 0..{MAX_RUNG}, got {self.rung}")
        self.height = _as_int(self.height, "height")
        self.width = _as_int(self.width, "width")
        for name, size in (("height", self.height), ("width", self.width)):
            if not 1 <= size <= MAX_DIMENSION:
                raise ValueError(f"{name} must be 1..{MAX_DIMENSION}, got {size}")
        if self.height * self.width > MAX_PIXELS:
            raise ValueError(f"{self.height}x{self.width} exceeds the format's limit of 2**31 pixels")

        if not isinstance(self.side, Mapping):
            raise ValueError(f"side must be a dict {{key: value}}, got {type(self.side).__name__}")
        side: dict[int, SideValue] = {}
        for key, value in self.side.items():
            key = _as_int(key, "side-information key")
            if not 0 <= key <= MAX_SIDE_KEY:
                raise ValueError(f"side-information keys must be 0..{MAX_SIDE_KEY}, got {key}")
            side[key] = _normalize_side_value(key, value)
        self.side = dict(sorted(side.items()))

        if isinstance(self.streams, (bytes, bytearray, memoryview)) or not isinstance(self.streams, Sequence):
            raise ValueError("streams must be a list of byte strings")
        if not 1 <= len(self.streams) <= MAX_STREAMS:
            raise ValueError(f"a file holds 1..{MAX_STREAMS} streams, got {len(self.streams)}")
        streams = []
        for index, stream in enumerate(self.streams):
            if not isinstance(stream, (bytes, bytearray, memoryview)):
                raise ValueError(f"stream {index} must be bytes, got {type(stream).__name__}")
            streams.append(bytes(stream))
        if not streams[-1]:
            raise ValueError(
                "the last stream must not be empty (its length is implicit, so an empty one would be "
                "indistinguishable from a truncated file)"
            )
        self.streams = streams

    # ------------------------------------------------------------------ encoding
    def to_bytes(self) -> bytes:
        """Serialize to the canonical byte string (layout in ``docs/bitstream.md``)."""
        self._normalize()
        out = bytearray((MAGIC << 4 | FORMAT_VERSION,))
        rung_field = min(self.rung, RUNG_ESCAPE)
        out.append(rung_field | (0x20 if self.side else 0) | (len(self.streams) - 1) << 6)
        if rung_field == RUNG_ESCAPE:
            _write_varint(out, self.rung - RUNG_ESCAPE, "rung - 31")
        _write_varint(out, _interleave(self.width - 1, self.height - 1), "dimensions")
        if self.side:
            _write_varint(out, len(self.side), "side-information field count")
            for key, value in self.side.items():
                side_type = _side_type(value)
                out.append(side_type << 5 | key)
                if side_type == SideType.INT:
                    _write_varint(out, _zigzag(value), f"side-information field {key}")
                elif side_type == SideType.BYTES:
                    _write_varint(out, len(value), f"side-information field {key} length")
                    out += value
                else:
                    _write_varint(out, len(value), f"side-information field {key} count")
                    out += value.astype(_ARRAY_DTYPES[side_type], copy=False).tobytes()
        for index, stream in enumerate(self.streams[:-1]):
            _write_varint(out, len(stream), f"stream {index} length")
        for stream in self.streams:
            out += stream
        out += file_check(out, self.model_tag)
        return bytes(out)

    def to_file(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> int:
        """Write the file atomically (:func:`diffcodec.files.write_atomic`); returns its size in bytes.

        ``overwrite=False`` refuses (``FileExistsError``) to replace an existing file. The default
        replaces it, like ``PIL.Image.save`` and ``torch.save``: the command line is the layer that
        protects users' files (``--force``).
        """
        data = self.to_bytes()
        write_atomic(path, data, overwrite=overwrite)
        return len(data)

    # ------------------------------------------------------------------ decoding
    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, model_tag: int | None = None) -> Bitstream:
        """Parse a file. Raises :class:`DecodeError` (never anything else) for malformed input.

        ``model_tag``: the tag of the model that will decode the file (:func:`codecs.base.model_tag`);
        the whole-file check must then verify with it. Without it the tag is recovered from the check.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"from_bytes expects bytes, got {type(data).__name__}")
        data = bytes(data)
        if not data:
            raise DecodeError("the file is empty", 0)
        head = data[0]
        if head >> 4 != MAGIC:
            raise DecodeError(
                f"not a diffcodec file: byte 0 is 0x{head:02x}, expected 0x{MAGIC:X}_ (magic nibble)", 0
            )
        if head & 0x0F == FORMAT_VERSION:
            body, model_tag = _verified_body(data, model_tag)
            reader = _Reader(body)
            reader.pos = 1
        elif head & 0x0F == LEGACY_VERSION:
            reader = _Reader(data)
            reader.pos = 1
            model_tag = reader.byte("model tag")
        else:
            raise DecodeError(
                f"unsupported format version {head & 0x0F} (this diffcodec reads versions {LEGACY_VERSION} "
                f"and {FORMAT_VERSION})",
                0,
            )
        flags = reader.byte("rung/flags")
        rung = flags & 0x1F
        has_side = bool(flags & 0x20)
        num_streams = (flags >> 6) + 1
        if rung == RUNG_ESCAPE:
            rung += reader.varint("escaped rung")

        dims_at = reader.pos
        width_m1, height_m1 = _deinterleave(reader.varint("dimensions"))
        height, width = height_m1 + 1, width_m1 + 1
        if height > MAX_DIMENSION or width > MAX_DIMENSION:
            raise DecodeError(
                f"absurd image size {height}x{width}: each side is at most {MAX_DIMENSION}", dims_at
            )
        if height * width > MAX_PIXELS:
            raise DecodeError(f"absurd image size {height}x{width}: more than 2**31 pixels", dims_at)

        side = _read_side(reader) if has_side else {}

        lengths = []
        claimed = 0
        for index in range(num_streams - 1):
            at = reader.pos
            length = reader.varint(f"stream {index} length")
            lengths.append(length)
            claimed += length
            if claimed > reader.remaining:
                raise DecodeError(
                    f"stream {index} (length {length}) runs past the end of the file: the streams so far "
                    f"claim {claimed} bytes, only {reader.remaining} remain",
                    at,
                )
        if claimed == reader.remaining:
            raise DecodeError(
                f"the last stream (stream {num_streams - 1}) is empty: the file is truncated", reader.pos
            )
        streams = [reader.take(length, f"stream {index}") for index, length in enumerate(lengths)]
        streams.append(reader.take(reader.remaining, f"stream {num_streams - 1}"))
        return cls(model_tag=model_tag, rung=rung, height=height, width=width, side=side, streams=streams)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], model_tag: int | None = None) -> Bitstream:
        """Read and parse a file; a malformed one raises :class:`DecodeError` naming the file."""
        data = Path(path).read_bytes()
        try:
            return cls.from_bytes(data, model_tag)
        except DecodeError as error:
            raise DecodeError(f"{os.fspath(path)}: {error.reason}", error.offset) from None

    # ------------------------------------------------------------------ sizes
    @property
    def num_bytes(self) -> int:
        """Size of the serialized file in bytes."""
        return len(self.to_bytes())

    def __len__(self) -> int:
        return self.num_bytes

    @property
    def header_bytes(self) -> int:
        """Bytes that are not stream payload: header, side information, stream lengths and the check."""
        return self.num_bytes - sum(len(stream) for stream in self.streams)

    @property
    def bpp(self) -> float:
        """Bits per pixel of the original image, from the real serialized size: 8·bytes / (H·W)."""
        return 8 * self.num_bytes / (self.height * self.width)

    # ------------------------------------------------------------------ comparison / display
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bitstream):
            return NotImplemented
        fields = (self.model_tag, self.rung, self.height, self.width, list(self.streams))
        other_fields = (other.model_tag, other.rung, other.height, other.width, list(other.streams))
        return (
            fields == other_fields
            and sorted(self.side) == sorted(other.side)
            and all(_side_identity(self.side[k]) == _side_identity(other.side[k]) for k in self.side)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        side = ", ".join(f"{key}: {_describe(value)}" for key, value in self.side.items())
        streams = ", ".join(str(len(stream)) for stream in self.streams)
        try:
            size = f"{self.num_bytes} bytes, {self.bpp:.4g} bpp"
        except ValueError as error:
            size = f"invalid: {error}"
        return (
            f"Bitstream(model_tag=0x{self.model_tag:02x}, rung={self.rung}, height={self.height}, "
            f"width={self.width}, "
            f"side={{{side}}}, streams=[{streams}] bytes; {size})"
        )


def _describe(value: SideValue) -> str:
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, bytes):
        return f"bytes[{len(value)}]"
    return f"{value.dtype.name}[{len(value)}]"


def _read_side(reader: _Reader) -> dict[int, SideValue]:
    """Parse the side-information block: count, then (type << 5 | key) byte and value per field."""
    at = reader.pos
    count = reader.varint("side-information field count")
    if count == 0:
        raise DecodeError("side-information flag is set but the block has 0 fields", at)
    if count > MAX_SIDE_KEY + 1:
        raise DecodeError(
            f"side-information block claims {count} fields, but only {MAX_SIDE_KEY + 1} keys exist", at
        )
    side: dict[int, SideValue] = {}
    previous = -1
    for _ in range(count):
        at = reader.pos
        tag = reader.byte("side-information field")
        side_type, key = SideType(tag >> 5), tag & 0x1F
        if key in side:
            raise DecodeError(f"side-information key {key} appears twice", at)
        if key < previous:
            raise DecodeError(f"side-information key {key} follows key {previous}: keys must be sorted", at)
        previous = key
        what = f"side-information field {key}"
        if side_type == SideType.INT:
            raw = reader.varint(what)
            side[key] = _unzigzag(raw)
        elif side_type == SideType.BYTES:
            side[key] = reader.take(reader.varint(f"{what} length"), what)
        else:
            dtype = _ARRAY_DTYPES[side_type]
            num = reader.varint(f"{what} element count")
            raw_bytes = reader.take(num * dtype.itemsize, f"{what} ({num} {side_type.name.lower()} elements)")
            side[key] = np.frombuffer(raw_bytes, dtype=dtype).astype(dtype.newbyteorder("="))
    return side


def model_tag(model_id: str) -> int:
    """The 8-bit tag written into every file: low byte of CRC-32 of the model identifier."""
    import zlib

    return zlib.crc32(model_id.encode("utf-8")) & 0xFF
