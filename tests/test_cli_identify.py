"""Files name their model: ``decompress`` without ``-m``, ambiguous and unknown tags, wrong models, typos.

The checks that must happen before any model is loaded run in fresh processes and assert that torch was
never imported (so no model can have been loaded) and that the command answered in under a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from test_hub import tiny

import diffcodec
from diffcodec import cli
from diffcodec.bitstream import Bitstream, model_tag
from diffcodec.imageio import to_tensor
from diffcodec.zoo import registry
from diffcodec.zoo.identify import folder_model_id, models_with_tag
from diffcodec.zoo.registry import ZooEntry

BUNDLED = "oscar-small"


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    from diffcodec.imageio import to_pil

    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    to_pil(x).save(path)
    return path


@pytest.fixture(scope="module")
def bundled_file(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file written by the bundled oscar-small (the API), to be decoded by the CLI."""
    path = tmp_path_factory.mktemp("dcb") / "photo.dcb"
    diffcodec.load(BUNDLED).compress(image, quality=1).to_file(path)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# A fresh process: the exit status, whether torch got imported, and the seconds cli.main took.
_PROBE = """
import json, sys, time
from diffcodec import cli
start = time.perf_counter()
code = cli.main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "seconds": time.perf_counter() - start}))
"""


def probe(*argv: str | Path) -> tuple[dict, str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, argv)], capture_output=True, text=True, timeout=120
    )
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_decompress_without_model_finds_the_bundled_model(bundled_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "photo.png"
    result = subprocess.run(
        [sys.executable, "-m", "diffcodec.cli", "decompress", str(bundled_file), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"loading {BUNDLED}" in result.stderr
    assert "file/s" not in result.stderr and "s/file" not in result.stderr  # stderr is a pipe: no bar
    expected = diffcodec.load(BUNDLED).decompress(Bitstream.from_file(bundled_file))  # PIL, as saved
    assert torch.equal(to_tensor(out), to_tensor(expected))


def test_wrong_model_is_named_before_anything_is_loaded(bundled_file: Path) -> None:
    result, err = probe("decompress", bundled_file, "-m", "stablecodec-small")
    assert result["code"] == 1 and not result["torch"] and result["seconds"] < 1.0
    assert "written by another model" in err and f"'{BUNDLED}'" in err and "stablecodec-small" in err


def test_a_typo_in_the_model_fails_at_once_with_a_suggestion(image: Path, bundled_file: Path) -> None:
    for argv in (("compress", image, "-m", "oscr-small"), ("decompress", bundled_file, "-m", "oscr-small")):
        result, err = probe(*argv)
        assert result["code"] == 1 and not result["torch"] and result["seconds"] < 1.0, err
        assert "Did you mean 'oscar-small'" in err


def test_the_api_also_fails_at_once_on_unknown_names() -> None:
    code = "import sys, diffcodec\ntry:\n    diffcodec.load('stablecodek')\n"
    code += "except ValueError as e:\n    print(e)\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    message, torch_imported = result.stdout.strip().splitlines()
    assert "Did you mean 'stablecodec'" in message and torch_imported == "False"


def test_ambiguous_tag_lists_the_candidates(
    capsys, bundled_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    twin = "oscar-small-twin575"  # a name whose 8-bit tag equals oscar-small's
    assert zlib.crc32(twin.encode()) & 0xFF == model_tag(BUNDLED)
    entry = registry.get_entry(BUNDLED)
    monkeypatch.setitem(registry._REGISTRY, twin, ZooEntry(**{**entry.__dict__, "name": twin}))
    assert [m.source for m in models_with_tag(model_tag(BUNDLED))] == [BUNDLED, twin]
    code, _, err = run(capsys, "decompress", bundled_file)
    assert code == 2 and "belongs to several models" in err and BUNDLED in err and twin in err
    assert "choose one with -m" in err


def test_own_model_without_m_says_to_pass_it(capsys, image: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    tiny(seed=3, name="my-own-model").save_pretrained(folder)
    assert folder_model_id(folder) == "my-own-model"
    dcb = tmp_path / "mine.dcb"
    assert run(capsys, "compress", image, "-m", folder, "-o", dcb)[0] == 0
    code, _, err = run(capsys, "decompress", dcb)
    assert code == 2 and "no zoo model writes files tagged" in err and "-m" in err
    code, _, err = run(capsys, "decompress", dcb, "-m", folder, "-o", tmp_path / "mine.png")
    assert code == 0, err
    assert models_with_tag(model_tag("my-own-model"), [folder])[-1].source == str(folder)


def test_api_wrong_model_error_names_the_owner(bundled_file: Path) -> None:
    codec = diffcodec.load("stablecodec-small")
    with pytest.raises(diffcodec.bitstream.DecodeError, match=f"'{BUNDLED}'"):
        codec.decompress(Bitstream.from_file(bundled_file))
