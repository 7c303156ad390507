"""The inference path never imports the training stack: ``diffcodec.load`` + compress / decompress and the
``compress``, ``decompress``, ``zoo`` and ``demo`` commands run in a fresh process without Lightning,
TensorBoard or ``diffcodec.training`` in ``sys.modules``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: top-level packages (and diffcodec subpackages) a user who only compresses must not import
FORBIDDEN = ("lightning", "pytorch_lightning", "lightning_fabric", "tensorboard")

SCRIPT = """
import json, sys
from pathlib import Path
import diffcodec
from diffcodec import cli
from diffcodec.demo import sample_image_path

out = Path(sys.argv[1])
codec = diffcodec.load("oscar-small", quality=0)
stream = codec.compress(sample_image_path())
codec.decompress(stream.to_bytes())
steps = [
    ["zoo"],
    ["compress", str(sample_image_path()), "-m", "oscar-small", "-q", "0", "-o", str(out / "a.dcb")],
    ["decompress", str(out / "a.dcb"), "-m", "oscar-small", "-o", str(out / "a.png")],
    ["demo", "--out-dir", str(out / "demo")],
]
status = [cli.main(step) for step in steps]
def training(name):
    return name.startswith(("diffcodec.training.", "diffcodec.codecs.")) and name.endswith(".training")


forbidden = sorted(
    name for name in sys.modules
    if name.split(".")[0] in {forbidden} or name == "diffcodec.training" or training(name)
)
print(json.dumps({{"status": status, "forbidden": forbidden, "png": (out / "a.png").is_file()}}))
"""


def test_compressing_never_imports_lightning_tensorboard_or_the_training_code(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    script = SCRIPT.format(forbidden=set(FORBIDDEN))
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == [0, 0, 0, 0], result.stderr
    assert report["png"]
    assert report["forbidden"] == [], f"the inference path imported {report['forbidden'][:10]}"


def test_the_training_stack_is_what_the_check_would_catch(tmp_path: Path) -> None:
    """The same check run on a training import finds Lightning (so an empty list above means something)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = "import sys, diffcodec.codecs.oscar.training; print('lightning' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"
