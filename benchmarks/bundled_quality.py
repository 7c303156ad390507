"""Per-rung quality of the bundled small models on four Kodak images (what tests/test_bundled_models.py
guards). Every bpp is 8 × the real file size / pixels; PSNR and LPIPS (AlexNet, v0.1) on 8-bit images.

    python benchmarks/bundled_quality.py                       # print the table
    python benchmarks/bundled_quality.py --write tests/data/bundled_quality.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

FLOOR_IMAGES = ("kodim01.png", "kodim05.png", "kodim15.png", "kodim23.png")
BUNDLED = ("oscar-small", "onedc-small", "stablecodec-small", "cadc-small")
KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"


def measure(codec, kodak_dir: Path) -> list[tuple[float, float, float]]:
    """Mean (bpp, PSNR, LPIPS) of each rung over :data:`FLOOR_IMAGES`, through real files."""
    from diffcodec.bitstream import Bitstream
    from diffcodec.eval.metrics import ImageMetrics
    from diffcodec.imageio import to_tensor

    metrics = ImageMetrics(("psnr", "lpips"))
    results = []
    for rung in range(codec.num_rungs):
        rows = []
        for name in FLOOR_IMAGES:
            x = to_tensor(Path(kodak_dir) / name)
            data = codec.compress(x, quality=rung).to_bytes()
            x_hat = codec.decompress(Bitstream.from_bytes(data), output="tensor")
            values = metrics(x, x_hat)
            rows.append((8 * len(data) / (x.shape[-1] * x.shape[-2]), values["psnr"], values["lpips"]))
        results.append(tuple(round(sum(column) / len(rows), 5) for column in zip(*rows)))
    return results


def main() -> None:
    import diffcodec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kodak", type=Path, default=KODAK)
    parser.add_argument("--write", type=Path, help="write the measurements as JSON (the test's floors)")
    args = parser.parse_args()
    measured = {}
    for name in BUNDLED:
        start = time.perf_counter()
        measured[name] = measure(diffcodec.load(name), args.kodak)
        print(f"{name} ({time.perf_counter() - start:.0f} s)")
        for rung, (bpp, psnr, lpips) in enumerate(measured[name]):
            print(f"  q{rung}  bpp {bpp:.4f}  PSNR {psnr:.2f} dB  LPIPS {lpips:.4f}")
    if args.write:
        record = {
            "images": list(FLOOR_IMAGES),
            "command": "python benchmarks/bundled_quality.py",
            "measured": measured,
        }
        args.write.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
