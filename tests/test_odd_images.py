"""Images as people have them, with every bundled method: any size from 1 × 1, EXIF orientation, 16-bit,
alpha, decompression bombs; and batches, one file per image, identical to coding each alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffcodec
from diffcodec.codecs.base import Codec
from diffcodec.imageio import AlphaWarning, ImageTooLargeError, to_tensor

METHODS = ["oscar-small", "stablecodec-small", "cadc-small", "onedc-small"]


@pytest.fixture(scope="module", params=METHODS)
def codec(request: pytest.FixtureRequest) -> Codec:
    return diffcodec.load(request.param)


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image (a gradient with a little noise), uint8 HWC."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    ramps = [ys * 200 / height, xs * 200 / width, (ys + xs) * 100 / (height + width)]
    base = np.stack(ramps, axis=-1)
    return np.clip(base + rng.normal(0, 8, base.shape) + 20, 0, 255).astype(np.uint8)


def rotated_file(path: Path, array: np.ndarray) -> Path:
    """``array`` saved with EXIF orientation 6: viewers show it turned 90° clockwise."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(array).save(path, exif=exif)
    return path


# ------------------------------------------------------------------------------------------ imageio
def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    array = photo(24, 40)
    tensor = to_tensor(rotated_file(tmp_path / "rotated.png", array))
    upright = np.rot90(array, k=-1)  # what a viewer shows: 40 high, 24 wide
    assert tensor.shape == (1, 3, 40, 24)
    assert torch.equal(tensor, torch.from_numpy(upright.copy()).permute(2, 0, 1)[None].float() / 255)


def test_16_bit_images_are_scaled_by_their_full_range(tmp_path: Path) -> None:
    dark = (np.arange(12 * 10).reshape(12, 10) * 20).astype(np.uint16)  # at most 2380 of 65535
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    expected = torch.from_numpy(dark.astype(np.float32) / 65535)
    tensor = to_tensor(tmp_path / "dark16.png")
    assert torch.allclose(tensor[0, 0], expected) and tensor.max() < 0.04  # not scaled by its own maximum
    rgb16 = np.repeat(dark[..., None], 3, axis=-1)
    assert torch.allclose(to_tensor(rgb16), expected.expand(1, 3, -1, -1))  # uint16 arrays too


def test_alpha_is_composited_on_white_with_a_warning() -> None:
    rgba = np.concatenate([photo(8, 8), np.full((8, 8, 1), 128, np.uint8)], axis=-1)
    with pytest.warns(AlphaWarning, match=r"alpha channel: composited on white"):
        tensor = to_tensor(Image.fromarray(rgba))
    expected = Image.alpha_composite(Image.new("RGBA", (8, 8), "white"), Image.fromarray(rgba)).convert("RGB")
    assert torch.equal(tensor, to_tensor(expected))


def test_decompression_bombs_raise_the_documented_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.fromarray(photo(30, 30)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # 900 pixels > 2 × the limit: Pillow's bomb error
    with pytest.raises(ImageTooLargeError, match="too large to decode safely") as info:
        to_tensor(tmp_path / "bomb.png")
    assert isinstance(info.value, ValueError)


# ------------------------------------------------------------------------------------- every method
@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 70), (70, 1), (3, 5), (64, 64), (65, 129)])
def test_every_size_codes_and_decodes(codec: Codec, height: int, width: int) -> None:
    x = torch.from_numpy(photo(height, width)).permute(2, 0, 1)[None].float() / 255
    stream = codec.compress(x, quality=0)
    data = stream.to_bytes()
    assert (stream.height, stream.width) == (height, width)
    assert stream.bpp == 8 * len(data) / (height * width)
    assert codec.decompress(data, output="tensor").shape == (1, 3, height, width)


def test_odd_files_code_as_their_upright_8_bit_rgb(codec: Codec, tmp_path: Path) -> None:
    array = photo(40, 56, seed=1)
    rotated = codec.compress(rotated_file(tmp_path / "rotated.png", array), quality=0)
    assert (rotated.height, rotated.width) == (56, 40)
    assert rotated == codec.compress(np.rot90(array, k=-1).copy(), quality=0)

    deep = (array[..., 0].astype(np.uint16) * 40).astype(np.uint16)  # a dark 16-bit grey photo
    Image.fromarray(deep).save(tmp_path / "deep.png")
    expected = torch.from_numpy(deep.astype(np.float32) / 65535).expand(1, 3, -1, -1)
    assert codec.compress(tmp_path / "deep.png", quality=0) == codec.compress(expected, quality=0)

    rgba = np.concatenate([array, np.full((40, 56, 1), 200, np.uint8)], axis=-1)
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    with pytest.warns(AlphaWarning):
        with_alpha = codec.compress(tmp_path / "alpha.png", quality=0)
    flat = Image.alpha_composite(Image.new("RGBA", (56, 40), "white"), Image.fromarray(rgba)).convert("RGB")
    assert with_alpha == codec.compress(flat, quality=0)


def test_batches_give_one_file_per_image_as_if_coded_alone(codec: Codec) -> None:
    images = [photo(40, 50, seed=2), photo(70, 33, seed=3), photo(1, 1, seed=4)]
    tensors = [torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 for a in images]
    alone = [codec.compress(x, quality=1) for x in tensors]
    together = codec.compress(tensors, quality=1)
    assert isinstance(together, list) and [s.to_bytes() for s in together] == [s.to_bytes() for s in alone]
    assert [s.to_bytes() for s in codec.compress(images, quality=1)] == [s.to_bytes() for s in alone]

    batch = torch.cat([tensors[0], torch.flip(tensors[0], dims=[-1])])  # (2, 3, H, W)
    streams = codec.compress(batch, quality=1)
    assert len(streams) == 2 and streams[0] == alone[0]
    assert streams[1] == codec.compress(batch[1:], quality=1)

    if codec.method == "oscar":  # its internal coder once packed a batch into one stream: now refused
        with pytest.raises(ValueError, match="codes one image"):
            codec._compress(torch.rand(2, 3, 32, 32), 0)

    decoded = codec.decompress([s.to_bytes() for s in together], output="tensor")
    for image, stream in zip(decoded, alone):
        assert torch.equal(image, codec.decompress(stream, output="tensor"))
