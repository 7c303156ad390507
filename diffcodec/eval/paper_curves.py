"""Published R-D numbers shipped as data, with the protocol each was measured under.

``published/tables.json`` describes every table (data set, resolution, FID protocol, where the numbers
come from); the numbers themselves are CSV files next to it, one row per point, empty cells for
metrics a table does not report. Tables:

- ``onedc/C`` … ``onedc/H``: the OneDC appendix Tables C–H (Kodak, CLIC2020, MS-COCO 30K, DIV2K at full
  resolution; Kodak and CLIC2020 resized and centre-cropped), each with MS-ILLM, PerCo (SD), DiffEIC,
  GLC, DiffC, DDCM and OneDC rows as printed.
- ``stablecodec/kodak-rates``: the two Kodak rates the StableCodec spec quotes (no metric values).

Only curves measured under the same protocol should be compared; :func:`load_published` puts the
table id in every curve's label and the protocol in ``Curve.protocol``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from importlib.resources import files

import numpy as np

from diffcodec.eval.curves import Curve

__all__ = ["PublishedTable", "list_published", "load_published"]

_METRIC_COLUMNS = ("psnr", "ms_ssim", "lpips", "dists", "fid")


@dataclass(frozen=True)
class PublishedTable:
    """Metadata of one published table (see ``published/tables.json``)."""

    id: str
    file: str
    table: str
    source: str
    dataset: str
    resolution: str
    metrics: tuple[str, ...]
    protocol: str


def _index() -> dict[str, PublishedTable]:
    raw = json.loads((files("diffcodec.eval") / "published" / "tables.json").read_text())
    return {
        key: PublishedTable(id=key, **{**value, "metrics": tuple(value["metrics"])})
        for key, value in raw.items()
    }


def list_published() -> list[PublishedTable]:
    """Every published table shipped with diffcodec."""
    return list(_index().values())


def load_published(table_id: str, methods: list[str] | None = None) -> list[Curve]:
    """One :class:`Curve` per method of a published table (``"onedc/C"``, …), labelled ``"METHOD [id]"``."""
    index = _index()
    if table_id not in index:
        raise ValueError(f"unknown published table {table_id!r}; available: {', '.join(index)}")
    meta = index[table_id]
    with (files("diffcodec.eval") / "published" / meta.file).open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["table"] == meta.table]
    available = list(dict.fromkeys(row["method"] for row in rows))
    if methods is not None:
        missing = [m for m in methods if m not in available]
        if missing:
            raise ValueError(f"{table_id} has no rows for {missing}; it has {available}")
        available = [m for m in available if m in methods]
    description = f"{meta.dataset}, {meta.resolution}. {meta.protocol} Source: {meta.source}"
    curves = []
    for method in available:
        points = [row for row in rows if row["method"] == method]
        curves.append(
            Curve(
                label=f"{method} [{table_id}]",
                bpp=np.array([float(row["bpp"]) for row in points]),
                metrics={
                    name: np.array([float(row[name]) if row[name] else math.nan for row in points])
                    for name in _METRIC_COLUMNS
                    if name in meta.metrics
                },
                source="published",
                protocol=description,
            )
        )
    return curves
