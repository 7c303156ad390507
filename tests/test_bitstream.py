"""The container format: exact layout, canonical round trips, the whole-file check, version-1 files, and
DecodeError for every malformed file."""

from __future__ import annotations

import re
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from diffcodec.bitstream import (
    MAX_DIMENSION,
    MAX_PIXELS,
    MAX_RUNG,
    Bitstream,
    DecodeError,
    SideType,
    file_check,
)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ARRAY_DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float16, np.float32]

side_values = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.binary(max_size=24),
    hnp.arrays(dtype=st.sampled_from(ARRAY_DTYPES), shape=st.integers(0, 8)),
)
dimensions = st.tuples(
    st.one_of(st.integers(1, 2048), st.integers(1, MAX_DIMENSION)),
    st.one_of(st.integers(1, 2048), st.integers(1, MAX_DIMENSION)),
).filter(lambda hw: hw[0] * hw[1] <= MAX_PIXELS)


@st.composite
def bitstreams(draw: st.DrawFn, max_stream: int = 200) -> Bitstream:
    height, width = draw(dimensions)
    leading = draw(st.lists(st.binary(max_size=max_stream), max_size=3))
    last = draw(st.binary(min_size=1, max_size=max_stream))
    return Bitstream(
        model_tag=draw(st.integers(0, 255)),
        rung=draw(st.one_of(st.integers(0, 40), st.integers(0, MAX_RUNG))),
        height=height,
        width=width,
        side=draw(st.dictionaries(st.integers(0, 31), side_values, max_size=5)),
        streams=[*leading, last],
    )


def legacy(stream: Bitstream) -> bytes:
    """The version-1 encoding of ``stream``: byte 0 0xD1, the model tag in byte 1, no check."""
    return bytes([0xD1, stream.model_tag]) + stream.to_bytes()[1:-2]


def v2(rest: bytes, tag: int = 0x3A) -> bytes:
    """A version-2 file of magic byte + ``rest``, with a valid check for ``tag``."""
    body = b"\xd2" + rest
    return body + file_check(body, tag)


def parse_or_error(data: bytes, model_tag: int | None = None) -> Bitstream | None:
    """Decode; a success must be canonical (re-encodes to the same bytes), a failure a DecodeError."""
    try:
        stream = Bitstream.from_bytes(data, model_tag)
    except DecodeError as error:
        assert error.offset is None or 0 <= error.offset <= len(data)
        return None
    assert (legacy(stream) if data[0] == 0xD1 else stream.to_bytes()) == data
    return stream


def kodak(first: int, side: dict | None = None, height: int = 512, width: int = 768) -> Bitstream:
    return Bitstream(
        model_tag=0x3A,
        rung=2,
        height=height,
        width=width,
        side=side or {},
        streams=[b"z" * first, b"y" * 250],
    )


# ---------------------------------------------------------------------------------- layout
def test_exact_layout_of_a_kodak_header() -> None:
    """The worked example of docs/bitstream.md, byte for byte."""
    data = kodak(57).to_bytes()
    # 0xD2 magic+version, rung 2 | 2 streams (0b01 << 6), dims 767/511 interleaved, len 57
    assert data[:6] == bytes([0xD2, 0x42, 0xFF, 0xFF, 0x1B, 57])
    assert data[6:-2] == b"z" * 57 + b"y" * 250
    assert data[-2:] == bytes([0xA0, 0x2C]) == file_check(data[:-2], 0x3A)  # the check, tag folded in
    assert kodak(57, height=768, width=512).to_bytes()[2:5] == bytes([0xFF, 0xFF, 0x27])  # portrait


def test_the_check_is_crc16_ccitt_false_over_the_file_then_the_tag() -> None:
    # the standard check value of CRC-16/CCITT-FALSE ("123456789" → 0x29B1), the tag as the last byte
    assert file_check(b"12345678", ord("9")) == bytes([0x29, 0xB1])


def test_exact_layout_with_side_information_and_escaped_rung() -> None:
    norms = np.array([64.5, 60.25, 70.0, 1.0], dtype=np.float16)
    stream = Bitstream(
        model_tag=0x07, rung=33, height=64, width=64, side={4: -3, 0: norms}, streams=[b"\xaa"]
    )
    expected = (
        bytes([0xD2, 0x1F | 0x20 | 0 << 6])  # rung escape, side flag, one stream
        + bytes([2])  # rung - 31
        + bytes([0xFF, 0x1F])  # (63, 63) interleaved = 0x0FFF
        + bytes([2])  # two side fields, sorted by key
        + bytes([SideType.FLOAT16 << 5 | 0, 4])
        + norms.astype("<f2").tobytes()
        + bytes([SideType.INT << 5 | 4, 5])  # zigzag(-3) = 5
        + b"\xaa"
    )
    expected += file_check(expected, 0x07)
    assert stream.to_bytes() == expected
    assert expected[-2:] == bytes([0x4C, 0xEE])  # the worked example of docs/bitstream.md
    assert stream.header_bytes == len(expected) - 1


