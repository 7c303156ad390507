"""``benchmarks/gpu_check.sh`` (the prepared GPU run) works: its CPU mode at tiny sizes, in a fresh shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.heavy
def test_gpu_check_script_runs_on_the_cpu_at_tiny_sizes(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_TINY": "1", "PYTHON": sys.executable, "GPU_CHECK_RESULTS": str(tmp_path)}
    env.pop("OUT", None)
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True, text=True,
        timeout=2400, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    bench = json.loads((tmp_path / "bench_full.json").read_text())
    runs = {(r["name"], r["synthesis_dtype"]["unet"], r["size"]) for r in bench["records"]}
    models = ("oscar-small", "stablecodec-small", "cadc-small", "onedc-small")
    dtypes, sizes = ("float32", "bfloat16"), ("128x128", "128x192")
    assert runs == {(m, d, s) for m in models for d in dtypes for s in sizes}
    assert all(r["parameter_path"] == "device" and r["random_weights"] for r in bench["records"])
    portable = json.loads((tmp_path / "bench_full_portable.json").read_text())
    assert {r["parameter_path"] for r in portable["records"]} == {"cpu"} and len(portable["records"]) == 4
    check = json.loads((tmp_path / "decode_check.json").read_text())
    assert check["summary"]["files"] == 12 and check["summary"]["decode_failures"] == 0  # 4 models × 3 rungs
    assert all(r["decodes_on_cpu"] and r["identical_to_cpu_file"] for r in check["records"])  # 2 vs 1 threads
    assert "exit 0" in (tmp_path / "log.txt").read_text()
