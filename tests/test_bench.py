"""``diffcodec bench`` and the stage-timing hook, on the CPU at tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import diffcodec
from diffcodec.cli import main
from diffcodec.eval.bench import parse_size, random_codec, scaling_exponent
from diffcodec.timing import StageTimer, stage, timed


# ---------------------------------------------------------------------------------------------- timing
def test_stages_are_exclusive_and_add_up_to_the_wall_time() -> None:
    timer = StageTimer("cpu")
    start = time.perf_counter()
    with timer, stage("outer"):
        time.sleep(0.05)
        with stage("inner"):
            time.sleep(0.1)
        with stage("inner"):
            time.sleep(0.02)
    wall = time.perf_counter() - start
    assert timer.calls == {"inner": 2, "outer": 1}
    assert 0.12 <= timer.seconds["inner"] < 0.2
    assert 0.05 <= timer.seconds["outer"] < 0.1  # the inner 0.12 s are not charged to outer
    assert sum(timer.seconds.values()) == pytest.approx(wall, abs=0.01)


def test_timed_functions_report_only_to_an_active_timer() -> None:
    calls = []

    @timed("work")
    def work(value: int) -> int:
        calls.append(value)
        return value + 1

    assert work(1) == 2  # no timer: plain call
    timer = StageTimer()
    with timer:
        assert work(2) == 3
    assert work(3) == 4  # inactive again
    assert calls == [1, 2, 3] and timer.calls == {"work": 1}
    with pytest.raises(RuntimeError, match="already active"), timer, timer:
        pass


def test_parse_size_and_scaling_exponent() -> None:
    assert parse_size("512x768") == (512, 768) and parse_size("1024") == (1024, 1024)
    for bad in ("12x12", "axb", "1x2x3"):
        with pytest.raises(Exception, match="HxW"):
            parse_size(bad)
    records = [{"height": s, "width": s, "decode_s": 0.5 * (s * s) ** 1.5} for s in (64, 128, 256)]
    assert scaling_exponent(records) == pytest.approx(1.5)
    assert scaling_exponent(records[:1]) is None


# ---------------------------------------------------------------------------------------------- the command
def test_bench_bundled_and_random_small_in_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "-m", "oscar-small", "cadc-small", "--sizes", "96x64", "64x64", "--repeat", "2",
            "--warmup", "0", "--isolate", "none", "--threads", "1", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "oscar-small" in table and "cadc-small" in table and "time ∝ pixels^k" in table
    result = json.loads(out.read_text())
    records = result["records"]
    assert [(r["name"], r["size"]) for r in records] == [
        ("oscar-small", "64x64"), ("oscar-small", "96x64"), ("cadc-small", "64x64"), ("cadc-small", "96x64"),
    ]  # fmt: skip
    for r in records:
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / (r["height"] * r["width"]))
        assert r["device"] == "cpu" and r["threads"] == 1 and r["torch"] == torch.__version__
        assert r["peak_memory_kind"] == "cpu_max_rss" and r["peak_memory_bytes"] > 50 * 2**20
        assert r["synthesis_dtype"]["unet"] == "float32" and r["random_weights"] is False
        encoder_stages = {"latent_codec", "vae_enc"} - ({"vae_enc"} if r["method"] == "cadc" else set())
        assert encoder_stages <= set(r["encode_stages_s"])
        assert {"unet", "vae_dec", "latent_codec"} <= set(r["decode_stages_s"])
        # the exclusive stage times account for the whole call (timer overhead aside)
        assert sum(r["decode_stages_s"].values()) == pytest.approx(r["decode_s"], rel=0.25, abs=0.02)
    cadc = [r for r in records if r["name"] == "cadc-small"]
    assert all({"captioner", "entropy", "text_encoder"} <= set(r["decode_stages_s"]) for r in cadc)
    assert set(result["scaling_exponent"]) == {"oscar-small", "cadc-small"}
    # the bytes are those of the real file the codec writes for that image
    codec = diffcodec.load("oscar-small")
    from diffcodec.eval.bench import resized_image

    assert len(codec.compress(resized_image(None, 64, 64)).to_bytes()) == records[0]["bytes"]


def test_bench_random_weights_of_a_bundled_architecture_in_a_subprocess(tmp_path: Path) -> None:
    """Fresh process (the CLI a user runs), default isolation: one child per size, random weights."""
    out = tmp_path / "random.json"
    argv = [sys.executable, "-m", "diffcodec.cli", "bench", "--random-weights", "-m", "onedc-small",
            "--sizes", "128x128", "--repeat", "1", "--warmup", "0", "--json", str(out)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(out.read_text())["records"]
    assert record["random_weights"] is True and record["method"] == "onedc"
    assert record["peak_memory_bytes"] > 0 and record["bytes"] > 0


def test_bench_rejects_bad_arguments(capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "-m", "oscar-small", "--sizes", "8x8"]) == 2
    assert main(["bench", "-m", "oscar-small", "--repeat", "0"]) == 2
    assert main(["bench", "-m", "oscar-small", "--dtype", "int8"]) == 2
    assert main(["bench", "--random-weights", "-m", "no-such-model", "--isolate", "none"]) == 1
    assert "neither a method" in capsys.readouterr().err


@pytest.mark.heavy
def test_random_weights_build_the_full_size_architectures() -> None:
    """On the meta device (no memory, no init): the papers' base models, full latent codecs, BLIP-base."""
    with torch.device("meta"):
        codecs = {method: random_codec(method) for method in ("oscar", "stablecodec", "cadc", "onedc")}
    for method, codec in codecs.items():
        assert codec.method == method
        assert list(codec.backbone.unet.config.block_out_channels) == [320, 640, 1280, 1280]
        assert list(codec.backbone.vae.config.block_out_channels) == [128, 256, 512, 512]
    assert codecs["oscar"].backbone.unet.config.cross_attention_dim == 1024
    assert codecs["oscar"].backbone.prediction_type == "v_prediction"
    assert codecs["onedc"].backbone.unet.config.cross_attention_dim == 768
    text = codecs["cadc"].backbone.conditioning.text_encoder.config
    assert (text.hidden_size, text.num_hidden_layers) == (1024, 23)
    vision = codecs["cadc"].captioner.model.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size) == (768, 12, 384)
    count = sum(p.numel() for p in codecs["stablecodec"].latent_codec.parameters())
    assert count > 10_000_000  # the full latent codec, not the small one
