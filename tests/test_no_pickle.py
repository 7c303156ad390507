"""No checkpoint is ever unpickled: a crafted pickle whose ``__reduce__`` writes a file is fed to every entry
point that reads a checkpoint, and each one refuses it with a clear error before the code runs."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from diffcodec.cli import main as cli_main
from diffcodec.codecs.onedc.convert import read_official as read_onedc_release
from diffcodec.codecs.stablecodec import SMALL_ELIC, SMALL_LATENT_CODEC
from diffcodec.codecs.stablecodec.convert import convert_stablecodec
from diffcodec.errors import CheckpointError
from diffcodec.files import CHECKPOINT_SAFE_GLOBALS, load_checkpoint_file
from diffcodec.nn.elic import ELICAnalysisTransform
from diffcodec.training import InitFrom, SafeCheckpointIO
from diffcodec.training.cli import make_cli

BUNDLED = Path(__file__).resolve().parents[1] / "diffcodec" / "assets" / "models"
REFUSED = r"holds Python objects other than tensors \(exec\).*weights_only=True"


class Payload:
    """Unpickling this calls ``exec``, which writes ``marker``: what an attacker's checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 48, 3), 60 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture
def evil(tmp_path: Path, marker: Path) -> Path:
    """A Lightning-looking checkpoint (state dict, loops, …) with the payload in one entry."""
    path = tmp_path / "evil" / "last.ckpt"
    path.parent.mkdir()
    checkpoint = {"state_dict": {"net.0.weight": torch.zeros(1)}, "epoch": 0, "global_step": 1}
    torch.save({**checkpoint, "diffcodec": Payload(marker)}, path)
    return path


def test_the_payload_is_real(evil: Path, marker: Path) -> None:
    """The crafted file does run code under a plain (unsafe) load: the tests below are not vacuous."""
    torch.load(evil, weights_only=False)
    assert marker.read_text() == "pwned"


def test_safe_loader_refuses_and_allows_only_paths(evil: Path, marker: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=REFUSED):
        load_checkpoint_file(evil)
    assert not marker.exists()
    plain = tmp_path / "paths.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"train_dir": Path("/data/photos")}}, plain)
    assert load_checkpoint_file(plain)["hyper_parameters"]["train_dir"] == Path("/data/photos")
    assert all(isinstance(cls, type) for cls in CHECKPOINT_SAFE_GLOBALS)


def test_export_refuses(evil: Path, marker: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["export", str(evil), str(tmp_path / "out")]) == 2
    assert "tensors (exec)" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_init_from_refuses(evil: Path, marker: Path) -> None:
    init = InitFrom(str(evil))
    with pytest.raises(CheckpointError, match=REFUSED):
        init.setup(SimpleNamespace(ckpt_path=None), nn.Sequential(nn.Conv2d(3, 3, 1)), "fit")
    assert not marker.exists()


def test_fit_resume_refuses(
    evil: Path, marker: Path, tmp_path: Path, small_folder: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = {
        "model": {"class_path": "test_training.TinyModule"},
        "data": {
            "class_path": "diffcodec.data.ImageFolderDataModule",
            "init_args": {"train_dir": str(small_folder), "crops": 16, "batch_size": 2, "num_workers": 0},
        },
        "trainer": {"accelerator": "cpu", "max_steps": 1, "default_root_dir": str(tmp_path), "logger": False},
    }
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    assert cli_main(["fit", "-c", str(config), "--ckpt_path", str(evil)]) == 1
    assert "tensors (exec)" in capsys.readouterr().err
    assert not marker.exists()
    cli = make_cli(["-c", str(config)], run=False)  # what `diffcodec fit` resumes through
    cli.before_fit()
    assert isinstance(cli.trainer.strategy.checkpoint_io, SafeCheckpointIO)
    # the same through Lightning's I/O plugin, for users who build their own Trainer
    with pytest.raises(CheckpointError, match=REFUSED):
        SafeCheckpointIO().load_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize("method", ["oscar", "stablecodec"])
def test_convert_refuses(
    method: str, evil: Path, marker: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    official = evil.with_name("oscar.pkl" if method == "oscar" else "stablecodec_ft2.pkl")
    shutil.copy(evil, official)
    out = str(tmp_path / "out")
    extra = ["--elic", str(evil), "-o", out] if method == "stablecodec" else [out]
    assert cli_main(["convert", method, str(official), *extra]) == 1
    assert "tensors (exec)" in capsys.readouterr().err
    assert not marker.exists()


def test_convert_stablecodec_refuses_an_evil_rung(evil: Path, marker: Path, tmp_path: Path) -> None:
    elic = tmp_path / "elic.pth"
    g_a = ELICAnalysisTransform(**SMALL_ELIC).state_dict()
    torch.save({f"g_a.{k}": v for k, v in g_a.items()}, elic)  # a good ELIC: the rung file is refused
    small = {"latent_codec": SMALL_LATENT_CODEC, "elic": SMALL_ELIC, "base_model": None}
    with pytest.raises(CheckpointError, match=REFUSED):
        convert_stablecodec([evil.rename(evil.with_name("stablecodec_ft2.pkl"))], elic, **small)
    assert not marker.exists()


def test_convert_onedc_refuses(evil: Path, marker: Path, tmp_path: Path) -> None:
    """The release is safetensors only: a pickle under its file names is not a readable file (the reader
    ``diffcodec convert onedc`` uses; the CLI first needs the DMD2 base U-Net, absent offline)."""
    folder = tmp_path / "onedc-lambda0.5"
    folder.mkdir()
    for name in ("model.safetensors", "model_1.safetensors"):
        shutil.copy(evil, folder / name)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        read_onedc_release(folder)
    assert not marker.exists()


def test_load_folder_refuses(evil: Path, marker: Path, tmp_path: Path) -> None:
    import diffcodec

    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(BUNDLED / "oscar-small" / "config.json", folder / "config.json")
    shutil.copy(evil, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        diffcodec.load(str(folder))
    assert not marker.exists()
