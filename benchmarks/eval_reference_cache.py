"""Metric time per image-rung of ``diffcodec eval`` with and without the cached reference features.

The same images and model are evaluated twice in one process, first with ``cache_reference_features=False``
(every rung runs LPIPS / DISTS on the original again, as before the cache), then with it (the original's
features are computed once per image). The metric values must be identical; the script checks it.

    python benchmarks/eval_reference_cache.py DATA_DIR [--model oscar-small] [--images 2] [--size 512]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder of images (e.g. Kodak)")
    parser.add_argument("--model", default="oscar-small")
    parser.add_argument("--images", type=int, default=2, help="first N images of the folder")
    parser.add_argument("--size", type=int, default=512, help="longer side the images are scaled to")
    parser.add_argument("--metrics", default="psnr,lpips,dists")
    args = parser.parse_args()

    from PIL import Image

    import diffcodec
    from diffcodec.eval.runner import EvalConfig, ModelRun, evaluate, list_images

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        for path in list_images(args.data, args.images):
            with Image.open(path) as image:
                image = image.convert("RGB")
                scale = args.size / max(image.size)
                image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS).save(
                    data / f"{path.stem}.png"
                )
        codec = diffcodec.load(args.model)
        results = {}
        for cached in (False, True):
            config = EvalConfig(
                metrics=tuple(args.metrics.split(",")),
                progress=False,
                save_reconstructions=False,
                cache_reference_features=cached,
                log=lambda message: None,
            )
            out = Path(tmp) / f"out-{cached}"
            results[cached] = evaluate([ModelRun("m", codec)], data, out, config=config).per_image
        size = next(iter(results[True]))
        print(
            f"{args.model}, {len(results[True]) // codec.num_rungs} images at "
            f"{size['width']}x{size['height']}, "
            f"{codec.num_rungs} rungs, metrics {args.metrics}, CPU threads: {_threads()}"
        )
        for cached in (False, True):
            records = results[cached]
            metric_s = sum(r["metrics_s"] for r in records) / len(records)
            per_metric = {
                name: sum(r["metric_timings_s"][name] for r in records) / len(records)
                for name in records[0]["metric_timings_s"]
            }
            detail = ", ".join(f"{name} {seconds:.3f}" for name, seconds in per_metric.items())
            label = "cached reference features" if cached else "no cache (before)       "
            print(f"{label}  metrics {metric_s:.3f} s per image-rung ({detail})")
        names = args.metrics.split(",")
        key = lambda r: (r["image"], r["rung"])  # noqa: E731
        for before, after in zip(sorted(results[False], key=key), sorted(results[True], key=key)):
            assert all(before[m] == after[m] for m in names), (before, after)
        print("metric values identical with and without the cache")


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
