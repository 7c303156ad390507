"""``diffcodec.eval.compare`` and ``plot_crops``: the public helpers the comparison notebook is made of."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
from PIL import Image

from diffcodec.eval import Comparison, compare, plot_crops, plot_rd


@pytest.fixture(scope="module")
def crops(kodak_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crops")
    for name in ("kodim01.png", "kodim23.png"):
        with Image.open(kodak_dir / name) as image:
            image.convert("RGB").crop((200, 100, 392, 292)).save(folder / name)
    return folder


def test_compare_returns_a_table_curves_and_crops(crops: Path, tmp_path: Path) -> None:
    result = compare(["jpeg:20,60", "webp:10,50"], crops, tmp_path / "out", metrics=["psnr"], progress=False)
    assert isinstance(result, Comparison) and result.images == ["kodim01.png", "kodim23.png"]
    assert [(row["model"], row["rung"]) for row in result.table] == [
        ("jpeg", 0), ("jpeg", 1), ("webp", 0), ("webp", 1)
    ]  # fmt: skip
    for row in result.table:  # bpp from the real files, mean over both images
        files = [r for r in result.per_image if (r["model"], r["rung"]) == (row["model"], row["rung"])]
        sizes = [(tmp_path / "out" / r["file"]).stat().st_size for r in files]
        assert row["bpp"] == pytest.approx(sum(8 * s / 192**2 for s in sizes) / 2)
    markdown = result._repr_markdown_()
    assert markdown.splitlines()[0] == "| model | rung_label | bpp | psnr |" and "jpeg q=20" in markdown
    assert "jpeg q=60" in str(result) and len(result.table) == 4
    assert {curve.label for curve in result.curves} == {"jpeg", "webp"} and result.anchors == ("jpeg", "webp")

    bd = result.bd_rates("webp")
    jpeg = next(row for row in bd if row["model"] == "jpeg")
    assert math.isfinite(jpeg["psnr"]) or jpeg["notes"]
    written = bd.to_csv(tmp_path / "bd.csv")
    with open(written, newline="") as handle:
        assert {row["model"] for row in csv.DictReader(handle)} == {"jpeg"}

    figure = plot_crops(result, "kodim23.png", crop=(32, 32, 96))
    assert len([ax for ax in figure.axes if ax.images]) == 3  # original, jpeg, webp
    assert "kodim23.png" in figure._suptitle.get_text()
    assert plot_rd(result.curves, ["psnr"]).axes
    with pytest.raises(ValueError, match="was not evaluated"):
        plot_crops(result, "kodim99.png")
    with pytest.raises(FileNotFoundError, match="no image folder"):
        compare(["jpeg"], tmp_path / "missing")
