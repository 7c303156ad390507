"""The comparison notebook (docs/notebooks/compare.ipynb) runs end to end on a small subset.

The notebook is executed with nbclient, its parameters overridden the way papermill does it (a cell inserted
after the one tagged ``parameters``): a folder of two 192 × 192 Kodak centre crops with ``LIMIT = 1``, two
rungs per model, two qualities per anchor, three of the four per-image metrics. The models are the bundled
small ones when the package has them, otherwise untrained stand-ins built here from the same recipes
(``recipes/<method>/small_cpu.yaml``, three rungs each), so the test exercises the notebook, not the training.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
from pathlib import Path

import nbformat
import pytest
import torch
import yaml
from nbclient import NotebookClient
from PIL import Image

import diffcodec
from diffcodec.codecs.oscar import OFFICIAL_RUNGS, OFFICIAL_TIMESTEPS

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "docs" / "notebooks" / "compare.ipynb"
BUNDLED = REPO / "diffcodec" / "assets" / "models"
METHODS = ("oscar", "onedc", "stablecodec", "cadc")
METRICS = ["psnr", "ms_ssim", "lpips"]  # DISTS (a VGG16 pass per image) left out to keep the test short
#: Three rungs per stand-in: λ descending = rate ascending; OSCAR's lowest, a middle and its highest rung.
STANDIN_LAMBDAS = {"onedc": [12.2, 4.6, 1.8], "stablecodec": [8.0, 2.0, 0.5], "cadc": [8.0, 2.0, 0.5]}
OSCAR_RUNGS = (0, 3, 7)
CROP = 192  # side of the Kodak centre crops the test evaluates (MS-SSIM's five scales need > 160)


def _read_notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def _parameters_index(notebook: nbformat.NotebookNode) -> int:
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, "the notebook needs exactly one cell tagged 'parameters'"
    return tagged[0]


def build_standin(method: str, folder: Path) -> None:
    """An untrained codec of the method's small recipe with three rungs, saved with ``save_pretrained``."""
    recipe = yaml.safe_load((REPO / "recipes" / method / "small_cpu.yaml").read_text())["model"]
    recipe = recipe["init_args"]["codec"]  # the training module's codec
    module, _, class_name = recipe["class_path"].rpartition(".")
    arguments = dict(recipe["init_args"])
    if method == "oscar":
        arguments["rungs"] = [OFFICIAL_RUNGS[i] for i in OSCAR_RUNGS]
        arguments["timesteps"] = [OFFICIAL_TIMESTEPS[i] for i in OSCAR_RUNGS]
    else:
        arguments["lambdas"] = STANDIN_LAMBDAS[method]
    torch.manual_seed(0)
    codec = getattr(importlib.import_module(module), class_name)(**arguments).eval()
    assert codec.num_rungs == 3 and codec.model_id == f"{method}-small"
    codec.save_pretrained(folder)


def model_source(method: str, standins: Path) -> str:
    """The bundled model's zoo name (or folder) when the package has it, else a stand-in folder."""
    name = f"{method}-small"
    if (BUNDLED / name / "config.json").is_file():
        return name if name in {entry.name for entry in diffcodec.list_models()} else str(BUNDLED / name)
    folder = standins / name
    if not (folder / "config.json").is_file():
        build_standin(method, folder)
    return str(folder)


def test_notebook_is_committed_executed_on_public_helpers() -> None:
    """The docs page shows the committed outputs (mkdocs-jupyter does not execute): they must be there,
    without errors; the code uses diffcodec's public API only and takes its data folder as one parameter."""
    notebook = _read_notebook()
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [output for cell in code for output in cell.outputs]
    assert all(cell.execution_count is not None for cell in code), "commit the notebook executed"
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 2  # R-D plot, crops
    assert sum("text/markdown" in output.get("data", {}) for output in outputs) == 2  # results, BD-rates
    parameters = notebook.cells[_parameters_index(notebook)].source
    for name in ("DATA", "MODELS", "LIMIT", "OUT"):
        assert f"\n{name} = " in f"\n{parameters}", f"{name} missing from the parameters cell"
    source = "\n".join(cell.source for cell in code)
    for private in ("diffcodec.eval.runner", "curves_from_rungs", "resolve_model", "shared/data", "import _"):
        assert private not in source, private
    assert "DATA_DIR" not in source and source.count("DATA") >= 2  # one parameter, used as given


@pytest.mark.heavy
def test_notebook_runs_on_a_subset(tmp_path: Path, kodak_dir: Path) -> None:
    data = tmp_path / "kodak-crops"
    data.mkdir()
    for path in sorted(kodak_dir.glob("*.png"))[:2]:  # LIMIT = 1 evaluates the first one only
        with Image.open(path) as image:
            left, top = (image.width - CROP) // 2, (image.height - CROP) // 2
            image.convert("RGB").crop((left, top, left + CROP, top + CROP)).save(data / path.name)
    out = tmp_path / "out"
    models = [f"{model_source(method, tmp_path / 'standins')}:0,2" for method in METHODS]
    parameters = {
        "MODELS": models,
        "ANCHORS": ["jpeg:20,60", "webp:10,50"],
        "METRICS": METRICS,
        "DATA": str(data),
        "LIMIT": 1,
        "OUT": str(out),
        "DEVICE": "cpu",
        "CROP": (64, 32, 128),
    }
    notebook = _read_notebook()
    injected = "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    notebook.cells.insert(
        _parameters_index(notebook) + 1,
        nbformat.v4.new_code_cell(injected, metadata={"tags": ["injected-parameters"]}),
    )
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    labels = [f"{method}-small" for method in METHODS]
    rows = json.loads((out / "per_rung.json").read_text())["rungs"]
    measured = {(row["model"], row["rung"]): row for row in rows}
    for label in [*labels, "jpeg", "webp"]:
        for rung in (0, 2) if label in labels else (0, 1):
            row = measured[(label, rung)]
            assert row["images"] == 1
            assert 0 < row["bpp"] < 24 and all(math.isfinite(row[m]) for m in METRICS), row
    with open(out / "bd_rate.csv", newline="") as handle:
        bd_rates = {row["model"]: row for row in csv.DictReader(handle)}
    assert set(bd_rates) == {*labels, "jpeg"} and {row["anchor"] for row in bd_rates.values()} == {"webp"}
    for row in bd_rates.values():  # a number, or the reason why there is none
        assert all(math.isfinite(float(row[m])) for m in METRICS) or row["notes"], row
    assert float(bd_rates["jpeg"]["psnr"]) > 0, "JPEG needs more bits than WebP for the same PSNR"

    assert (out / "rd.png").is_file() and (out / "crops.png").is_file()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 2  # R-D plot, crops
    assert not [output for output in outputs if output.output_type == "error"]
