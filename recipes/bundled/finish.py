"""Finishing steps of ``recipes/bundled/train.sh``: run statistics, the λ sweep, ladder rates and checks,
model cards.

    python recipes/bundled/finish.py run-stats CKPT WALL_SECONDS      # "steps<TAB>steps/s" of one run
    python recipes/bundled/finish.py sweep OUT.json CKPT... [--targets 0.02 0.05 0.15]  # prints λ ladder
    python recipes/bundled/finish.py rates FOLDER                     # nominal bpp of each rung (printed)
    python recipes/bundled/finish.py set-rates FOLDER [--report R.json]  # measure, write, check the ladder
    python recipes/bundled/finish.py check FOLDER [--report R.json]   # measure and check, write nothing
    python recipes/bundled/finish.py card FOLDER RECORD METHOD [--sweep S.json] [--check R.json]
    python recipes/bundled/finish.py vae VAE_FOLDER IMAGES OUT.json  # the base VAE's round trip (PSNR, LPIPS)
    python recipes/bundled/finish.py summary RESULTS                  # device.sh's results.md (stdout)

Every rate is the mean real file size (``8·len(file)/pixels``, through the codec's ``compress``) of the
first ``RATE_PHOTOS`` (4) training photos, centre ``RATE_CROP``² (512²) crops — never Kodak (the test
set). ``set-rates`` and ``check`` fail (exit 1, the reason on stderr) when the ladder does not separate:
rates strictly increasing, each ≥ ``LADDER_MIN_RATIO`` (1.5) × the previous (``LADDER_CHECK=warn``: report
only). ``sweep`` measures one-λ runs, fits log-rate against log-λ and prints the λ of each target rate
(``recipes/bundled/ladder.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ladder import (
    MIN_RATIO,
    TARGETS,
    LadderError,
    fit_rate_curve,
    propose_lambdas,
    separation_problems,
)

if TYPE_CHECKING:
    from diffcodec.codecs.base import Codec

PHOTOS = Path(os.environ.get("PHOTOS") or os.environ.get("DATA", ".") + "/photos")  # train.sh sets PHOTOS
LICENCE = "apache-2.0"  # trained by diffcodec from scratch (base model included): the library's licence
RATE_PHOTOS = int(os.environ.get("RATE_PHOTOS", 4))
CROP = int(os.environ.get("RATE_CROP", 512))


def photo_paths() -> list[Path]:
    return sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})


def photo_crops() -> list[Image.Image]:
    """Centre crops (``RATE_CROP``², or the short side if smaller) of the first ``RATE_PHOTOS`` photos."""
    crops = []
    for path in photo_paths()[:RATE_PHOTOS]:
        image = Image.open(path).convert("RGB")
        side = min(CROP, image.width, image.height)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        crops.append(image.crop((left, top, left + side, top + side)))
    return crops


def _device() -> str:
    import torch

    return os.environ.get("RATE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def measured_rates(codec: Codec) -> list[float]:
    """Mean real file size (bpp) of each rung on the rate photos, in rung order, as measured."""
    codec = codec.to(_device())
    crops = photo_crops()
    pixels = sum(image.width * image.height for image in crops)
    measured = []
    for rung in range(codec.num_rungs):
        sizes = [len(codec.compress(image, quality=rung).to_bytes()) for image in crops]
        measured.append(round(8 * sum(sizes) / pixels, 5))
    return measured


def ascending(rates: list[float]) -> list[float]:
    """``rates`` made ascending (a ladder's nominal rates must be), each at least 1.001× the previous."""
    out = list(rates)
    for k in range(1, len(out)):
        out[k] = max(out[k], round(out[k - 1] * 1.001, 6))
    return out


def rates(folder: str) -> list[float]:
    import diffcodec

    return measured_rates(diffcodec.load(folder))


def check_ladder(name: str, measured: list[float], report: str | None) -> int:
    """Print / write the separation check of a measured ladder; the exit status (1: it fails)."""
    min_ratio = float(os.environ.get("LADDER_MIN_RATIO", MIN_RATIO))
    problems = separation_problems(measured, min_ratio)
    mode = os.environ.get("LADDER_CHECK", "fail")
    if report:
        document = {"model": name, "rates": measured, "min_ratio": min_ratio, "problems": problems}
        Path(report).write_text(json.dumps(document, indent=1) + "\n")
    if not problems:
        print(
            f"{name}: ladder separates: {measured} bpp (each ≥ {min_ratio:g}× the previous)", file=sys.stderr
        )
        return 0
    print(
        f"{name}: THE LADDER DOES NOT SEPARATE on the training photos ({measured} bpp): "
        + "; ".join(problems)
        + ". Choose λ further apart (python recipes/bundled/finish.py sweep ...) and retrain the rungs.",
        file=sys.stderr,
    )
    return 0 if mode == "warn" else 1


def set_rates(folder: str, report: str | None = None) -> int:
    """Rebuild the ladder in ``folder`` with its measured rates (made ascending), rewrite its weights and
    config, then check that the measured rates separate (the exit status)."""
    import torch

    import diffcodec
    from diffcodec.zoo.hub import CONFIG_NAME, decode_init_args, save_codec

    old = diffcodec.load(folder)
    measured = measured_rates(old)
    config = json.loads((Path(folder) / CONFIG_NAME).read_text())
    cls = type(old)
    codec = cls(**{**decode_init_args(cls, config["init_args"]), "rates": ascending(measured)})
    codec.load_state_dict(old.state_dict())
    dtype = config.get("weights_dtype")
    save_codec(codec.cpu().eval(), folder, weights_dtype=getattr(torch, dtype) if dtype else None)
    print(" ".join(str(r) for r in measured))
    return check_ladder(Path(folder).name, measured, report)


def check(folder: str, report: str | None = None) -> int:
    """Measure ``folder``'s rungs and check that they separate; writes nothing into the folder."""
    measured = rates(folder)
    print(" ".join(str(r) for r in measured))
    return check_ladder(Path(folder).name, measured, report)


def run_stats(checkpoint: str, wall_seconds: float) -> tuple[int, float] | None:
    """(optimizer steps, steps/s) of the run that wrote ``checkpoint`` (its last one); None if missing.

    Steps: the checkpoint's ``global_step``. Seconds: the training loop's own time where Lightning's
    ``Timer`` recorded it (every run with ``--trainer.max_time``), otherwise the command's wall time.
    """
    from diffcodec.training.init import read_lightning_checkpoint

    if not Path(checkpoint).is_file():
        return None
    state = read_lightning_checkpoint(checkpoint)
    steps = int(state["global_step"])
    timer = state.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {})
    seconds = float(timer.get("train") or wall_seconds)
    return steps, steps / seconds if seconds > 0 else 0.0


