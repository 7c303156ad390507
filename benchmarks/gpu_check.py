"""Cross-device decode check: files written on one device (CUDA), decoded on the CPU.

    python benchmarks/gpu_check.py --writer cuda --out results/decode_check.json

For every bundled model (all four methods) × every rung × two image sizes: the file is written with the
model on ``--writer`` and decoded by the same model on the CPU, which must succeed (no ``DecodeError``) and
give the picture the writer's own decoder gives (PSNR between the two decodes; they differ only by the
synthesis networks' arithmetic on the two devices). Whether the writer's file is byte-identical to the one
the CPU writes is recorded too (the analysis transforms run on the writer's device, so a symbol may differ;
such a file must still decode). With ``--writer cpu --writer-threads 2`` it is a CPU-only smoke run
(tests, ``GPU_CHECK_TINY=1``). Exit status 1 if any file failed to decode on the CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import diffcodec
from diffcodec.bitstream import DecodeError
from diffcodec.eval.bench import resized_image

MODELS = ("oscar-small", "stablecodec-small", "cadc-small", "onedc-small")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1 / mse)).item()


def check(writer_device: str, sizes: list[tuple[int, int]], writer_threads: int | None) -> list[dict]:
    records = []
    for name in MODELS:
        writer = diffcodec.load(name, device=writer_device)
        reader = diffcodec.load(name, device="cpu")
        for height, width in sizes:
            image = resized_image(None, height, width)
            for quality in range(writer.num_rungs):
                threads = torch.get_num_threads()
                torch.set_num_threads(writer_threads or threads)
                try:
                    written = writer.compress(image, quality=quality).to_bytes()
                    own = writer.decompress(written, output="tensor")
                finally:
                    torch.set_num_threads(threads)
                record = {
                    "model": name, "rung": quality, "size": f"{height}x{width}", "bytes": len(written),
                    "identical_to_cpu_file": written == reader.compress(image, quality=quality).to_bytes(),
                }  # fmt: skip
                try:
                    decoded = reader.decompress(written, output="tensor")
                except DecodeError as error:
                    record.update(decodes_on_cpu=False, error=str(error))
                else:
                    record.update(decodes_on_cpu=True, psnr_writer_vs_cpu_decode=psnr(own, decoded))
                records.append(record)
                print(json.dumps(record), flush=True)
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writer", default="cuda", help="device that writes the files (default cuda)")
    parser.add_argument("--writer-threads", type=int, default=None, help="torch threads while writing")
    parser.add_argument("--sizes", nargs="+", default=["256x256", "512x768"], help="HxW image sizes")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the records")
    args = parser.parse_args()
    if args.writer.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --writer cpu for a CPU-only run", file=sys.stderr)
        return 2
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    start = time.perf_counter()
    records = check(args.writer, sizes, args.writer_threads)
    failed = [r for r in records if not r["decodes_on_cpu"]]
    summary = {
        "writer": args.writer, "torch": torch.__version__,
        "writer_name": torch.cuda.get_device_name() if "cuda" in args.writer else "cpu",
        "files": len(records), "decode_failures": len(failed),
        "identical_files": sum(r["identical_to_cpu_file"] for r in records),
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "records": records}, indent=2) + "\n")
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
