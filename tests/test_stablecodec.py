"""StableCodec end to end on small configs of the real classes (tiny random-init SD backbone, small latent
codec and ELIC): real coding of a Kodak image into a diffcodec file and back, per-λ rung swapping, the hub
round trip, the colour fix and malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from diffcodec.bitstream import Bitstream, DecodeError
from diffcodec.codecs.stablecodec import (
    SMALL_ELIC,
    SMALL_LATENT_CODEC,
    SideField,
    StableCodec,
    adain_color_fix,
    color_statistics,
)
from diffcodec.imageio import to_tensor


def small_codec(**kwargs) -> StableCodec:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    options = {
        "latent_codec": SMALL_LATENT_CODEC,
        "elic": SMALL_ELIC,
        "lambdas": (8.0, 2.0),
        "rates": (0.01, 0.03),
    }
    return StableCodec(**{**options, **kwargs}).eval()


@pytest.fixture(scope="module")
def codec() -> StableCodec:
    return small_codec()


@pytest.fixture(scope="module")
def kodak_image(kodak_dir: Path) -> torch.Tensor:
    return to_tensor(kodak_dir / "kodim23.png")  # 768 × 512, no padding needed


@pytest.fixture(scope="module")
def coded(codec: StableCodec, kodak_image: torch.Tensor) -> dict:
    """Compress to bytes and decompress, recording what the latent codec returns on both sides."""
    recorded: dict = {}
    latent_codec = codec.latent_codec
    compress, decompress = latent_codec.compress, latent_codec.decompress
    latent_codec.compress = lambda *args: recorded.setdefault("encoder", compress(*args))
    latent_codec.decompress = lambda *args: recorded.setdefault("decoder", decompress(*args))
    try:
        stream = codec.compress(kodak_image, quality=0)
        data = stream.to_bytes()
        x_hat = codec.decompress(data, output="tensor")
    finally:
        del latent_codec.compress, latent_codec.decompress
    return {"stream": stream, "data": data, "x_hat": x_hat, **recorded}


def test_kodak_round_trip_through_a_file(kodak_image: torch.Tensor, coded: dict) -> None:
    """File bytes → the decoder's ŷ equals the encoder's bit for bit."""
    data = coded["data"]
    assert coded["x_hat"].shape == kodak_image.shape == (1, 3, 512, 768)
    assert torch.isfinite(coded["x_hat"]).all() and 0 <= coded["x_hat"].min() <= coded["x_hat"].max() <= 1
    parsed = Bitstream.from_bytes(data)
    assert (parsed.height, parsed.width, parsed.rung) == (512, 768, 0) and len(parsed.streams) == 2
    z_string, y_string = parsed.streams
    assert coded["encoder"]["strings"] == [[y_string], [z_string]]  # the file holds exactly these streams
    assert coded["encoder"]["shape"] == (2, 3)
    assert torch.equal(coded["decoder"]["y_hat"], coded["encoder"]["y_hat"])
    assert coded["stream"].bpp == pytest.approx(8 * len(data) / (512 * 768))


def test_padding_and_crop(codec: StableCodec, kodak_image: torch.Tensor) -> None:
    crop = kodak_image[..., :200, :260]  # padded to 256 × 512 (reflect), cropped back
    x_hat = codec.decompress(codec.compress(crop).to_bytes(), output="tensor")
    assert x_hat.shape == crop.shape


def test_rungs_swap_per_lambda_weights(codec: StableCodec, kodak_image: torch.Tensor) -> None:
    crop = kodak_image[..., :256, :256]
    reference = codec.compress(crop, quality=0).to_bytes()
    other = small_codec()
    with torch.no_grad():
        other.set_rung(1)
        for parameter in other.latent_codec.parameters():
            parameter.add_(0.01)
        other.backbone.unet.conv_in.weight.mul_(0.5)
        changed = other.latent_codec.g_a.pre2.weight.clone()
        other.set_rung(0)
        assert not torch.equal(other.latent_codec.g_a.pre2.weight, changed)  # rung 0 is back
        # rung 0 reproduces the original codec's file; rung 1 writes another one
        assert other.compress(crop, quality=0).to_bytes() == reference
        assert other.compress(crop, quality=1).to_bytes() != reference
        assert torch.equal(other.latent_codec.g_a.pre2.weight, changed)
        # the frozen parts are shared, not swapped
        assert other.backbone.unet.conv_in.weight.requires_grad
        assert not any(p.requires_grad for p in other.aux_encoder.parameters())


def test_hub_round_trip_keeps_every_rung(tmp_path: Path, kodak_image: torch.Tensor) -> None:
    first = small_codec()
    with torch.no_grad():
        first.set_rung(1)
        first.latent_codec.h_s.increase[0].bias.add_(0.5)
    stream = first.compress(kodak_image[..., :256, :256], quality=1)
    first.set_rung(0)
    first.save_pretrained(tmp_path)
    state = first.state_dict()
    assert int(state["active_rung"]) == 0 and "rungs.1.latent_codec.h_s.increase.0.bias" in state
    loaded = StableCodec.from_pretrained(tmp_path)
    assert loaded.rates == first.rates and loaded.lambdas == first.lambdas
    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded_state[key], value), key
    again = loaded.decompress(stream.to_bytes(), output="tensor")
    assert torch.equal(again, first.decompress(stream.to_bytes(), output="tensor"))


def test_color_fix_statistics_are_in_the_file(kodak_image: torch.Tensor) -> None:
    fixing = small_codec(color_fix=True)
    stream = fixing.compress(kodak_image[..., :256, :256])
    stats = stream.side[SideField.COLOR_STATS]
    assert stats.dtype == np.uint16 and stats.shape == (6,)
    assert np.array_equal(stats, color_statistics(kodak_image[..., :256, :256]).numpy())
    plain = small_codec().compress(kodak_image[..., :256, :256])
    assert 12 <= len(stream.to_bytes()) - len(plain.to_bytes()) <= 16  # 96 bits + framing are in the file
    fixed = fixing.decompress(stream.to_bytes(), output="tensor")
    unfixed = fixing.decompress(plain.to_bytes(), output="tensor")
    assert torch.equal(fixed, adain_color_fix(unfixed, torch.from_numpy(stats.astype(np.int64))))
    assert not torch.equal(fixed, unfixed)


def test_color_fix_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 40, 30, generator=generator).mul(255).round().div(255)
    stats = color_statistics(image)
    assert torch.allclose(adain_color_fix(image, stats), image, atol=2e-4)  # own statistics: identity
    shifted = (image * 0.5 + 0.2).mul(255).round().div(255)
    back = adain_color_fix(shifted, stats)
    assert (back - image).abs().max() < 3 / 255


def test_forward_training_path(codec: StableCodec) -> None:
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        out = codec(x)
    assert out.x_hat.shape == x.shape
    assert set(out.likelihoods) == {"y", "z"} and out.likelihoods["y"].shape == (1, 32, 4, 4)
    assert out.aux["l_T"].shape == (1, 32, 32, 32) and out.aux["res"].shape == (1, 4, 32, 32)
    with pytest.raises(ValueError, match="multiples of 256"):
        codec(torch.rand(1, 3, 200, 256))


def test_malformed_files_raise_decode_error(codec: StableCodec, coded: dict) -> None:
    stream = coded["stream"]
    one_stream = Bitstream(
        model_tag=stream.model_tag, rung=0, height=512, width=768, streams=[stream.streams[1]]
    )
    with pytest.raises(DecodeError, match="2 streams"):
        codec.decompress(one_stream.to_bytes())
    truncated = Bitstream(
        model_tag=stream.model_tag, rung=0, height=512, width=768,
        streams=[stream.streams[0], stream.streams[1][: len(stream.streams[1]) // 4]],
    )  # fmt: skip
    with pytest.raises(DecodeError):
        codec.decompress(truncated.to_bytes())
    bad_stats = Bitstream(
        model_tag=stream.model_tag, rung=0, height=512, width=768, streams=stream.streams,
        side={SideField.COLOR_STATS: np.zeros(3, dtype=np.uint16)},
    )  # fmt: skip
    with pytest.raises(DecodeError, match="colour"):
        codec.decompress(bad_stats.to_bytes())
    with pytest.raises(DecodeError, match="another model"):
        small_codec(name="stablecodec-other").decompress(coded["data"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lambdas": ()}, "lambdas"),
        ({"lambdas": (2.0, 8.0), "rates": (0.03, 0.01)}, "ascending"),
        ({"elic": {"N": 16, "M": 48}}, "aux_channels"),
    ],
)
def test_bad_configuration_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_codec(**kwargs)
