"""The layers of docs/contributing.md hold: ``lint-imports`` checks the import-linter contracts of
pyproject.toml (nothing imports upward; the method packages never import each other; the inference path
never imports Lightning, TensorBoard or the training code)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def lint_imports(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if executable is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[dev]' (import-linter)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [executable, "--no-cache", *args], cwd=REPO, capture_output=True, text=True, env=env, timeout=600
    )


def test_the_layer_contracts_are_kept() -> None:
    result = lint_imports()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_would_be_caught(tmp_path: Path) -> None:
    """The checker is live: a contract the code does not keep (the codec core must not import the
    container, which it does) is reported broken, naming the import."""
    config = tmp_path / "contract.ini"
    config.write_text(
        "[importlinter]\nroot_package = diffcodec\n\n[importlinter:contract:probe]\nname = probe\n"
        "type = layers\nlayers =\n    diffcodec.bitstream\n    diffcodec.codecs.base\n"
    )
    result = lint_imports("--config", str(config))
    assert result.returncode != 0
    assert "diffcodec.codecs.base is not allowed to import diffcodec.bitstream" in result.stdout
