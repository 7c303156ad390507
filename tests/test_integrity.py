"""Corrupted files of every bundled method raise DecodeError: truncations, 1–8 flipped bits in the header
and in the payload, appended bytes (the whole-file CRC-16, docs/bitstream.md)."""

from __future__ import annotations

import random
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import diffcodec
from diffcodec.bitstream import Bitstream, DecodeError
from diffcodec.codecs.base import Codec

METHODS = ["oscar-small", "stablecodec-small", "cadc-small", "onedc-small"]
DECODE_SECONDS = 60  # a decode that takes longer counts as a hang


@pytest.fixture(scope="module", params=METHODS)
def valid(request: pytest.FixtureRequest) -> tuple[Codec, bytes]:
    """A bundled codec and a valid 64 × 48 file of it (a crop of the bundled photo) at its lowest rung."""
    codec = diffcodec.load(request.param)
    with Image.open(resources.files("diffcodec") / "assets" / "astronaut.png") as full:
        image = full.convert("RGB").resize((64, 48), Image.Resampling.LANCZOS)
    return codec, codec.compress(image, quality=0).to_bytes()


@contextmanager
def no_hang(seconds: int = DECODE_SECONDS) -> Iterator[None]:
    def hang(signum: int, frame: object) -> None:
        raise TimeoutError(f"decoding took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def payload_range(data: bytes) -> range:
    streams = b"".join(Bitstream.from_bytes(data).streams)
    start = data.rindex(streams)
    return range(start, start + len(streams))


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """One mutant: a truncation, 1–8 bit flips in the header (container, side information, check) or in
    the payload (the entropy-coded streams), or 1–16 appended bytes."""
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "append":
        return data + rng.randbytes(rng.randint(1, 16))
    payload = payload_range(data)
    bits = [b for b in range(8 * len(data)) if (b // 8 in payload) == (kind == "flip-payload")]
    out = bytearray(data)
    for bit in rng.sample(bits, k=min(rng.randint(1, 8), len(bits))):
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


KINDS = ("truncate", "flip-header", "flip-payload", "append")


def decode(codec: Codec, data: bytes) -> str:
    """``"DecodeError"``, or ``"decoded"`` (silently), or the name of any other exception."""
    try:
        with no_hang():
            codec.decompress(data, output="tensor")
    except DecodeError:
        return "DecodeError"
    except Exception as error:
        return type(error).__name__
    return "decoded"


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**32 - 1))
def test_every_mutant_raises_decode_error(valid: tuple[Codec, bytes], kind: str, seed: int) -> None:
    codec, data = valid
    mutant = mutate(data, kind, random.Random(seed))
    assert mutant != data
    assert decode(codec, mutant) == "DecodeError"


def test_at_least_999_in_1000_mutants_raise_decode_error(valid: tuple[Codec, bytes]) -> None:
    """1 000 seeded mutants per method (250 of each kind): ≥ 99.9 % DecodeError, nothing else raised."""
    codec, data = valid
    rng = random.Random(16)
    outcomes = Counter(decode(codec, mutate(data, KINDS[i % 4], rng)) for i in range(1000))
    assert set(outcomes) <= {"DecodeError", "decoded"}, outcomes
    assert outcomes["DecodeError"] >= 999, outcomes
    assert torch.equal(  # and the valid file still decodes, to the same image each time
        codec.decompress(data, output="tensor"), codec.decompress(data, output="tensor")
    )
