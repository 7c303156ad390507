"""Compare codecs on one folder of images in one call: a table, R-D curves, BD-rates, side-by-side crops.

    from diffcodec.eval import compare, plot_crops, plot_rd
    result = compare(["oscar-small", "stablecodec-small", "jpeg", "webp"], "kodak/")
    result                          # the per-rung table (Markdown in a notebook; .to_pandas() with pandas)
    plot_rd(result.curves)          # bpp against every metric
    result.bd_rates("webp")         # BD-rate table against an anchor
    plot_crops(result, "kodim23.png")

:func:`compare` is :func:`~diffcodec.eval.runner.evaluate` with the model names ``diffcodec eval -m``
takes (zoo names, folders, ``hf-hub:`` ids, ``jpeg`` / ``webp`` / ``avif`` with optional qualities), and
results restricted to the models and rungs asked for (an output folder may hold earlier runs of others).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffcodec.eval.anchors import PillowAnchor
from diffcodec.eval.curves import Curve, bd_rate_table, curves_from_rungs
from diffcodec.eval.protocol import CodecLike
from diffcodec.eval.runner import EvalConfig, ModelRun, evaluate, resolve_model

__all__ = ["Comparison", "Table", "compare"]


class Table(Sequence[dict]):
    """Rows (dicts) with chosen columns: a list you can index, a Markdown table in a notebook, a DataFrame
    with :meth:`to_pandas` (pandas is optional). NaN and missing cells show as ``—``."""

    def __init__(self, rows: Sequence[dict], columns: Sequence[str], number: str = "{:.4g}") -> None:
        self.rows = list(rows)
        self.columns = list(columns)
        self.number = number

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> Any:
        return self.rows[index]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.rows)

    def _cell(self, value: object) -> str:
        if isinstance(value, float):
            return "—" if math.isnan(value) else self.number.format(value)
        return "—" if value is None else str(value)

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "|" + " --- |" * len(self.columns)]
        for row in self.rows:
            lines.append("| " + " | ".join(self._cell(row.get(c)) for c in self.columns) + " |")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def __str__(self) -> str:
        table = [[self._cell(row.get(c)) for c in self.columns] for row in self.rows]
        widths = [max(len(c), *(len(r[i]) for r in table)) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths))]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in table]
        return "\n".join(line.rstrip() for line in lines)

    __repr__ = __str__

    def to_csv(self, path: str | Path) -> Path:
        """Write every field of the rows (not only the shown columns) as CSV; returns the path."""
        import csv

        fields: list[str] = []
        for row in self.rows:
            fields.extend(key for key in row if key not in fields and not isinstance(row[key], dict))
        path = Path(path)
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        return path

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame`` of every column of the rows (``pip install pandas``)."""
        try:
            import pandas
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError("Table.to_pandas needs pandas: pip install pandas") from error
        return pandas.DataFrame(self.rows)


@dataclass
class Comparison:
    """What :func:`compare` measured: per-rung rows (:attr:`table`), per-image records, and where.

    ``anchors`` are the labels of the classical codecs (JPEG, WebP, AVIF); ``out_dir`` holds every file,
    reconstruction and table (``per_image.csv``, ``per_rung.json``), so :func:`~diffcodec.eval.plot_crops`
    can show the reconstructions.
    """

    rows: list[dict]
    per_image: list[dict]
    metrics: tuple[str, ...]
    labels: tuple[str, ...]
    anchors: tuple[str, ...]
    data_dir: Path
    out_dir: Path
    table: Table = field(init=False)

    def __post_init__(self) -> None:
        self.table = Table(self.rows, ["model", "rung_label", "bpp", *self.metrics])

    @property
    def curves(self) -> list[Curve]:
        """One measured R-D curve per model (input of :func:`~diffcodec.eval.plot_rd`)."""
        return curves_from_rungs(self.rows)

    @property
    def images(self) -> list[str]:
        """The evaluated images' file names, sorted."""
        return sorted({record["image"] for record in self.per_image})

    def bd_rates(self, anchor: str, metrics: Sequence[str] | None = None) -> Table:
        """BD-rate (%) of every model against ``anchor`` (negative: fewer bits); ``notes`` says why a cell
        is undefined (no common quality range, a non-monotonic curve)."""
        metrics = list(metrics or self.metrics)
        rows = bd_rate_table(self.curves, anchor, metrics)
        return Table(rows, ["model", *metrics], number="{:+.1f} %")  # to_csv and the rows keep "notes"

    def _repr_markdown_(self) -> str:
        return self.table.to_markdown()

    def __str__(self) -> str:
        return str(self.table)


def compare(
    models: Sequence[str | ModelRun | tuple[str, CodecLike]],
    data: str | Path,
    out: str | Path | None = None,
    *,
    metrics: Sequence[str] | None = None,
    device: str | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> Comparison:
    """Evaluate ``models`` on the images in the folder ``data`` and return a :class:`Comparison`.

    ``models`` are names as ``diffcodec eval -m`` takes them (``"stablecodec-small:0,2"`` picks rungs,
    ``"jpeg:10,50"`` encoder qualities), :class:`~diffcodec.eval.runner.ModelRun` s, or ``(label, codec)``
    pairs. ``out`` (default ``runs/compare-<data folder name>`` in the working directory) keeps every file
    and resumes an interrupted run. ``metrics=None`` measures those that apply to the data
    (:func:`~diffcodec.eval.runner.default_metrics`); ``device=None`` is CUDA when available.
    """
    import torch

    data_dir = Path(data)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no image folder at {data_dir}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out_dir = Path(out) if out is not None else Path("runs") / f"compare-{data_dir.resolve().name}"
    runs = []
    for model in models:
        if isinstance(model, ModelRun):
            runs.append(model)
        elif isinstance(model, str):
            runs.append(resolve_model(model, device=device))
        else:
            runs.append(ModelRun(*model))
    config = EvalConfig(metrics=None if metrics is None else tuple(metrics), device=device, progress=progress)
    results = evaluate(runs, data_dir, out_dir, config=config, limit=limit)
    wanted = {(run.label, rung) for run in runs for rung in run.rungs or ()}
    anchors = tuple(run.label for run in runs if isinstance(run.codec, PillowAnchor))
    return Comparison(
        rows=[row for row in results.per_rung if (row["model"], row["rung"]) in wanted],
        per_image=[record for record in results.per_image if (record["model"], record["rung"]) in wanted],
        metrics=tuple(config.metrics or ()),
        labels=tuple(run.label for run in runs),
        anchors=anchors,
        data_dir=data_dir,
        out_dir=out_dir,
    )
