"""Rate–distortion curves: what the runner measures and what papers publish, in one shape.

A :class:`Curve` is one method's points (bpp and any metrics, NaN where a value is missing) plus where
they come from (``source`` = ``"measured"`` or ``"published"``) and under which protocol, so plots
and BD-rate tables can put our measurements beside the papers' without mixing them up silently.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffcodec.eval.bdrate import bd_rate
from diffcodec.eval.metrics import METRICS

__all__ = ["Curve", "bd_rate_table", "curves_from_rungs", "load_curves"]


@dataclass
class Curve:
    """One method's R-D points. ``metrics[name][i]`` belongs to ``bpp[i]``."""

    label: str
    bpp: np.ndarray
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = "measured"
    protocol: str = ""

    def __post_init__(self) -> None:
        self.bpp = np.asarray(self.bpp, dtype=np.float64).ravel()
        for name, values in list(self.metrics.items()):
            values = np.asarray(values, dtype=np.float64).ravel()
            if values.shape != self.bpp.shape:
                raise ValueError(f"{self.label}: {name} has {values.size} values for {self.bpp.size} rates")
            self.metrics[name] = values

    def points(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """(bpp, values) of the points that have ``metric``, sorted by rate."""
        if metric not in self.metrics:
            return np.zeros(0), np.zeros(0)
        values = self.metrics[metric]
        keep = np.isfinite(values) & np.isfinite(self.bpp)
        order = np.argsort(self.bpp[keep])
        return self.bpp[keep][order], values[keep][order]


def curves_from_rungs(rows: Iterable[Mapping[str, object]]) -> list[Curve]:
    """Group per-rung rows (``per_rung.json``) into one measured curve per model."""
    grouped: dict[str, list[Mapping[str, object]]] = {}
    for row in rows:
        grouped.setdefault(str(row["model"]), []).append(row)
    curves = []
    for label, model_rows in grouped.items():
        model_rows = sorted(model_rows, key=lambda r: float(r["bpp"]))  # type: ignore[arg-type]
        names = [m for m in METRICS if any(_finite(r.get(m)) for r in model_rows)]
        curves.append(
            Curve(
                label=label,
                bpp=np.array([float(r["bpp"]) for r in model_rows]),  # type: ignore[arg-type]
                metrics={m: np.array([_number(r.get(m)) for r in model_rows]) for m in names},
                source="measured",
                protocol="diffcodec eval (full resolution, 8-bit, FID/KID on 256-px patches)",
            )
        )
    return curves


def load_curves(out_dir: str | Path) -> list[Curve]:
    """The measured curves of an evaluation output folder (reads ``per_rung.json``)."""
    path = Path(out_dir) / "per_rung.json"
    if not path.is_file():
        raise FileNotFoundError(f"no per_rung.json in {out_dir}; run `diffcodec eval` there first")
    return curves_from_rungs(json.loads(path.read_text())["rungs"])


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number


def _finite(value: object) -> bool:
    return math.isfinite(_number(value))


def bd_rate_table(
    curves: Sequence[Curve], anchor: str, metrics: Sequence[str], *, method: str = "pchip"
) -> list[dict[str, object]]:
    """BD-rate (%) of every curve against the curve labelled ``anchor``, one row per curve.

    A cell is NaN, with the reason in ``notes``, where BD-rate is undefined (too few points, no
    overlap, a non-monotonic curve).
    """
    by_label = {curve.label: curve for curve in curves}
    if anchor not in by_label:
        raise ValueError(f"anchor {anchor!r} is not among the curves ({sorted(by_label)})")
    reference = by_label[anchor]
    rows = []
    for curve in curves:
        if curve.label == anchor:
            continue
        row: dict[str, object] = {"model": curve.label, "anchor": anchor}
        notes = []
        for metric in metrics:
            spec = METRICS.get(metric)
            if spec is None:
                raise ValueError(f"unknown metric {metric!r}")
            ra, da = reference.points(metric)
            rt, dt = curve.points(metric)
            try:
                row[metric] = bd_rate(ra, da, rt, dt, higher_is_better=spec.higher_is_better, method=method)  # type: ignore[arg-type]
            except ValueError as error:
                row[metric] = math.nan
                notes.append(f"{metric}: {error}")
        row["notes"] = "; ".join(notes)
        rows.append(row)
    return rows
