"""Feedback on long work: progress bars (files, tiles), the codec's one-screen repr, off-ladder ``bpp=``."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import diffcodec
from diffcodec import cli
from diffcodec.imageio import to_pil
from diffcodec.nn.tiling import tiled_apply
from diffcodec.progress import progress, progress_enabled, set_progress


@pytest.fixture
def bars_on() -> Iterator[None]:
    set_progress(True)
    yield
    set_progress(None)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for seed in range(2):
        path = folder / f"im{seed}.png"
        to_pil(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))).save(path)
        paths.append(path)
    return paths


def test_bars_follow_the_terminal_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    set_progress(None)
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert not progress_enabled()
    items = [1, 2, 3]
    assert progress(items) is items  # no bar: the list itself comes back
    set_progress(True)
    try:
        assert progress_enabled() and progress(items) is not items and list(progress(items)) == items
        assert progress([1], min_items=2) == [1]  # one step never gets a bar
    finally:
        set_progress(None)


def test_tiles_of_a_large_image_show_a_bar(bars_on, capsys) -> None:
    x = torch.rand(1, 2, 200, 150)
    y = tiled_apply(lambda t: t * 2, x, tile=96, overlap=32)
    assert torch.allclose(y, 2 * x)
    err = capsys.readouterr().err
    assert "200x150 in 96x96 tiles" in err and "/6" in err  # 3 × 2 tiles


def test_cli_bar_for_several_files_and_quiet(bars_on, capsys, images: list[Path], tmp_path: Path) -> None:
    argv = ["compress", *map(str, images), "-m", "oscar-small", "--out-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(r"compress: .*\| 2/2 ", err) and "file" in err
    assert cli.main([*argv, "--quiet", "--force"]) == 0  # the second run overwrites the first outputs
    err = capsys.readouterr().err
    assert not re.search(r"compress: ", err) and "[2/2]" in err  # the per-file log line stays, no bar
    set_progress(None)


def test_repr_is_a_one_screen_summary() -> None:
    codec = diffcodec.load("oscar-small", quality=1)
    text = repr(codec)
    lines = text.splitlines()
    assert len(lines) <= 10 and max(map(len, lines)) <= 120
    assert lines[0] == "OSCAR(model_id='oscar-small', method='oscar')"
    assert "3 (quality: nominal bpp) 0: 0.00976562, 1: 0.0429688, 2: 0.125; active 1" in text
    count = sum(p.numel() for p in codec.parameters())
    assert f"{count / 1e6:.2f} M" in text and "cpu" in text and "float32" in text
    assert "zoo 'oscar-small'" in text and "assets/models/oscar-small" in text
    assert str(codec) == text


def test_bpp_outside_the_ladder_warns_and_names_the_rung() -> None:
    with pytest.warns(
        UserWarning, match=r"bpp=0\.5 is outside oscar-small's ladder .* quality=2 \(0\.125 bpp\)"
    ):
        codec = diffcodec.load("oscar-small", bpp=0.5)
    assert codec.quality == 2
    with pytest.warns(UserWarning, match=r"quality=0"):
        codec.set_rung(bpp=0.001)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert codec.set_rung(bpp=0.05) == 1  # inside the ladder: the nearest rung, silently