@PROPERTY
@given(first=st.integers(0, 127), rung=st.integers(0, 30), tag=st.integers(0, 255), portrait=st.booleans())
def test_kodak_overhead_at_most_8_bytes(first: int, rung: int, tag: int, portrait: bool) -> None:
    height, width = (768, 512) if portrait else (512, 768)
    stream = Bitstream(tag, rung, height, width, {}, [b"\x01" * first, b"\x02" * 300])
    assert stream.header_bytes <= 8
    assert stream.num_bytes == first + 300 + stream.header_bytes


def test_kodak_overhead_with_a_436_byte_first_stream() -> None:
    assert kodak(436).header_bytes == 9
    assert kodak(436, height=768, width=512).header_bytes == 9


# ---------------------------------------------------------------------------------- version 1
@FEW
@given(stream=bitstreams(max_stream=40))
def test_version_1_files_still_decode(stream: Bitstream) -> None:
    old = legacy(stream)
    assert Bitstream.from_bytes(old) == stream
    assert Bitstream.from_bytes(old).to_bytes() == stream.to_bytes()  # re-encoding writes version 2


# ---------------------------------------------------------------------------------- round trips
@PROPERTY
@given(stream=bitstreams())
def test_round_trip(stream: Bitstream) -> None:
    data = stream.to_bytes()
    decoded = Bitstream.from_bytes(data)
    assert decoded == stream
    assert decoded.to_bytes() == data
    assert len(decoded) == decoded.num_bytes == len(data)
    assert decoded.header_bytes == len(data) - sum(len(s) for s in stream.streams)
    assert decoded.bpp == 8 * len(data) / (stream.height * stream.width)
    for key, value in stream.side.items():
        got = decoded.side[key]
        assert type(got) is type(value)
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and got.tobytes() == value.tobytes()


@pytest.mark.parametrize(
    ("height", "width"), [(1, 1), (MAX_DIMENSION, 1), (1, MAX_DIMENSION), (65535, 32768), (46341, 46340)]
)
def test_extreme_dimensions_round_trip(height: int, width: int) -> None:
    stream = Bitstream(0, 0, height, width, {}, [b"x"])
    assert Bitstream.from_bytes(stream.to_bytes()) == stream


def test_side_values_keep_type_and_bits() -> None:
    nan = np.array([np.nan, -0.0, np.inf], dtype=np.float32)
    big_endian = np.array([1, 2, 65535], dtype=">u2")
    stream = Bitstream(1, 0, 8, 8, {0: -(2**31), 1: 2**31 - 1, 2: nan, 3: big_endian, 31: b""}, [b"x"])
    decoded = Bitstream.from_bytes(stream.to_bytes())
    assert decoded == stream
    assert decoded.side[0] == -(2**31) and decoded.side[1] == 2**31 - 1
    assert decoded.side[2].tobytes() == nan.tobytes()
    assert decoded.side[3].dtype == np.uint16 and decoded.side[3].tolist() == [1, 2, 65535]
    assert decoded.side[31] == b""
    decoded.side[2][0] = 1.0  # decoded arrays are ordinary writable arrays
    assert decoded != stream


def test_files_and_bpp_from_file_size(tmp_path) -> None:
    stream = kodak(100, side={0: np.arange(4, dtype=np.float16)})
    path = tmp_path / "kodim01.dcb"
    written = stream.to_file(path)
    assert written == path.stat().st_size == stream.num_bytes
    assert stream.bpp == pytest.approx(8 * path.stat().st_size / (512 * 768))
    assert Bitstream.from_file(path) == stream
    assert Bitstream.from_file(str(path)).to_bytes() == path.read_bytes()


def test_from_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.dcb"
    path.write_bytes(kodak(50).to_bytes()[:4])
    with pytest.raises(DecodeError, match=r"broken\.dcb: file truncated") as info:
        Bitstream.from_file(path)
    assert info.value.offset == 4
    path.write_bytes(kodak(50).to_bytes())
    with pytest.raises(DecodeError, match=r"broken\.dcb: .*another model .*tag 0x3a"):
        Bitstream.from_file(path, model_tag=0x3B)


def test_repr_is_readable() -> None:
    text = repr(kodak(57, side={0: np.zeros(4, np.float16), 3: 7}))
    for part in (
        "model_tag=0x3a",
        "rung=2",
        "height=512",
        "width=768",
        "float16[4]",
        "3: 7",
        "[57, 250]",
        "bpp",
    ):
        assert part in text


