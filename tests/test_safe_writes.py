"""Writes are atomic and never replace a file by accident: ``Bitstream.to_file`` and ``save_image``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffcodec.bitstream import Bitstream
from diffcodec.files import write_atomic
from diffcodec.imageio import save_image


def stream() -> Bitstream:
    return Bitstream(model_tag=7, rung=1, height=48, width=64, streams=[b"z" * 9, b"y" * 40])


def test_to_file_overwrites_by_default_and_refuses_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "a.dcb"
    path.write_bytes(b"old")
    assert stream().to_file(path) == path.stat().st_size  # default: replace, like PIL's save
    assert Bitstream.from_file(path) == stream()
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"a\.dcb exists; pass overwrite=True"):
        stream().to_file(path, overwrite=False)
    assert path.read_bytes() == b"old"
    assert stream().to_file(tmp_path / "new.dcb", overwrite=False) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcb", "new.dcb"]


def test_a_failed_write_leaves_the_old_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills up while writing: the previous file stays, no partial or temporary file remains."""
    dcb, png = tmp_path / "a.dcb", tmp_path / "a.png"
    dcb.write_bytes(b"previous good file")
    Image.new("RGB", (4, 4), "red").save(png)
    before = png.read_bytes()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        stream().to_file(dcb)
    with pytest.raises(OSError, match="No space left"):
        save_image(torch.rand(1, 3, 8, 8), png)
    assert dcb.read_bytes() == b"previous good file" and png.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.dcb", "a.png"]


def test_files_get_the_usual_permissions(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    write_atomic(tmp_path / "atomic", b"x")
    assert (tmp_path / "atomic").stat().st_mode == plain.stat().st_mode


def test_save_image_picks_the_format_from_the_suffix(tmp_path: Path) -> None:
    x = torch.rand(1, 3, 12, 10)
    save_image(x, tmp_path / "r.png")
    with Image.open(tmp_path / "r.png") as image:
        assert image.format == "PNG" and image.size == (10, 12)
        assert np.array_equal(np.asarray(image), x[0].mul(255).round().byte().permute(1, 2, 0).numpy())
    save_image(Image.new("RGB", (5, 5)), tmp_path / "r.jpg", quality=90)
    with Image.open(tmp_path / "r.jpg") as image:
        assert image.format == "JPEG"
    with pytest.raises(FileExistsError):
        save_image(x, tmp_path / "r.png", overwrite=False)
    with pytest.raises(ValueError, match="cannot tell an image format"):
        save_image(x, tmp_path / "r.dcb")
