"""Image input conversion, padding and cropping: every odd input gets a tensor or a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from diffcodec.imageio import AlphaWarning, pad_to_multiple, quantize_8bit, to_pil, to_tensor


@pytest.fixture
def rgb_array() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(13, 17, 3), dtype=np.uint8)


def test_rgb_path_pil_array_and_tensor_agree(rgb_array, tmp_path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(rgb_array).save(path)
    expected = torch.from_numpy(rgb_array).permute(2, 0, 1)[None].float() / 255
    for source in (path, str(path), Image.fromarray(rgb_array), rgb_array, expected[0], expected):
        tensor = to_tensor(source)
        assert tensor.shape == (1, 3, 13, 17) and tensor.dtype == torch.float32
        assert torch.equal(tensor, expected)
    assert torch.equal(to_tensor(torch.from_numpy(rgb_array).permute(2, 0, 1)), expected)  # uint8 tensor


def test_grey_palette_alpha_and_16_bit_modes(rgb_array) -> None:
    grey = to_tensor(Image.fromarray(rgb_array[..., 0]))
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    palette = to_tensor(Image.fromarray(rgb_array).convert("P"))
    assert palette.shape == (1, 3, 13, 17)
    rgba = np.concatenate([rgb_array, np.zeros_like(rgb_array[..., :1])], axis=-1)
    with pytest.warns(AlphaWarning):
        transparent = to_tensor(Image.fromarray(rgba))
    assert torch.equal(transparent, torch.ones_like(transparent))  # fully transparent → white background
    deep = Image.fromarray(rgb_array[..., 0].astype(np.uint16) * 257)
    assert deep.mode.startswith("I;16")
    assert torch.allclose(to_tensor(deep)[:, 0], grey[:, 0], atol=1e-6)


def test_bad_inputs_raise_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no image file"):
        to_tensor(tmp_path / "missing.png")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with pytest.raises(ValueError, match="not a readable image"):
        to_tensor(not_an_image)
    with pytest.raises(ValueError, match="one image at a time"):
        to_tensor(torch.rand(2, 3, 8, 8))
    with pytest.raises(ValueError, match="3 colour channels"):
        to_tensor(torch.rand(1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_tensor(torch.rand(1, 3, 8, 8) * 255)
    with pytest.raises(ValueError, match="NaN"):
        to_tensor(torch.full((1, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="uint8 or floating"):
        to_tensor(torch.ones(1, 3, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="empty"):
        to_tensor(torch.rand(1, 3, 0, 8))
    with pytest.raises(TypeError, match="cannot read an image"):
        to_tensor(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("height,width,multiple", [(13, 17, 8), (64, 64, 64), (5, 3, 16), (100, 1, 32)])
def test_padding_reaches_the_multiple_and_keeps_the_image(height, width, multiple) -> None:
    x = torch.rand(1, 3, height, width)
    padded = pad_to_multiple(x, multiple)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert padded.shape[-2] - height < multiple and padded.shape[-1] - width < multiple
    assert torch.equal(padded[..., :height, :width], x)


def test_to_pil_rounds_rather_than_truncates() -> None:
    x = torch.full((1, 3, 2, 2), 0.999 * 200 / 255 + 0.5 / 255)  # 200.3 → 200 when rounding
    assert np.asarray(to_pil(x))[0, 0, 0] == 200
    y = torch.full((1, 3, 1, 1), 100.6 / 255)
    assert np.asarray(to_pil(y))[0, 0, 0] == 101  # truncation would give 100
    assert torch.allclose(quantize_8bit(y), torch.full_like(y, 101 / 255))