# ---------------------------------------------------------------------------------- malformed input
# bytes a varint or a header field may turn on: continuation bits, zero, type codes, flags
TRICKY = st.sampled_from([0x00, 0x01, 0x02, 0x1F, 0x20, 0x40, 0x7F, 0x80, 0x81, 0xC0, 0xE0, 0xFF])
tricky_bytes = st.lists(st.one_of(TRICKY, st.integers(0, 255)), max_size=40).map(bytes)


@PROPERTY
@given(data=st.one_of(st.binary(max_size=48), tricky_bytes.map(lambda b: b"\xd1" + b), tricky_bytes.map(v2)))
def test_arbitrary_bytes_decode_or_raise_decode_error(data: bytes) -> None:
    parse_or_error(data)


@PROPERTY
@given(
    stream=bitstreams(max_stream=40),
    edits=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3
    ),
)
def test_edited_encodings_decode_or_raise_decode_error(stream: Bitstream, edits: list) -> None:
    data = bytearray(stream.to_bytes())
    for kind, position, value in edits:
        at = position % (len(data) + 1)
        if kind == 0 and at < len(data):
            data[at] = value  # overwrite
        elif kind == 1:
            data.insert(at, value)
        elif at < len(data):
            del data[at]
    parse_or_error(bytes(data))


@FEW
@given(stream=bitstreams(max_stream=40))
def test_every_truncation_raises(stream: Bitstream) -> None:
    data = stream.to_bytes()
    for length in range(len(data)):  # the last stream included: the check ends the file
        with pytest.raises(DecodeError):
            Bitstream.from_bytes(data[:length], stream.model_tag)


@PROPERTY
@given(stream=bitstreams(max_stream=40), bits=st.lists(st.integers(0, 10**6), min_size=1, max_size=3))
def test_flipped_bits_anywhere_raise(stream: Bitstream, bits: list[int]) -> None:
    """CRC-16 catches every error of 1 to 3 bits after byte 0 (magic + version, tested below); without
    the model's tag the file verifies at most under another tag, so it never parses back the same."""
    data = bytearray(stream.to_bytes())
    flips = {8 + bit % (8 * len(data) - 8) for bit in bits}
    for bit in flips:
        data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecodeError, match=r"checksum mismatch|another model"):
        Bitstream.from_bytes(bytes(data), stream.model_tag)
    parsed = parse_or_error(bytes(data))
    assert parsed is None or parsed.model_tag != stream.model_tag


@pytest.mark.parametrize("bit", range(8))
def test_a_flipped_magic_or_version_bit_raises(bit: int) -> None:
    data = bytearray(kodak(57).to_bytes())
    data[0] ^= 1 << bit
    with pytest.raises(DecodeError, match=r"not a diffcodec file|unsupported format version"):
        Bitstream.from_bytes(bytes(data))


def test_a_file_verifies_only_with_its_tag() -> None:
    data = kodak(57).to_bytes()
    assert [tag for tag in range(256) if parse_or_error(data, tag) is not None] == [0x3A]
    with pytest.raises(DecodeError, match="checksum mismatch") as info:
        Bitstream.from_bytes(data + b"\x00")
    assert info.value.offset == len(data) - 1


HEAD = bytes([0xD1, 0x3A])  # version 1: magic + version, model tag


