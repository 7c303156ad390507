"""The ``diffcodec`` command line: compress / decompress a Kodak image, zoo, plugins, errors, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_hub import KODIM23, put_in_hub_cache, tiny

from diffcodec import cli
from diffcodec.bitstream import Bitstream
from diffcodec.codecs.latent_hyperprior import LatentHyperprior
from diffcodec.imageio import to_tensor

VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    tiny(seed=11, name="tiny-cli").save_pretrained(folder)
    return folder


@pytest.fixture
def kodim23(kodak_dir: Path) -> Path:
    return kodak_dir / KODIM23


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------ compress / decompress
def test_compress_then_decompress_a_kodak_image(
    capsys, tmp_path: Path, model_dir: Path, kodim23: Path
) -> None:
    dcb = tmp_path / "k23.dcb"
    code, out, err = run(
        capsys, "compress", kodim23, "-m", model_dir, "-q", "1", "-o", dcb, "--device", "cpu"
    )
    assert code == 0, err
    size = dcb.stat().st_size
    bpp = 8 * size / (768 * 512)
    assert out == f"{dcb}\t{bpp:.6f} bpp\t{size} bytes\t768x512\n"
    assert bpp == pytest.approx(1.0, abs=1e-3)  # rung 1 of the tiny codec: exactly 1 bpp plus the header
    assert "loaded tiny-cli" in err and "rung 1 of 3" in err and "k23.dcb in" in err
    stream = Bitstream.from_file(dcb)
    assert stream.rung == 1 and (stream.height, stream.width) == (512, 768)

    png = tmp_path / "k23.png"
    code, out, err = run(capsys, "decompress", dcb, "-m", model_dir, "-o", png)
    assert code == 0, err
    assert out.startswith(f"{png}\t{bpp:.6f} bpp")
    codec = tiny(seed=11, name="tiny-cli")
    expected = codec.decompress(codec.compress(kodim23, quality=1))
    with Image.open(png) as decoded:
        assert decoded.size == (768, 512)
        assert torch.equal(to_tensor(decoded), to_tensor(expected))


def test_several_inputs_go_to_the_out_dir(capsys, tmp_path: Path, model_dir: Path, kodak_dir: Path) -> None:
    images = [kodak_dir / "kodim01.png", kodak_dir / "kodim23.png"]
    code, out, _ = run(
        capsys, "compress", *images, "-m", model_dir, "--bpp", "0.4", "--out-dir", tmp_path / "o"
    )
    assert code == 0
    dcbs = [tmp_path / "o" / "kodim01.dcb", tmp_path / "o" / "kodim23.dcb"]
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(p) for p in dcbs]
    assert all(Bitstream.from_file(p).rung == 0 for p in dcbs)  # 0.4 bpp → the nearest rung, 0.5
    code, out, _ = run(capsys, "decompress", *dcbs, "-m", model_dir, "--out-dir", tmp_path / "png")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["kodim01.rec.png", "kodim23.rec.png"]


# ------------------------------------------------------------------------------------------ safe writes
def test_decompress_next_to_the_original_never_replaces_it(tmp_path: Path, kodim23: Path) -> None:
    """The reported data loss, in a fresh process: `decompress photo.dcb` next to photo.png."""
    photo = tmp_path / "photo.png"
    with Image.open(kodim23) as full:
        full.crop((256, 128, 384, 224)).save(photo)
    original = photo.read_bytes()

    def diffcodec(*argv: str | Path) -> subprocess.CompletedProcess:  # the bundled model: a fresh process
        command = [sys.executable, "-m", "diffcodec.cli", *map(str, argv), "-m", "oscar-small"]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    assert diffcodec("compress", "photo.png", "-q", "0").returncode == 0
    assert diffcodec("decompress", "photo.dcb").returncode == 0
    assert photo.read_bytes() == original
    with Image.open(tmp_path / "photo.rec.png") as reconstruction:
        assert reconstruction.size == (128, 96)
    again = diffcodec("decompress", "photo.dcb")
    assert again.returncode == 2 and "photo.rec.png exists; pass --force" in again.stderr
    assert diffcodec("decompress", "photo.dcb", "--force").returncode == 0
    assert diffcodec("decompress", "photo.dcb", "-o", "photo.dcb", "--force").returncode == 2
    assert photo.read_bytes() == original and Bitstream.from_file(tmp_path / "photo.dcb").rung == 0


def test_inputs_are_never_outputs_and_outputs_need_force(
    capsys, tmp_path: Path, model_dir: Path, kodim23: Path
) -> None:
    photo = tmp_path / "x.png"
    photo.write_bytes(kodim23.read_bytes())
    for extra in ([], ["--force"]):
        code, _, err = run(capsys, "compress", photo, "-m", model_dir, "-o", photo, *extra)
        assert code == 2 and "is one of the inputs" in err
    assert photo.read_bytes() == kodim23.read_bytes()
    dcb = tmp_path / "x.dcb"
    dcb.write_bytes(b"an older file")
    code, _, err = run(capsys, "compress", photo, "-m", model_dir, "-o", dcb)
    assert code == 2 and "exists; pass --force" in err and dcb.read_bytes() == b"an older file"
    assert run(capsys, "compress", photo, "-m", model_dir, "-o", dcb, "--force")[0] == 0
    assert Bitstream.from_file(dcb).width == 768
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dcb", "x.png"]  # no temporary file left


# ------------------------------------------------------------------------------------------ exit codes
@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["compress", "a.png"],  # no -m
        ["compress", "a.png", "-m", "x", "-q", "1", "--bpp", "0.1"],
        ["compress", "a.png", "-m", "x", "-q", "one"],
    ],
)
def test_usage_errors_exit_2(capsys, argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and "error" in err


def test_output_file_with_several_inputs_is_a_usage_error(capsys, tmp_path, model_dir, kodim23) -> None:
    code, _, err = run(capsys, "compress", kodim23, kodim23, "-m", model_dir, "-o", tmp_path / "x.dcb")
    assert code == 2 and "use --out-dir" in err
    code, _, err = run(capsys, "compress", kodim23, kodim23, "-m", model_dir, "--out-dir", tmp_path)
    assert code == 2 and "would both be written" in err


def one_line_error(err: str) -> str:
    """The error: one line, the last on stderr (progress lines may precede it), no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("diffcodec: error: ")]
    assert errors == lines[-1:] and "Traceback" not in err, err
    return lines[-1]


