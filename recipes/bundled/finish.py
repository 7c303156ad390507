"""Finishing steps of ``recipes/bundled/train.sh`` for one exported small model.

    python recipes/bundled/finish.py rates FOLDER               # nominal bpp of each rung (printed)
    python recipes/bundled/finish.py set-rates FOLDER           # measure them and write them into FOLDER
    python recipes/bundled/finish.py card FOLDER RECORD METHOD [RUNS]  # write README.md: card + record

The nominal rates are the mean real file sizes of four bundled training photos (centre 512×512 crops),
never Kodak (the test set).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

if TYPE_CHECKING:
    from diffcodec.codecs.base import Codec

PHOTOS = Path(os.environ.get("PHOTOS") or os.environ.get("DATA", ".") + "/photos")  # train.sh sets PHOTOS
LICENCE = "apache-2.0"  # trained by diffcodec from scratch (base model included): the library's licence
RATE_PHOTOS = 4
CROP = 512


def photo_paths() -> list[Path]:
    return sorted(p for p in PHOTOS.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})


def photo_crops() -> list[Image.Image]:
    crops = []
    for path in photo_paths()[:RATE_PHOTOS]:
        image = Image.open(path).convert("RGB")
        left, top = (image.width - CROP) // 2, (image.height - CROP) // 2
        crops.append(image.crop((left, top, left + CROP, top + CROP)))
    return crops


def measured_rates(codec: Codec) -> list[float]:
    """Mean real file size (bpp) of each rung on the rate photos, made ascending."""
    crops = photo_crops()
    measured = []
    for rung in range(codec.num_rungs):
        sizes = [len(codec.compress(image, quality=rung).to_bytes()) for image in crops]
        measured.append(8 * sum(sizes) / (len(crops) * CROP * CROP))
    for k in range(1, len(measured)):  # a ladder's nominal rates must ascend
        measured[k] = max(measured[k], measured[k - 1] * 1.001)
    return [round(r, 5) for r in measured]


def rates(folder: str) -> list[float]:
    import diffcodec

    return measured_rates(diffcodec.load(folder))


def set_rates(folder: str) -> list[float]:
    """Rebuild the ladder in ``folder`` with its measured rates; rewrite its weights and config."""
    import torch

    import diffcodec
    from diffcodec.zoo.hub import CONFIG_NAME, decode_init_args, save_codec

    old = diffcodec.load(folder)
    measured = measured_rates(old)
    config = json.loads((Path(folder) / CONFIG_NAME).read_text())
    cls = type(old)
    codec = cls(**{**decode_init_args(cls, config["init_args"]), "rates": measured})
    codec.load_state_dict(old.state_dict())
    dtype = config.get("weights_dtype")
    save_codec(codec.eval(), folder, weights_dtype=getattr(torch, dtype) if dtype else None)
    return measured


def steps_reached(run_dir: Path) -> int:
    """The last optimizer step a run logged (``metrics.csv``, logged every few steps)."""
    with open(run_dir / "version_0" / "metrics.csv", newline="") as handle:
        return max(int(row["step"]) for row in csv.DictReader(handle)) + 1


def _option(command: str, flag: str) -> str | None:
    """The value after ``flag`` in a recorded command line (None when absent)."""
    return command.split(f"{flag} ")[1].split()[0] if f"{flag} " in command else None


def run_names(record: list[tuple[str, str, str, str]]) -> list[tuple[str, str]]:
    """(runs folder under runs/, label) of every `diffcodec fit` in the record, in order."""
    names = []
    for _, _, _, command in record:
        if " fit " not in f" {command} ":
            continue
        recipe = command.split(" -c ")[1].split()[0]
        if recipe.startswith("recipes/base/"):
            names.append((f"base/{Path(recipe).stem}", f"base {Path(recipe).stem}"))
            continue
        name = _option(command, "--trainer.logger.init_args.name") or Path(recipe).parent.name
        lam = _option(command, "--model.init_args.codec.init_args.lambdas") or _option(
            command, "--model.init_args.lambdas"
        )  # the second: records written before the codecs and their training modules were split
        names.append((f"bundled/{name}", name + (f" (λ {lam.strip('[]')})" if lam else "")))
    return names


def card(folder: str, record: str, method: str, runs: str = "runs") -> None:
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
    lines = [line.split("\t") for line in Path(record).read_text().splitlines() if line.strip()]
    mine = [(tag, phase, secs, command) for tag, phase, secs, command in lines if tag in (method, "base")]
    phase_times: dict[str, int] = {}  # the runs of one phase went side by side: a phase takes its longest
    for _, phase, seconds, _ in mine:
        phase_times[phase] = max(phase_times.get(phase, 0), int(seconds))
    total = sum(phase_times.values())
    note = os.environ.get("NOTE", "").strip()
    steps = [(label, steps_reached(Path(runs) / run)) for run, label in run_names(mine)]
    text += "\n".join([
        "",
        "## Training record",
        "",
        f"Trained by diffcodec on the bundled photos (`{PHOTOS}`, {len(photo_paths())} images; never Kodak)",
        "with `bash recipes/bundled/train.sh` (commands below, in order; `base` is the small base model of",
        "the bundled models; the runs of one phase went side by side). Wall time of these phases:",
        f"{total / 60:.1f} min ({', '.join(f'{phase} {secs} s' for phase, secs in phase_times.items())}).",
        *(["", note] if note else []),
        "",
        "| step | phase | wall time (s) | command |",
        "|---|---|---:|---|",
        *[f"| {tag} | {phase} | {seconds} | `{command}` |" for tag, phase, seconds, command in mine],
        "",
        "Steps reached (the last step logged in each run's `metrics.csv`, within 10 of the final one):",
        "",
        "| run | optimizer steps |",
        "|---|---:|",
        *[f"| {label} | {count} |" for label, count in steps],
        "",
    ])
    (Path(folder) / "README.md").write_text(text)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "rates":
        print(" ".join(str(r) for r in rates(*args)))
    elif command == "set-rates":
        print(" ".join(str(r) for r in set_rates(*args)))
    elif command == "card":
        card(*args)
    else:
        raise SystemExit(f"unknown command {command!r}; expected rates, set-rates or card")