@pytest.mark.parametrize(
    ("data", "message", "offset"),
    [
        (b"", "empty", 0),
        (b"\x89PNG\r\n", "not a diffcodec file", 0),
        (b"\xd3\x00\x00\x00x", "unsupported format version 3", 0),
        (b"\xd2\x00\x00", "shorter than the smallest file", 3),
        (HEAD, "truncated", 2),
        (HEAD + b"\x00", "truncated inside the dimensions", 3),
        (HEAD + b"\x00\x80\x00x", "not minimal", 3),
        (HEAD + b"\x1f\x80\x80\x80\x80\x80\x00", "longer than 5 bytes", 3),
        (HEAD + b"\x00\xff\xff\xff\xff\x7f", "does not fit 32 bits", 3),
        (HEAD + b"\x00\xff\xff\xff\xff\x0f", "each side is at most 65535", 3),  # 65536 x 65536
        (HEAD + b"\x00\xfd\xff\xff\xff\x0fx", "each side is at most 65535", 3),  # 65535 x 65536
        (HEAD + b"\x00\xfc\xff\xff\xff\x0fx", "more than 2**31 pixels", 3),  # 65535 x 65535
        (HEAD + b"\x00\xa8\xd5\xaa\xd5\x0ex", "more than 2**31 pixels", 3),  # 65535 x 32769
        (HEAD + b"\x40\x00\x05ab", "runs past the end", 4),
        (HEAD + b"\xc0\x00\x01\x01\x02abc", "stream 2 (length 2) runs past the end", 6),
        (HEAD + b"\x40\x00\x02ab", "last stream (stream 1) is empty", 5),
        (HEAD + b"\x00\x00", "last stream (stream 0) is empty", 4),
        (HEAD + b"\x20\x00\x00x", "0 fields", 4),
        (HEAD + b"\x20\x00\x21x", "only 32 keys exist", 4),
        (HEAD + b"\x20\x00\x02\x05\x02\x05\x02x", "key 5 appears twice", 7),
        (HEAD + b"\x20\x00\x02\x05\x02\x04\x02x", "keys must be sorted", 7),
        (HEAD + b"\x20\x00\x01\xe0\xff\xff\xff\xff\x0fxyz", "(4294967295 float32 elements) needs", 11),
        (HEAD + b"\x20\x00\x01\x23\x10abc", "needs 16 bytes but only 3 remain", 7),
        (HEAD + b"\x20\x00\x01\x00", "truncated inside the side-information field 0 varint", 6),
    ],
)
def test_malformed_files_say_what_and_where(data: bytes, message: str, offset: int) -> None:
    with pytest.raises(DecodeError, match=re.escape(message)) as info:
        Bitstream.from_bytes(data)
    assert info.value.offset == offset
    assert f"byte offset {offset}" in str(info.value)
    assert isinstance(info.value, ValueError)
    if data.startswith(HEAD) and len(data) >= 5:  # the same body as a version-2 file with a valid check
        with pytest.raises(DecodeError, match=re.escape(message)) as info:
            Bitstream.from_bytes(v2(data[2:]), 0x3A)
        assert info.value.offset == offset - 1


def test_huge_claimed_sizes_allocate_nothing_large() -> None:
    claims = [
        HEAD + b"\x20\x00\x01\xe0\xff\xff\xff\xff\x0f" + bytes(64),  # 4G float32 elements
        HEAD + b"\x20\x00\x01\x20\xff\xff\xff\xff\x0f" + bytes(64),  # 4 GB of side bytes
        HEAD + b"\xc0\x00\xff\xff\xff\xff\x0f\xff\xff\xff\xff\x0f\x01" + bytes(64),  # 4 GB streams
    ]
    claims += [v2(data[2:]) for data in claims]
    tracemalloc.start()
    try:
        for data in claims:
            with pytest.raises(DecodeError):
                Bitstream.from_bytes(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


def test_from_bytes_rejects_non_bytes() -> None:
    with pytest.raises(TypeError, match="expects bytes"):
        Bitstream.from_bytes("d1")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- encoder checks
@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rung": -1}, "rung must be"),
        ({"rung": MAX_RUNG + 1}, "rung must be"),
        ({"rung": 1.0}, "rung must be an int"),
        ({"model_tag": 256}, "model_tag must be 0..255"),
        ({"height": 0}, "height must be 1..65535"),
        ({"width": 65536}, "width must be 1..65535"),
        ({"height": 65535, "width": 32769}, "2\\*\\*31 pixels"),
        ({"streams": []}, "1..4 streams"),
        ({"streams": [b"a"] * 5}, "1..4 streams"),
        ({"streams": [b"a", b""]}, "last stream must not be empty"),
        ({"streams": [b"a", "text"]}, "stream 1 must be bytes"),
        ({"streams": b"abc"}, "list of byte strings"),
        ({"side": {32: 1}}, "keys must be 0..31"),
        ({"side": {-1: 1}}, "keys must be 0..31"),
        ({"side": {"norms": 1}}, "key must be an int"),
        ({"side": {0: True}}, "bool is not a side type"),
        ({"side": {0: 2**31}}, "outside the int32 range"),
        ({"side": {0: 1.5}}, "float is not a side type"),
        ({"side": {0: np.zeros((2, 2), np.float32)}}, "must be 1-D"),
        ({"side": {0: np.zeros(2, np.float64)}}, "float64 is not supported"),
        ({"side": [(0, 1)]}, "side must be a dict"),
    ],
)
def test_encoder_rejects_invalid_fields(fields: dict, message: str) -> None:
    base = {"model_tag": 1, "rung": 0, "height": 64, "width": 64, "side": {}, "streams": [b"a", b"b"]}
    with pytest.raises(ValueError, match=message):
        Bitstream(**{**base, **fields})


def test_to_bytes_revalidates_mutated_fields() -> None:
    stream = kodak(10)
    stream.rung = -3
    with pytest.raises(ValueError, match="rung must be"):
        stream.to_bytes()