def test_failures_exit_1_with_one_line(capsys, tmp_path: Path, model_dir: Path, kodim23: Path) -> None:
    code, _, err = run(capsys, "compress", tmp_path / "missing.png", "-m", model_dir)
    assert code == 1 and "no such file" in one_line_error(err)

    code, _, err = run(capsys, "compress", kodim23, "-m", "no-such-model")
    assert code == 1 and "is not a zoo model" in one_line_error(err)

    code, _, err = run(capsys, "compress", kodim23, "-m", "onedc")
    assert code == 1 and "convert onedc" in one_line_error(err)

    code, _, err = run(capsys, "compress", kodim23, "-m", model_dir, "-q", "7")
    assert code == 1 and "has 3 rungs" in one_line_error(err)

    corrupt = tmp_path / "corrupt.dcb"
    corrupt.write_bytes(b"PNG? no")
    code, _, err = run(capsys, "decompress", corrupt, "-m", model_dir)
    assert code == 1 and "not a diffcodec file" in one_line_error(err)


def test_decoding_with_the_wrong_model_fails(capsys, tmp_path: Path, model_dir: Path, kodim23: Path) -> None:
    other = tmp_path / "other"
    tiny(seed=11, name="another-model").save_pretrained(other)
    dcb = tmp_path / "k.dcb"
    assert run(capsys, "compress", kodim23, "-m", other, "-o", dcb)[0] == 0
    code, _, err = run(capsys, "decompress", dcb, "-m", model_dir, "-o", tmp_path / "k.png")
    assert code == 1 and "written by another model" in one_line_error(err)
    assert not (tmp_path / "k.png").exists()


def test_debug_shows_the_traceback(capsys, tmp_path: Path, model_dir: Path) -> None:
    corrupt = tmp_path / "corrupt.dcb"
    corrupt.write_bytes(b"\x00")
    with pytest.raises(ValueError, match="not a diffcodec file"):
        cli.main(["--debug", "decompress", str(corrupt), "-m", str(model_dir)])