def sweep(out: str, checkpoints: list[str], targets: list[float]) -> list[float]:
    """Measure each one-λ run's rate, fit log-rate vs log-λ, return (and write to ``out``) the λ ladder
    whose rungs land on ``targets`` (ascending bpp, so λ descending)."""
    from diffcodec.training.export import codec_from_checkpoint

    points = []
    for path in checkpoints:
        codec = codec_from_checkpoint(path)
        (lam,) = codec.lambdas
        (rate,) = measured_rates(codec)
        points.append({"checkpoint": path, "lambda": float(lam), "bpp": rate})
        print(f"sweep: λ {lam:g} → {rate} bpp ({path})", file=sys.stderr)
    document: dict = {"points": points, "targets": targets}
    try:
        fit = fit_rate_curve([p["lambda"] for p in points], [p["bpp"] for p in points])
        ladder, notes = propose_lambdas(fit, targets, [p["lambda"] for p in points])
    except LadderError as error:
        document["error"] = str(error)
        Path(out).write_text(json.dumps(document, indent=1) + "\n")
        raise
    document.update(
        fit={"slope": fit.slope, "intercept": fit.intercept, "r2": fit.r2},
        ladder=ladder,
        predicted_bpp=[round(fit.rate(lam), 5) for lam in ladder],
        notes=notes,
    )
    Path(out).write_text(json.dumps(document, indent=1) + "\n")
    for note in notes:
        print(f"sweep: {note}", file=sys.stderr)
    return ladder


