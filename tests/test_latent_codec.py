"""The latent-codec protocol (diffcodec.entropy.latent_codec): every method's latent codec has the
symmetric ``compress`` → ``{"strings", "shape"}`` → ``decompress(strings, shape)`` contract."""

from __future__ import annotations

import pytest
import torch

from diffcodec.codecs.cadc import SMALL_CADC_CODEC, CADCLatentCodec
from diffcodec.codecs.onedc import TINY_LATENT_CODEC, OneDCLatentCodec
from diffcodec.codecs.oscar import HyperEncoder
from diffcodec.codecs.stablecodec import SMALL_LATENT_CODEC, LatentCodec
from diffcodec.entropy.latent_codec import LatentCodec as LatentCodecProtocol


@pytest.mark.parametrize(
    "build",
    [
        lambda: LatentCodec(**SMALL_LATENT_CODEC),
        lambda: CADCLatentCodec(**SMALL_CADC_CODEC),
        lambda: OneDCLatentCodec(**TINY_LATENT_CODEC),
        lambda: HyperEncoder(2, 16, channels=8, latent_channels=8, codebook_dim=4),
    ],
    ids=["stablecodec", "cadc", "onedc", "oscar-vq"],
)
def test_every_latent_codec_implements_the_protocol(build) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(build(), LatentCodecProtocol)


def test_a_plain_module_does_not() -> None:
    assert not isinstance(torch.nn.Conv2d(1, 1, 1), LatentCodecProtocol)


def test_vq_hyper_encoder_round_trip_is_symmetric() -> None:
    torch.manual_seed(0)
    encoder = HyperEncoder(2, 16, channels=8, latent_channels=8, codebook_dim=4).eval()
    z0 = torch.randn(1, 4, 8, 12)
    with torch.no_grad():
        coded = encoder.compress(z0)
        decoded = encoder.decompress(coded["strings"], coded["shape"])
        expected = encoder.decode(encoder.encode(z0))
    assert coded["shape"] == (4, 6) and len(coded["strings"][0][0]) == 4 * 6 * 4 // 8  # 4 bits per index
    assert torch.equal(decoded["indices"], coded["indices"])
    assert torch.equal(decoded["z_hat"], expected)
    with pytest.raises(ValueError, match="one image"):
        encoder.decompress([[b"a"], [b"b"]], (4, 6))