# ------------------------------------------------------------------------------------- zoo / version
def test_zoo_table_and_json(capsys) -> None:
    code, out, _ = run(capsys, "zoo")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "METHOD", "RATES", "(bpp)", "LICENCE", "LOCAL", "WEIGHTS", "STATUS"]
    oscar = next(row for row in rows if row.startswith("oscar "))
    assert "0.0019..0.125 (8)" in oscar and "unspecified" in oscar
    assert oscar.endswith(("not downloaded  downloads on first load", "cached          ready"))
    onedc = next(row for row in rows if row.startswith("onedc "))
    assert "not on the hub" in onedc and "cc-by-nc-sa-4.0" in onedc
    assert onedc.endswith("convert the official checkpoint")
    cadc = next(row for row in rows if row.startswith("cadc "))
    assert cadc.endswith("no weights released") and "ready" not in cadc
    assert next(row for row in rows if row.startswith("cadc-small ")).endswith("bundled         ready")
    code, out, _ = run(capsys, "zoo", "--json")
    entries = {e["name"]: e for e in json.loads(out)}
    assert entries["oscar"]["hub_id"] == "jinpeig/OSCAR" and "local_weights" in entries["oscar"]


def test_version(capsys) -> None:
    import diffcodec

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == f"diffcodec {diffcodec.__version__}"


# -------------------------------------------------------------------------------------------- plugins
PLUGIN_SOURCE = """
def add_arguments(parser):
    parser.add_argument("--name", required=True)

def run(args):
    print(f"hello {args.name}")
    return 0
"""
ARGV_PLUGIN_SOURCE = """
def run_argv(command, argv):
    print(command, argv)
    return 3
"""


def test_plugins_are_lazy_and_only_listed_when_present(capsys, tmp_path, monkeypatch) -> None:
    (tmp_path / "cli_test_plugin.py").write_text(PLUGIN_SOURCE)
    (tmp_path / "cli_test_argv_plugin.py").write_text(ARGV_PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        cli,
        "PLUGINS",
        {
            "hello": ("cli_test_plugin", "say hello"),
            "train": ("cli_test_argv_plugin", "LightningCLI-style"),
            "gone": ("cli_test_plugin_that_does_not_exist", "not written yet"),
        },
    )
    assert "cli_test_plugin" not in sys.modules
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "say hello" in out and "LightningCLI-style" in out
    assert "gone" not in out and "not written yet" not in out
    assert "cli_test_plugin" not in sys.modules  # --help imports no plugin

    assert run(capsys, "hello", "--name", "kodak") == (0, "hello kodak\n", "")
    assert run(capsys, "hello")[0] == 2
    code, out, _ = run(capsys, "train", "--trainer.max_steps", "3", "--help")
    assert (code, out) == (3, "train ['--trainer.max_steps', '3', '--help']\n")
    assert run(capsys, "gone")[0] == 2  # not offered: argparse's invalid choice


def test_the_real_plugins_that_exist_are_offered(capsys) -> None:
    _, out, _ = run(capsys, "--help")
    for command, (module, _) in cli.PLUGINS.items():
        present = (Path(cli.__file__).parent / Path(*module.split(".")[1:])).with_suffix(".py").is_file()
        listed = re.search(rf"^\s+{command}\b", out, re.MULTILINE) is not None
        assert listed == present, command


# ------------------------------------------------------------------------------------------ processes
def test_help_imports_nothing_heavy() -> None:
    code = "import sys; from diffcodec import cli; cli.build_parser(); print(sorted({'torch', 'lightning'} & set(sys.modules)))"  # noqa: E501
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_installed_entry_point(tmp_path: Path, kodim23: Path) -> None:
    """One run of the real `diffcodec` executable: the reference codec from a hub cache named by HF_HUB_CACHE,
    writing the same bytes as the same codec in this process."""
    torch.manual_seed(0)
    codec = LatentHyperprior(channels=16, latent_channels=16, hyper_channels=8).eval()
    codec.save_pretrained(tmp_path / "saved")
    cache = tmp_path / "hub"
    put_in_hub_cache(cache, "test-org/lh", {f.name: f for f in (tmp_path / "saved").iterdir()})
    crop = tmp_path / "kodim23-crop.png"
    with Image.open(kodim23) as full:
        full.crop((256, 128, 384, 256)).save(crop)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PATH": str(VENV_BIN)}
    argv = ["compress", str(crop), "-m", "hf-hub:test-org/lh", "-q", "1", "-o", str(tmp_path / "k.dcb")]
    result = subprocess.run(
        [str(VENV_BIN / "diffcodec"), *argv, "--device", "cpu"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    data = (tmp_path / "k.dcb").read_bytes()
    assert (
        result.stdout
        == f"{tmp_path / 'k.dcb'}\t{8 * len(data) / 128**2:.6f} bpp\t{len(data)} bytes\t128x128\n"
    )
    assert data == codec.compress(crop, quality=1).to_bytes()
