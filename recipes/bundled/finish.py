"""Finishing steps of ``recipes/bundled/train.sh`` for one exported small model.

    python recipes/bundled/finish.py rates FOLDER               # nominal bpp of each rung (printed)
    python recipes/bundled/finish.py set-rates FOLDER           # measure them and write them into FOLDER
    python recipes/bundled/finish.py card FOLDER RECORD METHOD  # append the training record to README.md

The nominal rates are the mean real file sizes of four bundled training photos (centre 512×512 crops),
never Kodak (the test set).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PIL import Image

PHOTOS = Path(os.environ.get("PHOTOS", Path(__file__).resolve().parents[2].parent / "shared/data/photos"))
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


def rates(folder: str) -> list[float]:
    import diffcodec

    codec = diffcodec.load(folder)
    crops = photo_crops()
    measured = []
    for rung in range(codec.num_rungs):
        sizes = [len(codec.compress(image, quality=rung).to_bytes()) for image in crops]
        measured.append(8 * sum(sizes) / (len(crops) * CROP * CROP))
    for k in range(1, len(measured)):  # a ladder's nominal rates must ascend
        measured[k] = max(measured[k], measured[k - 1] * 1.001)
    return [round(r, 5) for r in measured]


def set_rates(folder: str) -> list[float]:
    """Rebuild the ladder in ``folder`` with its measured rates; rewrite its weights, config and card."""
    import json

    import torch

    import diffcodec
    from diffcodec.zoo.hub import CONFIG_NAME, decode_init_args, save_codec

    measured = rates(folder)
    old = diffcodec.load(folder)
    config = json.loads((Path(folder) / CONFIG_NAME).read_text())
    cls = type(old)
    codec = cls(**{**decode_init_args(cls, config["init_args"]), "rates": measured})
    codec.load_state_dict(old.state_dict())
    dtype = config.get("weights_dtype")
    save_codec(codec.eval(), folder, weights_dtype=getattr(torch, dtype) if dtype else None)
    codec.generate_model_card(licence=LICENCE).save(str(Path(folder) / "README.md"))
    return measured


def card(folder: str, record: str, method: str) -> None:
    lines = [line.split("\t") for line in Path(record).read_text().splitlines() if line.strip()]
    mine = [(tag, phase, secs, command) for tag, phase, secs, command in lines if tag in (method, "base")]
    phase_times: dict[str, int] = {}  # the runs of one phase went side by side: a phase takes its longest
    for _, phase, seconds, _ in mine:
        phase_times[phase] = max(phase_times.get(phase, 0), int(seconds))
    total = sum(phase_times.values())
    text = [
        "",
        "## Training record",
        "",
        f"Trained by diffcodec on the bundled photos (`{PHOTOS}`, {len(photo_paths())} images; never Kodak)",
        "with",
        "`bash recipes/bundled/train.sh` (commands below, in order; `base` is the small base model shared by",
        "the bundled models; the runs of one phase went side by side). Wall time of these phases:",
        f"{total / 60:.1f} min ({', '.join(f'{phase} {secs} s' for phase, secs in phase_times.items())}).",
        "",
        "| step | phase | wall time (s) | command |",
        "|---|---|---:|---|",
        *[f"| {tag} | {phase} | {seconds} | `{command}` |" for tag, phase, seconds, command in mine],
        "",
    ]
    readme = Path(folder) / "README.md"
    readme.write_text(readme.read_text() + "\n".join(text))


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
