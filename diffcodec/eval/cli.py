"""``diffcodec eval``: evaluate models and anchors on a folder of images, then plot and tabulate.

    diffcodec eval -m jpeg -m webp -m stablecodec:0,2 --data kodak/ --out runs/kodak
    diffcodec eval --out runs/kodak --published onedc/C          # re-plot an existing run

Writes OUT/per_image.{jsonl,csv}, OUT/per_rung.{json,csv}, OUT/rd.{png,svg} and, when an anchor curve
is present, OUT/bd_rate.csv. Rerunning an interrupted command resumes it. The main ``diffcodec`` CLI
dispatches here (``add_arguments`` / ``run``); ``python -m diffcodec.eval.cli`` works on its own.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

__all__ = ["add_arguments", "main", "run"]


def _metric_list(text: str) -> tuple[str, ...]:
    from diffcodec.eval.metrics import METRICS

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``diffcodec eval``'s options to ``parser``."""
    parser.add_argument(
        "-m",
        "--model",
        dest="models",
        action="extend",
        nargs="+",
        default=[],
        metavar="MODEL[:QUALITIES]",
        help="model to evaluate (repeatable): a zoo name, a local folder or hf-hub:org/repo, with optional "
        "rung indices (stablecodec:0,2); or an anchor jpeg / webp / avif with optional encoder qualities "
        "(jpeg:10,30,50). Without -m, OUT is only re-aggregated and re-plotted.",
    )
    parser.add_argument(
        "--data", type=Path, help="folder of test images (e.g. Kodak); evaluated at full resolution"
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (reused to resume); required unless --list-published"
    )
    parser.add_argument(
        "--metrics",
        type=_metric_list,
        default=None,
        help="comma-separated metrics (default: those of psnr,ms_ssim,lpips,dists,fid,kid that apply to the "
        "data: FID/KID only with enough 256-px patches, MS-SSIM only for images of 161 px or more; "
        "lpips_vgg also available)",
    )
    parser.add_argument("--device", default="cpu", help="device for the codecs and metrics (default: cpu)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images (sorted by name)")
    parser.add_argument("--patch-size", type=int, default=256, help="FID/KID patch size (default: 256)")
    parser.add_argument(
        "--fid-min-patches",
        type=int,
        default=None,
        help="report FID/KID only with at least this many patches (default: 2048)",
    )
    parser.add_argument(
        "--anchor", help="curve that BD-rates are computed against (default: jpeg when present)"
    )
    parser.add_argument(
        "--published",
        action="append",
        default=[],
        metavar="TABLE",
        help="draw a published table beside the measured curves (e.g. onedc/C); see --list-published",
    )
    parser.add_argument("--list-published", action="store_true", help="list the published tables and exit")
    parser.add_argument("--no-plot", action="store_true", help="do not write rd.png / rd.svg")
    parser.add_argument(
        "--no-reconstructions", action="store_true", help="do not save reconstructions as PNG"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _print_table(rows: list[dict], columns: list[str], out=sys.stdout) -> None:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return "—" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    table = [[cell(row.get(col, "")) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in table)) for i, col in enumerate(columns)]
    print("  ".join(col.ljust(w) for col, w in zip(columns, widths)), file=out)
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)), file=out)


def run(args: argparse.Namespace) -> int:
    """Execute ``diffcodec eval`` with parsed ``args``; returns the process exit code."""
    from diffcodec.eval.paper_curves import list_published, load_published

    if args.list_published:
        for table in list_published():
            print(f"{table.id:26s} {table.dataset}, {table.resolution}")
        return 0
    if args.out is None:
        print("diffcodec eval: error: --out is required", file=sys.stderr)
        return 2
    try:
        from diffcodec.eval.curves import bd_rate_table
        from diffcodec.eval.metrics import METRICS
        from diffcodec.eval.patch_fid import DEFAULT_MIN_SAMPLES
        from diffcodec.eval.plots import plot_rd, save_figure
        from diffcodec.eval.runner import EvalConfig, Evaluator, resolve_model

        published = [curve for table in args.published for curve in load_published(table)]
        config = EvalConfig(
            metrics=args.metrics,
            device=args.device,
            patch_size=args.patch_size,
            min_fid_samples=DEFAULT_MIN_SAMPLES if args.fid_min_patches is None else args.fid_min_patches,
            save_reconstructions=not args.no_reconstructions,
            progress=not args.no_progress,
        )
        if args.models and args.data is None:
            raise ValueError("--data is required to evaluate models")
        models = [resolve_model(spec, device=args.device) for spec in args.models]
        evaluator = Evaluator(args.data, args.out, config, limit=args.limit)
        results = evaluator.run(models) if models else evaluator.summarize()
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, RuntimeError, ModuleNotFoundError) as error:
        print(f"diffcodec eval: error: {error}", file=sys.stderr)
        return 2

    curves = results.curves()
    metrics = [m for m in config.metrics if m in METRICS]
    columns = ["model", "rung_label", "bpp", *[m for m in metrics if any(m in r for r in results.per_rung)]]
    _print_table(results.per_rung, columns)
    print(f"\nper-image and per-rung tables in {args.out}")

    labels = [curve.label for curve in curves]
    anchor = args.anchor or ("jpeg" if "jpeg" in labels else None)
    if anchor is not None and len(curves) > 1:
        if anchor not in labels:
            print(
                f"diffcodec eval: error: --anchor {anchor!r} is not among the results ({labels})",
                file=sys.stderr,
            )
            return 2
        rows = bd_rate_table(curves, anchor, metrics)
        with open(args.out / "bd_rate.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["model", "anchor", *metrics, "notes"])
            writer.writeheader()
            writer.writerows(rows)
        print(f"\nBD-rate (%) against {anchor} (negative = fewer bits for the same quality):")
        _print_table(rows, ["model", *metrics])
    if not args.no_plot and (curves or published):
        figure = plot_rd([*curves, *published], title=f"{args.out.name}")
        written = save_figure(figure, args.out / "rd")
        print("plots: " + ", ".join(str(p) for p in written))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="diffcodec eval",
        description="Evaluate models and anchors on a folder of images, then plot and tabulate.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
