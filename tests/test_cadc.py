"""CADC on small configs of the real classes: UGAQ (m ≥ 1, never needed by the decoder), ADGIC (g_aux sees
channels 1..4 only), the deterministic BLIP captioner, real coding of a Kodak image, the ablation switches,
the stage-1/2 loss terms and the small CPU recipe through ``diffcodec fit``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from recipe_utils import set_model_args, write_test_recipe

from diffcodec.bitstream import Bitstream, DecodeError
from diffcodec.codecs.cadc import (
    CADC,
    SMALL_CADC_CODEC,
    AuxiliaryImageDecoder,
    CADCLatentCodec,
    PixelAnalysisTransform,
    UncertaintyNetwork,
)
from diffcodec.entropy.factorized import EntropyBottleneck
from diffcodec.imageio import to_tensor
from diffcodec.nn.captioner import SMALL_BLIP, BlipCaptioner

REPO = Path(__file__).resolve().parents[1]
CHEAP_LOSSES = {"lpips_weight": 0.0, "clip_weight": 0.0, "adversarial_weight": 0.0}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_codec(**kwargs) -> CADC:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    options = {"latent_codec": SMALL_CADC_CODEC, "lambdas": (8.0, 2.0), "rates": (0.01, 0.03)}
    return CADC(**{**options, **kwargs}).eval()


@pytest.fixture(scope="module")
def codec() -> CADC:
    return small_codec()


@pytest.fixture(scope="module")
def kodak_image(kodak_dir: Path) -> torch.Tensor:
    return to_tensor(kodak_dir / "kodim23.png")[..., :256, :512]  # a 256 × 512 crop of a 768 × 512 image


# ---------------------------------------------------------------------------------------------- UGAQ
def test_ugaq_m_is_at_least_one_even_for_extreme_weights() -> None:
    torch.manual_seed(0)
    f_u = UncertaintyNetwork(8, 8)
    residual = torch.randn(2, 8, 6, 5)
    m = f_u(residual)
    assert m.shape == residual.shape and (m >= 1).all() and (m - 1).max() < 0.1  # starts ≈ 1
    residual = residual * 10
    with torch.no_grad():
        f_u.net[-1].bias.fill_(-200.0)  # softplus underflows to 0
        assert (f_u(residual) >= 1).all()
        f_u.net[-1].bias.fill_(5.0)
        assert f_u(residual).mean() > 4  # the bias moves m up: m is learnable above 1
    assert UncertaintyNetwork(8, 8, per_element=False)(residual).shape == (2, 1, 6, 5)


def test_ugaq_scales_y_and_the_decoder_never_runs_f_u() -> None:
    torch.manual_seed(0)
    latent_codec = CADCLatentCodec(**SMALL_CADC_CODEC).eval()
    with torch.no_grad():
        latent_codec.f_u.net[-1].bias.fill_(1.0)  # m ≈ 2.3: UGAQ clearly active
        latent_codec.update(force=True)
        x = torch.rand(1, 3, 256, 512) * 2 - 1
        out = latent_codec(x)
        assert out["m"].min() >= 1 and torch.allclose(out["y_bar"], out["y"] / out["m"])
        # bilinear ×4 upsampling of ẑ to the y grid
        z_bar = torch.nn.functional.interpolate(
            out["z_hat"], scale_factor=4, mode="bilinear", align_corners=False
        )
        assert torch.allclose(out["m"], latent_codec.f_u(out["y"] - z_bar))
        encoded = latent_codec.compress(x)

        def refuse(*args):
            raise AssertionError("the decoder ran f_u")

        latent_codec.f_u.register_forward_pre_hook(refuse)
        decoded = latent_codec.decompress(encoded["strings"], encoded["shape"])
    assert torch.equal(decoded["y_hat"], encoded["y_hat"])
    # ŷ is coded at the scale of ȳ and g_s consumes it as it is (no multiplication by m)
    assert torch.equal(decoded["l_T"], latent_codec.g_s(decoded["y_hat"]))
    assert (decoded["y_hat"] - out["y_bar"]).abs().max() <= 0.5 + 1e-4


# ---------------------------------------------------------------------------------------------- ADGIC
def test_auxiliary_decoder_sees_exactly_the_first_four_channels() -> None:
    torch.manual_seed(0)
    latent_codec = CADCLatentCodec(**SMALL_CADC_CODEC)
    l_t = torch.randn(1, 32, 8, 12, requires_grad=True)
    x_aux = latent_codec.auxiliary_image(l_t)
    assert x_aux.shape == (1, 3, 64, 96)
    x_aux.square().sum().backward()
    grad = l_t.grad.abs().flatten(2).sum(-1)[0]
    assert (grad[:4] > 0).all() and (grad[4:] == 0).all()
    with pytest.raises(ValueError, match="4, h, w"):
        AuxiliaryImageDecoder(4, (8, 8, 8))(torch.randn(1, 5, 4, 4))


# ---------------------------------------------------------------------------------------------- captioner
def test_small_blip_captions_deterministically() -> None:
    captioner = BlipCaptioner.from_config(SMALL_BLIP)
    assert captioner.generation_kwargs() == {
        "do_sample": False,
        "num_beams": 1,
        "max_length": 20,
        "min_length": 0,
    }
    torch.manual_seed(1)
    images = torch.rand(2, 3, 40, 56) * 2 - 1
    captions = captioner(images)
    assert len(captions) == 2 and all(isinstance(c, str) and c == c.strip() for c in captions)
    assert captioner(images) == captions  # same input → same caption
    assert captioner(images[1:]) == captions[1:]  # independent of the batch
    assert BlipCaptioner.from_config(SMALL_BLIP)(images) == captions  # reproducible construction
    captioner.train()
    assert not captioner.model.training and captioner(images) == captions  # frozen, no dropout
    with pytest.raises(ValueError, match="B, 3, H, W"):
        captioner(images[0])
    with pytest.raises(ValueError, match="NaN"):
        captioner(torch.full((1, 3, 8, 8), float("nan")))


# ---------------------------------------------------------------------------------------------- the codec
def test_kodak_round_trip_through_a_file(codec: CADC, kodak_image: torch.Tensor) -> None:
    stream = codec.compress(kodak_image, quality=0)
    data = stream.to_bytes()
    x_hat = codec.decompress(data, output="tensor")
    assert x_hat.shape == kodak_image.shape and 0 <= x_hat.min() <= x_hat.max() <= 1
    parsed = Bitstream.from_bytes(data)
    assert (parsed.height, parsed.width, len(parsed.streams), parsed.side) == (
        256,
        512,
        2,
        {},
    )  # no caption bits
    with torch.no_grad():
        encoded = codec.latent_codec.compress(kodak_image * 2 - 1)
        z_string, y_string = parsed.streams
        assert [[y_string], [z_string]] == encoded["strings"]
        decoded = codec.latent_codec.decompress([[y_string], [z_string]], (1, 2))
        assert torch.equal(decoded["y_hat"], encoded["y_hat"])
        caption = codec.caption(decoded["x_aux"])
        reference = codec.synthesize(decoded["l_T"], None, caption)[0]
    assert torch.equal(codec.decompress(data, output="tensor"), x_hat)  # same caption at every decode
    assert torch.allclose(x_hat, reference.clamp(0, 1), atol=1e-6)
    with pytest.raises(DecodeError, match="2 streams"):
        codec.decompress(
            Bitstream(model_tag=parsed.model_tag, rung=0, height=256, width=512, streams=[z_string])
        )


def test_caption_reaches_the_unet_and_captioning_can_be_switched_off(codec: CADC) -> None:
    l_t = torch.randn(1, 32, 8, 8)
    with torch.no_grad():
        fixed = codec.synthesize(l_t)[0]
        captioned = codec.synthesize(l_t, captions=["a red boat on a lake"])[0]
    assert not torch.equal(fixed, captioned)
    plain = small_codec(captioning=False)
    assert plain.captioner is None and plain.caption(torch.zeros(1, 3, 8, 8)) is None


@pytest.mark.parametrize(
    ("switches", "f_u", "g_aux", "captioner"),
    [
        ({"ugaq": False, "adgic": False, "captioning": False}, False, False, False),  # M0
        ({"adgic": False, "captioning": False}, True, False, False),  # M1
        ({"captioning": False}, True, True, False),  # M2
        ({}, True, True, True),  # M3 = CADC
    ],
)
def test_ablation_switches(switches: dict, f_u: bool, g_aux: bool, captioner: bool) -> None:
    model = small_codec(lambdas=(1.0,), rates=(0.01,), **switches)
    assert (model.latent_codec.f_u is not None, model.latent_codec.g_aux is not None) == (f_u, g_aux)
    assert (model.captioner is not None) == captioner
    with torch.no_grad():
        out = model(torch.rand(1, 3, 256, 256))
    assert out.x_hat.shape == (1, 3, 256, 256) and (out.aux["m"] is not None) == f_u


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"adgic": False}, "needs adgic"),
        ({"latent_codec": {**SMALL_CADC_CODEC, "hyper_channels": 16}}, "UGAQ needs z"),
        ({"lambdas": ()}, "lambdas"),
    ],
)
def test_bad_configuration_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        small_codec(**kwargs)


def test_full_size_parameter_counts_of_the_spec() -> None:
    with torch.device("meta"):
        latent_codec = CADCLatentCodec()
        g_a = PixelAnalysisTransform()

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(g_a.stem) == 1_110_760
    assert (count(latent_codec.h_a), count(latent_codec.h_s)) == (2_878_800, 1_856_720)
    assert count(EntropyBottleneck(320)) == 19_520
    assert (count(latent_codec.f_u), count(latent_codec.g_aux)) == (1_183_560, 693_744)
    assert latent_codec.context_model.lrp is None


# ---------------------------------------------------------------------------------------------- training
def test_stage_terms(kodak_image: torch.Tensor) -> None:
    x = kodak_image[..., :256, :256]
    from diffcodec.codecs.cadc.training import CADCTraining

    stage1 = CADCTraining(small_codec(lambdas=(1.0,), rates=(0.01,)), stage=1, **CHEAP_LOSSES).train()
    terms = stage1.generator_terms(x)
    assert set(terms) == {"bpp", "mse", "loss", "x_hat"}  # no L_aux, no L_adv in stage 1
    with pytest.raises(ValueError, match="stage"):
        CADCTraining(stage1.codec, stage=3)
    stage2 = CADCTraining(small_codec(lambdas=(4.0,), rates=(0.01,)), stage=2, **CHEAP_LOSSES).train()
    terms = stage2.generator_terms(x)
    assert set(terms) == {"bpp", "mse", "aux", "loss", "x_hat"}
    expected = 4.0 * terms["bpp"] + 2.0 * terms["mse"] + 1.0 * terms["aux"]
    assert torch.allclose(terms["loss"], expected)
    terms["loss"].backward()
    assert stage2.codec.latent_codec.g_aux.decoder[0].weight.grad.abs().sum() > 0
    assert stage2.codec.latent_codec.f_u.net[0].weight.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in stage2.codec.captioner.parameters())


def test_small_cpu_recipe_stage1_then_stage2(tmp_path: Path, photos_dir: Path) -> None:
    from diffcodec.training.cli import run_argv
    from diffcodec.training.init import read_lightning_checkpoint

    folder = tmp_path / "images"
    folder.mkdir()
    with Image.open(sorted(photos_dir.glob("*.png"))[0]) as image:
        image.convert("RGB").resize((256, 256)).save(folder / "0.png")

    def recipe(name: str, stage: int) -> Path:
        config = yaml.safe_load((REPO / "recipes/cadc/small_cpu.yaml").read_text())
        set_model_args(config, CADC, stage=stage, lpips_weight=0.0, clip_weight=0.0)
        config["data"]["init_args"].update(
            train_dir=str(folder), val_dir=str(folder), num_workers=0, val_max_images=1
        )
        return write_test_recipe(config, tmp_path, name, max_steps=2, val_check_interval=1)

    assert run_argv("fit", ["-c", str(recipe("stage1", 1))]) == 0
    assert read_lightning_checkpoint(tmp_path / "stage1/ckpt/last.ckpt")["global_step"] == 2
    init = [
        "--init_from.checkpoint",
        str(tmp_path / "stage1/ckpt/last.ckpt"),
        "--init_from.new_modules",
        "[discriminator]",
    ]
    assert run_argv("fit", ["-c", str(recipe("stage2", 2)), *init]) == 0
    metrics = next((tmp_path / "stage2").rglob("metrics.csv")).read_text()
    assert "train/aux" in metrics and "train/adversarial" in metrics and "train/d_fake" in metrics
