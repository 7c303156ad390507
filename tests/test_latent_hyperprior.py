"""The reference codec end to end: a real codec assembled from the shared parts (foundation acceptance)."""

from __future__ import annotations

import pytest
import torch

from diffcodec.bitstream import Bitstream, DecodeError
from diffcodec.codecs.latent_hyperprior import LatentHyperprior
from diffcodec.imageio import pad_to_multiple, to_tensor


@pytest.fixture(scope="module")
def kodim(kodak_dir) -> torch.Tensor:
    return to_tensor(kodak_dir / "kodim23.png")


@pytest.fixture(scope="module")
def codec(kodim) -> LatentHyperprior:
    """A random-init reference codec whose prior is *calibrated* on the test image, like a trained one's.

    At random init h_s predicts means and scales unrelated to y, so many symbols fall in the far tails where
    the likelihood bound (30 bits) and the coder's escape codes differ. A data-dependent init of h_s's last
    layer (per-channel mean and std of the gained y, moment matching) removes that, and a large gain makes y
    carry kilobytes. Rung 2 keeps the init gain: it stays a low-rate rung.
    """
    torch.manual_seed(0)
    model = LatentHyperprior(name="test-reference").eval()
    m = model.hparams.latent_channels
    with torch.no_grad():
        model.log_gain[:2] = 5.0
        gain = model._gain(1)
        y_gained = model.g_a(model.backbone.encode(kodim * 2 - 1)) * gain
        model.h_s[-1].weight.zero_()
        model.h_s[-1].bias[:m] = y_gained.std(dim=(0, 2, 3)) / gain.flatten()
        model.h_s[-1].bias[m:] = y_gained.mean(dim=(0, 2, 3)) / gain.flatten()
    return model


@pytest.fixture(scope="module")
def kodak_file(codec, kodim, tmp_path_factory) -> tuple[Bitstream, int]:
    path = tmp_path_factory.mktemp("codec") / "kodim23.dcb"
    stream = codec.compress(kodim, quality=1)
    return stream, stream.to_file(path)


def test_kodak_file_round_trip_and_bpp(codec, kodim, kodak_file, tmp_path) -> None:
    stream, size = kodak_file
    path = tmp_path / "k.dcb"
    stream.to_file(path)
    assert path.stat().st_size == size == len(stream)
    assert stream.bpp == pytest.approx(8 * size / (512 * 768))
    assert (stream.height, stream.width, stream.rung) == (512, 768, 1)
    x_hat = codec.decompress(path, output="tensor")
    assert x_hat.shape == kodim.shape
    assert float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0


def test_decoder_latents_equal_encoder_latents(codec, kodim) -> None:
    padded = pad_to_multiple(kodim, codec.pad_multiple)
    codec._prepare_for_coding()
    with torch.inference_mode():
        streams, y_hat_encoder = codec.encode_latents(padded, 1)
        y_hat_decoder = codec.decode_latents(streams, tuple(padded.shape[-2:]), 1)
    assert y_hat_encoder.abs().sum() > 0  # y is not trivially zero
    assert torch.equal(y_hat_encoder, y_hat_decoder)


def test_file_size_matches_rate_estimate(codec, kodim, kodak_file) -> None:
    """Coded bytes are within 1 % of the model's own eval-mode rate estimate, plus the header."""
    stream, size = kodak_file
    with torch.no_grad():
        estimate_bytes = float(codec(kodim, rung=1).bits()) / 8
    assert estimate_bytes > 1000
    payload = size - stream.header_bytes
    assert abs(payload - estimate_bytes) <= 0.01 * estimate_bytes, (payload, estimate_bytes)


def test_bitstream_independent_of_thread_count(codec, kodak_dir) -> None:
    image = to_tensor(kodak_dir / "kodim15.png")[..., :256, :384]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = codec.compress(image, quality=1).to_bytes()
        torch.set_num_threads(2)
        two = codec.compress(image, quality=1).to_bytes()
        decoded_two = codec.decompress(two, output="tensor")
        torch.set_num_threads(1)
        decoded_one = codec.decompress(two, output="tensor")
    finally:
        torch.set_num_threads(threads)
    assert one == two
    assert torch.allclose(decoded_one, decoded_two, atol=1e-4)


@pytest.mark.parametrize("height,width", [(37, 53), (130, 129)])
def test_any_size_is_padded_and_cropped(codec, kodim, height, width) -> None:
    image = kodim[..., :height, :width]
    stream = codec.compress(image, quality=0)
    x_hat = codec.decompress(stream.to_bytes(), output="tensor")
    assert x_hat.shape == (1, 3, height, width)
    assert stream.bpp == pytest.approx(8 * len(stream.to_bytes()) / (height * width))


def test_rung_selection(codec) -> None:
    assert codec.select_rung(bpp=codec.rates[2] * 1.1) == 2
    assert codec.select_rung(quality=-1) == codec.num_rungs - 1
    with pytest.raises(ValueError, match="rungs"):
        codec.select_rung(quality=codec.num_rungs)


def test_wrong_model_and_corruption_raise_decode_error(codec, kodak_file) -> None:
    stream, _ = kodak_file
    other = Bitstream(
        model_tag=(stream.model_tag + 1) % 256,
        rung=stream.rung,
        height=stream.height,
        width=stream.width,
        streams=stream.streams,
    )
    with pytest.raises(DecodeError, match="another model"):
        codec.decompress(other)
    data = stream.to_bytes()
    with pytest.raises(DecodeError):
        codec.decompress(data[:-7])  # truncated y stream
    with pytest.raises(DecodeError):
        codec.decompress(data[: stream.header_bytes + 3])  # truncated inside the z stream
