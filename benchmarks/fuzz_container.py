"""Benchmark: what a corrupted ``.dcb`` file does to each bundled model's decoder.

Compresses one small photo crop (the bundled astronaut, 96 × 64 by default) at the lowest rung of each
bundled model, then decodes mutants of that valid file with ``codec.decompress`` and counts the outcome:

- ``DecodeError``: the corruption was detected (the only acceptable outcome);
- ``other``: any other exception (a crash the user cannot tell from a bug);
- ``silent, same``: decoded without error to the same image as the valid file;
- ``silent, different``: decoded without error to another image or size — silent corruption;
- ``hang``: a decode that took longer than ``--timeout`` seconds.

Mutants, in equal shares: truncations (cut to a random shorter length), 1–8 random bit flips in the
header (container fields and side information), 1–8 random bit flips in the payload (the entropy-coded
streams), and 1–16 random bytes appended. The generator is seeded, so a run is repeatable.

Run (a script, not a test; a few minutes on a CPU while every mutant reaches the model's decoder)::

    HF_HUB_OFFLINE=1 python benchmarks/fuzz_container.py [--mutants 400] [--models oscar-small ...]

It only uses ``diffcodec.load``, ``Codec.compress`` and ``Codec.decompress(bytes)``, so it measures any
version of the format (``docs/bitstream.md`` reports it before and after the whole-file check).
"""

from __future__ import annotations

import argparse
import random
import signal
import time
from collections import Counter
from importlib import resources

import torch
from PIL import Image

import diffcodec
from diffcodec.bitstream import DecodeError

MODELS = ("oscar-small", "stablecodec-small", "cadc-small", "onedc-small")
KINDS = ("truncate", "flip-header", "flip-payload", "append")
OUTCOMES = ("DecodeError", "other", "silent, same", "silent, different", "hang")


class _Hang(Exception):
    pass


def _on_alarm(signum: int, frame: object) -> None:
    raise _Hang


def mutate(data: bytes, payload: range, kind: str, rng: random.Random) -> bytes:
    """One mutant of ``data``; ``payload`` is where the streams lie (the rest is container/side info)."""
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "append":
        return data + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    inside = kind == "flip-payload"
    positions = [bit for bit in range(len(data) * 8) if (bit // 8 in payload) == inside]
    out = bytearray(data)
    bits = rng.sample(positions, k=min(rng.randint(1, 8), len(positions)))
    for bit in bits:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def fuzz(model: str, image: Image.Image, mutants: int, seed: int, timeout: float) -> dict[str, Counter]:
    codec = diffcodec.load(model)
    stream = codec.compress(image, quality=0)
    data = stream.to_bytes()
    streams = b"".join(stream.streams)
    start = data.rindex(streams)
    payload = range(start, start + len(streams))
    reference = codec.decompress(data, output="tensor")
    print(
        f"{model}: {len(data)} bytes ({len(data) - len(streams)} container + side, streams "
        f"{[len(s) for s in stream.streams]}), {stream.bpp:.4f} bpp at rung 0",
        flush=True,
    )
    rng = random.Random(seed)
    results: dict[str, Counter] = {kind: Counter() for kind in KINDS}
    for index in range(mutants):
        kind = KINDS[index % len(KINDS)]
        mutant = mutate(data, payload, kind, rng)
        if mutant == data:
            continue
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            decoded = codec.decompress(mutant, output="tensor")
            same = decoded.shape == reference.shape and torch.equal(decoded, reference)
            outcome = "silent, same" if same else "silent, different"
        except _Hang:
            outcome = "hang"
        except DecodeError:
            outcome = "DecodeError"
        except Exception:
            outcome = "other"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        results[kind][outcome] += 1
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--mutants", type=int, default=400, help="mutants per model (default 400)")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 64), metavar=("W", "H"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds until a decode counts as a hang")
    args = parser.parse_args()
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _on_alarm)
    with Image.open(resources.files("diffcodec") / "assets" / "astronaut.png") as photo:
        image = photo.convert("RGB").resize(tuple(args.size), Image.Resampling.LANCZOS)
    rows = []
    for model in args.models:
        start = time.perf_counter()
        results = fuzz(model, image, args.mutants, args.seed, args.timeout)
        total = sum(results.values(), Counter())
        rows.append((model, total))
        for kind, counts in results.items():
            print(f"  {kind:13s} " + "  ".join(f"{o}: {counts[o]}" for o in OUTCOMES), flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    print("\n| model | mutants | DecodeError | other exception | silent, same | silent, different | hang |")
    print("|---|---|---|---|---|---|---|")
    for model, total in rows:
        n = sum(total.values())
        cells = " | ".join(f"{total[o]} ({100 * total[o] / n:.1f} %)" for o in OUTCOMES)
        print(f"| {model} | {n} | {cells} |")


if __name__ == "__main__":
    main()
