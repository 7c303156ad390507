"""Rate–distortion plots: bpp on x (log scale), one panel per metric, saved as PNG and SVG.

Measured curves are solid lines with filled markers, published ones dashed with open markers, so a
figure never passes a paper's number off as our measurement. Uses matplotlib's object API (no
pyplot state), so it works headless and in notebooks alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

from diffcodec.eval.curves import Curve
from diffcodec.eval.metrics import METRICS

if TYPE_CHECKING:
    from diffcodec.eval.comparison import Comparison

__all__ = ["plot_crops", "plot_rd", "save_figure"]

_MARKERS = "osD^v<>ph*"


def plot_rd(
    curves: Sequence[Curve],
    metrics: Sequence[str] | None = None,
    *,
    log_x: bool = True,
    title: str | None = None,
    columns: int | None = None,
) -> Figure:
    """One panel per metric (default: every metric some curve has), bpp on the x axis.

    Curves without any value for a metric are left out of that panel. An arrow in each panel's title
    says which direction is better.
    """
    if not curves:
        raise ValueError("nothing to plot: no curves")
    if metrics is None:
        metrics = [m for m in METRICS if any(c.points(m)[0].size for c in curves)]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")
    if not metrics:
        raise ValueError("the curves have no metric values to plot")
    if columns is None:
        columns = 2 if len(metrics) == 4 else 3
    columns = max(1, min(columns, len(metrics)))
    rows = math.ceil(len(metrics) / columns)
    figure = Figure(figsize=(4.6 * columns, 3.6 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    colours = {curve.label: f"C{i % 10}" for i, curve in enumerate(curves)}
    for ax, metric in zip(axes, metrics):
        spec = METRICS[metric]
        for index, curve in enumerate(curves):
            bpp, values = curve.points(metric)
            if bpp.size == 0:
                continue
            published = curve.source != "measured"
            ax.plot(
                bpp,
                values,
                linestyle="--" if published else "-",
                marker=_MARKERS[index % len(_MARKERS)],
                markersize=4,
                markerfacecolor="none" if published else colours[curve.label],
                color=colours[curve.label],
                linewidth=1.2,
                label=curve.label,
            )
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(spec.label)
        ax.set_title(
            f"{spec.label} ({'higher' if spec.higher_is_better else 'lower'} is better)", fontsize=10
        )
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    handles, labels = [], []
    for ax in axes[: len(metrics)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(
        handles, labels, loc="outside lower center", ncols=min(4, len(labels)), fontsize=8, frameon=False
    )
    if title:
        figure.suptitle(title)
    return figure


def plot_crops(
    comparison: Comparison,
    image: str | None = None,
    *,
    crop: tuple[int, int, int] | None = None,
    target_bpp: float | None = None,
    columns: int = 4,
) -> Figure:
    """The same crop of one image from every model of ``comparison``, each at its rung nearest a target rate.

    ``image`` is a file name of the evaluated set (default: the first); ``crop`` is (top, left, size) in
    pixels (default: a centred square of up to 256 px); ``target_bpp`` defaults to the geometric mean of the
    learned codecs' rates on that image (anchors such as JPEG often cannot go that low: their lowest rung
    shows). Each title gives the file's real bits per pixel for the whole image. Needs the reconstructions
    the runner saves (``save_reconstructions=True``, the default).
    """
    from PIL import Image

    names = comparison.images
    if not names:
        raise ValueError("the comparison holds no evaluated image")
    name = image if image is not None else names[0]
    if name not in names:
        raise ValueError(f"{name!r} was not evaluated; choose from {', '.join(names)}")
    records = [record for record in comparison.per_image if record["image"] == name]
    learned = [r for r in records if r["model"] not in comparison.anchors] or records
    target = target_bpp or math.exp(sum(math.log(r["bpp"]) for r in learned) / len(learned))

    def nearest(label: str) -> dict:
        return min(
            (r for r in records if r["model"] == label), key=lambda r: abs(math.log(r["bpp"] / target))
        )

    with Image.open(comparison.data_dir / name) as opened:
        original = opened.convert("RGB")
    side = min(256, original.width, original.height)
    top, left, side = crop or ((original.height - side) // 2, (original.width - side) // 2, side)
    box = (left, top, left + side, top + side)
    panels = [("original", original.crop(box))]
    for record in (nearest(label) for label in comparison.labels):
        recon = comparison.out_dir / Path(record["file"]).parent / "recon" / f"{Path(name).stem}.png"
        with Image.open(recon) as opened:
            panels.append((f"{record['model']}\n{record['bpp']:.4f} bpp", opened.convert("RGB").crop(box)))
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(2.6 * columns, 2.9 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, (title, picture) in zip(axes, panels):
        ax.imshow(picture)
        ax.set_title(title, fontsize=9)
    figure.suptitle(f"{name}, target {target:.4f} bpp", fontsize=10)
    return figure


def save_figure(
    figure: Figure, path: str | Path, formats: Sequence[str] = ("png", "svg"), dpi: int = 150
) -> list[Path]:
    """Save ``figure`` as ``path`` with each suffix in ``formats`` (``path``'s own suffix is replaced)."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        target = base.with_suffix(f".{fmt}")
        figure.savefig(target, dpi=dpi)
        written.append(target)
    return written