def vae_round_trip(vae_folder: str, images: str, out: str) -> dict:
    """Mean PSNR / LPIPS of the small base VAE's round trip (posterior mode, as its validation) on every
    image of ``images`` (cropped to multiples of 8): what caps every bundled codec's quality (issue 19)."""
    import torch
    from diffusers import AutoencoderKL

    from diffcodec.eval.metrics import ImageMetrics
    from diffcodec.imageio import to_tensor

    device = _device()
    vae = AutoencoderKL.from_pretrained(vae_folder).to(device).eval()
    metrics = ImageMetrics(("psnr", "lpips"), device=device)
    values: list[dict[str, float]] = []
    for path in sorted(p for p in Path(images).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"}):
        x = to_tensor(Image.open(path).convert("RGB")).to(device)
        x = x[..., : x.shape[-2] // 8 * 8, : x.shape[-1] // 8 * 8]
        with torch.no_grad():
            x_hat = vae.decode(vae.encode(x * 2 - 1).latent_dist.mode()).sample.add(1).div(2).clamp(0, 1)
        values.append(metrics(x, x_hat))
    document = {
        "vae": vae_folder, "images": len(values),
        **{name: sum(v[name] for v in values) / len(values) for name in ("psnr", "lpips")},
    }  # fmt: skip
    Path(out).write_text(json.dumps(document, indent=1) + "\n")
    return document


def read_record(record: str) -> list[tuple[str, str, str, str, str, str]]:
    """The record's lines as (tag, phase, seconds, steps, steps/s, command); lines of the older
    four-column record (no steps) get "—"."""
    rows = []
    for line in Path(record).read_text().splitlines():
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) == 4:
            cells = [*cells[:3], "—", "—", cells[3]]
        tag, phase, seconds, steps, rate, command = cells
        rows.append((tag, phase, seconds, steps, rate, command))
    return rows


def _sweep_lines(path: str) -> list[str]:
    document = json.loads(Path(path).read_text())
    points = ", ".join(f"λ {p['lambda']:g}: {p['bpp']} bpp" for p in document["points"])
    if "ladder" not in document:
        return ["", f"λ sweep ({points}): no ladder proposed: {document.get('error')}"]
    fit = document["fit"]
    return [
        "",
        f"λ sweep on the training photos ({points}); fit log R = {fit['intercept']:.3f} "
        f"{fit['slope']:+.3f}·log λ (R² {fit['r2']:.2f}); for the targets {document['targets']} bpp it "
        f"proposed λ {document['ladder']} (fit: {document['predicted_bpp']} bpp).",
        *document.get("notes", []),
    ]


def _check_lines(path: str) -> list[str]:
    document = json.loads(Path(path).read_text())
    verdict = (
        "separates" if not document["problems"] else "DOES NOT SEPARATE: " + "; ".join(document["problems"])
    )
    return ["", f"Ladder check (rates measured on the training photos: {document['rates']} bpp; each rung ≥ "
            f"{document['min_ratio']:g}× the previous): {verdict}."]  # fmt: skip


def _record_table(rows: list[tuple[str, str, str, str, str, str]]) -> list[str]:
    """The record's rows as a Markdown table."""
    return [
        "| step | phase | wall time (s) | optimizer steps | steps/s | command |",
        "|---|---|---:|---:|---:|---|",
        *[
            f"| {tag} | {phase} | {secs} | {steps} | {rate} | `{command}` |"
            for tag, phase, secs, steps, rate, command in rows
        ],
    ]


def card(
    folder: str, record: str, method: str, sweep_json: str | None = None, check_json: str | None = None
) -> None:
    """Write ``folder``'s model card: the library's card (licence, zoo-name usage) and the training record.

    ``NOTE`` (environment) is a paragraph about the hardware and data, placed above the record.
    """
    import diffcodec

    name = Path(folder).name
    text = diffcodec.load(folder).generate_model_card(licence=LICENCE).content
    text = text.replace("hf-hub:ORG/NAME", name)
    text = re.sub(
        r"Offline: on a machine with internet run .*?with a local path\)\.\n",
        "Offline: bundled with the diffcodec package (`diffcodec/assets/models/`), nothing is downloaded.\n",
        text,
        flags=re.S,
    )
    mine = [row for row in read_record(record) if row[0] in (method, "base")]
    phase_times: dict[str, int] = {}  # the runs of one phase went side by side: a phase takes its longest
    for _, phase, seconds, *_ in mine:
        phase_times[phase] = max(phase_times.get(phase, 0), int(seconds))
    total = sum(phase_times.values())
    phases = ", ".join(f"{phase} {secs} s" for phase, secs in phase_times.items())
    note = os.environ.get("NOTE", "").strip()
    text += "\n".join(
        [
            "",
            "## Training record",
            "",
            f"Trained by diffcodec on the bundled photos (`{PHOTOS}`, {len(photo_paths())} images;",
            "never Kodak) with `bash recipes/bundled/train.sh` (commands below, in order; `base` is the",
            "small base model of the bundled models; the runs of one phase went side by side). Wall time",
            f"of these phases: {total / 60:.1f} min ({phases}).",
            "Optimizer steps are each run's last checkpoint's `global_step`; steps/s divides them by the",
            "training loop's time (Lightning's timer: without start-up, data decoding and saving) where the",
            "run had a `--trainer.max_time`, else by the wall time.",
            *(["", note] if note else []),
            *(_sweep_lines(sweep_json) if sweep_json and Path(sweep_json).is_file() else []),
            *(_check_lines(check_json) if check_json and Path(check_json).is_file() else []),
            "",
            *_record_table(mine),
            "",
        ]
    )
    (Path(folder) / "README.md").write_text(text)


def _cell(value: object, digits: int = 4) -> str:
    if value is None or value == "" or (isinstance(value, float) and value != value):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def summary(results: str) -> str:
    """``recipes/bundled/device.sh``'s report: the Kodak R-D table and BD-rates (RESULTS/eval), the training
    record with steps/s, the λ sweeps and the ladder checks."""
    root = Path(results)
    lines = ["# Bundled models: device run", ""]
    vae = root / "vae_kodak.json"
    if vae.is_file():
        v = json.loads(vae.read_text())
        lines += [f"Base VAE round trip on Kodak ({v['images']} images): PSNR {v['psnr']:.2f} dB, "
                  f"LPIPS {v['lpips']:.4f}.", ""]  # fmt: skip
    per_rung = root / "eval" / "per_rung.json"
    if per_rung.is_file():
        rows = json.loads(per_rung.read_text())["rungs"]
        metrics = [m for m in ("psnr", "ms_ssim", "lpips", "dists") if any(m in row for row in rows)]
        lines += [
            "## Kodak (full resolution, every rung through a real file)",
            "",
            "| model | rung | bpp | " + " | ".join(metrics) + " | images |",
            "|---|---|---:|" + "---:|" * len(metrics) + "---:|",
            *[
                f"| {row['model']} | {row['rung_label']} | {_cell(row.get('bpp'))} | "
                + " | ".join(_cell(row.get(m), 2 if m == "psnr" else 4) for m in metrics)
                + f" | {row['images']} |"
                for row in rows
            ],
            "",
        ]
        bd = root / "eval" / "bd_rate.csv"
        if bd.is_file():
            with open(bd, newline="") as handle:
                table = list(csv.DictReader(handle))
            lines += [
                f"BD-rate vs {table[0]['anchor'] if table else 'webp'} (%, negative: fewer bits):",
                "",
                "| model | " + " | ".join(metrics) + " | notes |",
                "|---|" + "---:|" * len(metrics) + "---|",
            ]
            for row in table:
                cells = [_cell(float(row[m]) if row.get(m) else None, 1) for m in metrics]
                lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {row.get('notes', '')} |")
            lines.append("")
    else:
        lines += ["No Kodak evaluation (see log.txt).", ""]
    record = root / "record.tsv"
    if record.is_file():
        lines += ["## Training record", "", *_record_table(read_record(str(record)))]
        lines.append("")
    for path in sorted(root.glob("*-sweep.json")):
        lines += [f"**{path.name.removesuffix('-sweep.json')}**", *_sweep_lines(str(path)), ""]
    for path in sorted(root.glob("*-ladder-check.json")):
        lines += [f"**{path.name.removesuffix('-ladder-check.json')}**", *_check_lines(str(path)), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finish.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("run-stats", help="steps and steps/s of a run (from its last checkpoint)")
    stats.add_argument("checkpoint")
    stats.add_argument("wall_seconds", type=float)
    sweeping = commands.add_parser("sweep", help="fit rate vs λ of one-λ runs; print the λ ladder")
    sweeping.add_argument("out", help="JSON file for the points, the fit and the ladder")
    sweeping.add_argument("checkpoints", nargs="+")
    sweeping.add_argument("--targets", type=float, nargs="+", default=list(TARGETS), help="ascending bpp")
    for command in ("rates", "set-rates", "check"):
        sub = commands.add_parser(command)
        sub.add_argument("folder")
        if command != "rates":
            sub.add_argument("--report", help="write the check (rates, problems) to this JSON file")
    carding = commands.add_parser("card", help="write FOLDER/README.md: model card + training record")
    for name in ("folder", "record", "method"):
        carding.add_argument(name)
    carding.add_argument("--sweep", help="the method's sweep JSON (shown in the card)")
    carding.add_argument("--check", help="the method's ladder check JSON (shown in the card)")
    round_trip = commands.add_parser("vae", help="the base VAE's round trip on a folder of images")
    for name in ("vae_folder", "images", "out"):
        round_trip.add_argument(name)
    summarizing = commands.add_parser("summary", help="device.sh's results.md of a results folder")
    summarizing.add_argument("results")
    args = parser.parse_args(argv)
    if args.command == "run-stats":
        stats_ = run_stats(args.checkpoint, args.wall_seconds)
        print("—\t—" if stats_ is None else f"{stats_[0]}\t{stats_[1]:.2f}")
    elif args.command == "sweep":
        try:
            print(" ".join(f"{lam:g}" for lam in sweep(args.out, args.checkpoints, args.targets)))
        except LadderError as error:
            print(f"sweep: no ladder: {error}", file=sys.stderr)
            return 1
    elif args.command == "rates":
        print(" ".join(str(r) for r in rates(args.folder)))
    elif args.command == "set-rates":
        return set_rates(args.folder, args.report)
    elif args.command == "check":
        return check(args.folder, args.report)
    elif args.command == "vae":
        print(json.dumps(vae_round_trip(args.vae_folder, args.images, args.out)))
    elif args.command == "summary":
        print(summary(args.results))
    else:
        card(args.folder, args.record, args.method, args.sweep, args.check)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
