"""Rate–distortion plots: bpp on x (log scale), one panel per metric, saved as PNG and SVG.

Measured curves are solid lines with filled markers, published ones dashed with open markers, so a
figure never passes a paper's number off as our measurement. Uses matplotlib's object API (no
pyplot state), so it works headless and in notebooks alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from diffcodec.eval.curves import Curve
from diffcodec.eval.metrics import METRICS

__all__ = ["plot_rd", "save_figure"]

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
