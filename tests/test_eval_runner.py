"""The evaluation runner end to end: a small real codec and JPEG on two Kodak images, resume, the CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from diffcodec.bitstream import Bitstream, DecodeError
from diffcodec.codecs.base import Codec, CodecOutput, EncodedImage
from diffcodec.eval import cli
from diffcodec.eval.anchors import PillowAnchor, anchor_available
from diffcodec.eval.curves import load_curves
from diffcodec.eval.runner import EvalConfig, Evaluator, ModelRun, evaluate, parse_model_spec

FAST_METRICS = ("psnr", "lpips", "fid", "kid")  # MS-SSIM and DISTS have their own tests


class BoxCodec(Codec):
    """A tiny real codec: per-rung strided-conv encoder (a box filter), 8-bit rounded latents stored raw
    in the bitstream, transposed-conv decoder. Rung 0 downsamples by 16, rung 1 by 8."""

    method = "box-test"
    pad_multiple = 16
    factors = (16, 8)

    def __init__(self) -> None:
        super().__init__()
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for f in self.factors:
            encoder = nn.Conv2d(3, 3, f, stride=f, bias=False)
            decoder = nn.ConvTranspose2d(3, 3, f, stride=f, bias=False)
            with torch.no_grad():
                encoder.weight.zero_()
                decoder.weight.zero_()
                for c in range(3):
                    encoder.weight[c, c] = 1.0 / f**2
                    decoder.weight[c, c] = 1.0
            self.encoders.append(encoder)
            self.decoders.append(decoder)

    @property
    def rates(self) -> tuple[float, ...]:
        return tuple(24 / f**2 for f in self.factors)

    @property
    def model_id(self) -> str:
        return "box-test"

    def forward(self, x: torch.Tensor) -> CodecOutput:
        return CodecOutput(x_hat=self.decoders[self._rung](self.encoders[self._rung](x)))

    def _compress(self, x: torch.Tensor, rung: int) -> EncodedImage:
        latent = (self.encoders[rung](x) * 255).round().clamp(0, 255).to(torch.uint8)
        return EncodedImage(streams=[latent.cpu().numpy().tobytes()])

    def _decompress(self, encoded: EncodedImage, padded_size: tuple[int, int], rung: int) -> torch.Tensor:
        f = self.factors[rung]
        h, w = padded_size[0] // f, padded_size[1] // f
        data = encoded.streams[0]
        if len(data) != 3 * h * w:
            raise DecodeError(f"expected {3 * h * w} latent bytes, got {len(data)}")
        latent = torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy()).reshape(1, 3, h, w)
        return self.decoders[rung](latent.float().to(self.device) / 255)


class Interrupting:
    """Wraps a codec and raises KeyboardInterrupt on the n-th compress call (an interrupted run)."""

    def __init__(self, codec, after: int) -> None:
        self.codec, self.after, self.calls = codec, after, 0

    def __getattr__(self, name):
        return getattr(self.codec, name)

    def compress(self, image, quality=None):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return self.codec.compress(image, quality=quality)


@pytest.fixture(scope="module")
def two_kodak(kodak_dir: Path, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("kodak2")
    for name in ("kodim01.png", "kodim04.png"):  # one landscape, one portrait
        (folder / name).write_bytes((kodak_dir / name).read_bytes())
    return folder


def test_box_codec_is_a_real_codec(kodak_dir: Path) -> None:
    codec = BoxCodec()
    stream, x_hat = codec.roundtrip(kodak_dir / "kodim01.png", quality=1)
    assert isinstance(stream, Bitstream) and x_hat.shape == (1, 3, 512, 768)
    assert stream.num_bytes == stream.header_bytes + 3 * (512 // 8) * (768 // 8)


def test_runner_end_to_end_and_resume(two_kodak: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    box, jpeg = BoxCodec(), PillowAnchor("jpeg", qualities=(5, 40))
    messages: list[str] = []
    config = EvalConfig(metrics=FAST_METRICS, progress=False, log=messages.append)

    # first run: interrupted on the box codec's third file (2 rungs x 2 images = 4 box jobs); images are
    # evaluated one after the other (every rung of every model on image 1, then image 2)
    interrupted = Interrupting(box, after=2)
    with pytest.raises(KeyboardInterrupt):
        evaluate([ModelRun("box", interrupted), ModelRun("jpeg", jpeg)], two_kodak, out, config=config)
    lines = (out / "per_image.jsonl").read_text().splitlines()
    assert len(lines) == 4 and {json.loads(line)["image"] for line in lines} == {"kodim01.png"}
    with open(out / "per_image.jsonl", "a") as handle:  # a record cut short by the interruption
        handle.write('{"model": "box", "rung": 1, "ima')

    counting = Interrupting(box, after=10**6)
    results = evaluate([ModelRun("box", counting), ModelRun("jpeg", jpeg)], two_kodak, out, config=config)
    assert counting.calls == 2  # only the two box evaluations that had not finished
    assert any("resuming: 4 of 8" in m for m in messages)
    assert any("FID/KID skipped" in m and "16 patches" in m for m in messages)  # 2 Kodak images: too few

    # every file on disk, bpp measured from it
    assert len(results.per_image) == 8 and len(results.per_rung) == 4
    for record in results.per_image:
        path = out / record["file"]
        assert path.is_file() and record["bytes"] == path.stat().st_size
        assert record["bpp"] == pytest.approx(8 * path.stat().st_size / (record["height"] * record["width"]))
        assert record["encode_s"] > 0 and record["decode_s"] > 0 and record["overhead_s"] > 0
        assert record["encode_peak_mib"] > 0 and record["memory_kind"]
        assert 0 < record["lpips"] < 1 and 10 < record["psnr"] < 50
        recon = Image.open(out / Path(record["file"]).parent / "recon" / f"{Path(record['image']).stem}.png")
        assert recon.size == (record["width"], record["height"])
    jpg = next(r for r in results.per_image if r["model"] == "jpeg" and r["rung"] == 1)
    assert (out / jpg["file"]).suffix == ".jpg" and (out / jpg["file"]).read_bytes()[:2] == b"\xff\xd8"
    box_file = next(r for r in results.per_image if r["model"] == "box")["file"]
    assert (
        Bitstream.from_file(out / box_file).model_tag
        == Bitstream.from_bytes(box.compress(torch.zeros(1, 3, 16, 16)).to_bytes()).model_tag
    )

    # per-rung means, ordered by rate; FID/KID present but skipped
    rows = {(r["model"], r["rung"]): r for r in results.per_rung}
    box_hi = [r for r in results.per_image if r["model"] == "box" and r["rung"] == 1]
    assert rows[("box", 1)]["psnr"] == pytest.approx(sum(r["psnr"] for r in box_hi) / 2)
    assert (
        rows[("box", 1)]["bpp"] > rows[("box", 0)]["bpp"]
        and rows[("box", 1)]["psnr"] > rows[("box", 0)]["psnr"]
    )
    assert math.isnan(rows[("jpeg", 0)]["fid"]) and "skipped" in rows[("jpeg", 0)]["set_metrics_note"]
    saved = json.loads((out / "per_rung.json").read_text())
    assert len(saved["rungs"]) == 4 and saved["rungs"][0]["fid"] is None  # NaN written as null
    with open(out / "per_image.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 8
    curves = {c.label: c for c in load_curves(out)}
    assert set(curves) == {"box", "jpeg"} and curves["jpeg"].points("lpips")[0].size == 2

    # a third run has nothing left to do
    again = Interrupting(box, after=0)
    evaluate([ModelRun("box", again), ModelRun("jpeg", jpeg)], two_kodak, out, config=config)
    assert again.calls == 0

    # same label, other settings: only the rung whose quality changed is redone
    changed = Interrupting(PillowAnchor("jpeg", qualities=(5, 60)), after=10**6)
    results = evaluate([ModelRun("jpeg", changed)], two_kodak, out, config=config)
    assert changed.calls == 2
    jpeg_rows = sorted((r for r in results.per_rung if r["model"] == "jpeg"), key=lambda r: r["rung"])
    assert [r["rung_label"] for r in jpeg_rows] == ["jpeg q=5", "jpeg q=60"]


def test_runner_fid_kid_on_patches(kodak_dir: Path, tmp_path: Path) -> None:
    """FID/KID through the runner on a set large enough for the (lowered) threshold."""
    data = tmp_path / "crops"
    data.mkdir()
    for name in ("kodim05.png", "kodim07.png", "kodim23.png"):
        Image.open(kodak_dir / name).crop((200, 100, 296, 196)).save(data / name)  # 96x96 crops
    out = tmp_path / "run"

    class PixelStats(nn.Module):
        """Stand-in for Inception (tested on its own): 27 colour statistics per patch."""

        num_features = 27

        def forward(self, patches: torch.Tensor) -> torch.Tensor:
            x = patches.float() / 255
            pooled = nn.functional.adaptive_avg_pool2d(x, 3).flatten(1)
            return pooled

    config = EvalConfig(
        metrics=("psnr", "fid", "kid"),
        patch_size=32,
        min_fid_samples=8,
        progress=False,
        feature_network=PixelStats(),
        log=lambda m: None,
    )
    results = evaluate([("jpeg", PillowAnchor("jpeg", qualities=(3, 60)))], data, out, config=config)
    low, high = sorted(results.per_rung, key=lambda r: r["bpp"])
    assert low["patches"] == high["patches"] == 3 * (9 + 4)  # 96x96 / 32: 9 aligned + 4 shifted
    assert low["fid"] > high["fid"] >= 0 and math.isfinite(low["kid"])
    assert (out / "features" / "PixelStats" / "kodim05.safetensors").is_file()


def test_model_specs_and_errors(two_kodak: Path, tmp_path: Path) -> None:
    assert parse_model_spec("jpeg") == ("jpeg", None)
    assert parse_model_spec("stablecodec:0,2") == ("stablecodec", (0, 2))
    assert parse_model_spec("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    assert parse_model_spec("hf-hub:org/repo:3") == ("hf-hub:org/repo", (3,))
    with pytest.raises(ValueError, match=r"rungs 0\.\.1"):
        ModelRun("box", BoxCodec(), (0, 5))
    with pytest.raises(ValueError, match="folder"):
        ModelRun("a/b", BoxCodec())
    with pytest.raises(ValueError, match="unknown metric"):
        EvalConfig(metrics=("psnr", "vmaf"))
    with pytest.raises(FileNotFoundError):
        Evaluator(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match=r"0\.\.100"):
        PillowAnchor("jpeg", qualities=(5, 101))

    class Shrinking(BoxCodec):
        def decompress(self, stream, output="tensor"):
            return super().decompress(stream, output)[..., :-16, :]

    with pytest.raises(ValueError, match="original size"):
        evaluate(
            [("shrink", Shrinking())],
            two_kodak,
            tmp_path / "bad",
            config=EvalConfig(metrics=("psnr",), progress=False, log=lambda m: None),
        )


@pytest.mark.parametrize("name", ["jpeg", "webp", "avif"])
def test_anchor_roundtrip(name: str, kodak_dir: Path) -> None:
    if not anchor_available(name):
        pytest.skip(f"this Pillow build has no {name} encoder")
    anchor = PillowAnchor(name)
    small = Image.open(kodak_dir / "kodim23.png").crop((0, 0, 128, 96))
    files = [anchor.compress(small, quality=k) for k in (0, anchor.num_rungs - 1)]
    assert files[0].num_bytes < files[1].num_bytes
    decoded = anchor.decompress(files[1].to_bytes())
    assert decoded.shape == (1, 3, 96, 128)
    with pytest.raises(ValueError, match="not a decodable"):
        anchor.decompress(b"garbage")


def test_cli_with_anchors(kodak_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    code = cli.main(
        [
            "-m",
            "jpeg:5,50",
            "webp:5,50",
            "--data",
            str(kodak_dir),
            "--limit",
            "1",
            "--out",
            str(out),
            "--metrics",
            "psnr,lpips",
            "--no-progress",
            "--published",
            "onedc/C",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert (out / "rd.png").stat().st_size > 0 and (out / "rd.svg").read_text().startswith("<?xml")
    with open(out / "bd_rate.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["model"] for r in rows] == ["webp"] and rows[0]["anchor"] == "jpeg"
    assert float(rows[0]["psnr"]) < 0  # WebP needs fewer bits than JPEG for the same PSNR
    assert "BD-rate" in printed
    # re-plot only, no models
    assert cli.main(["--out", str(out), "--no-progress", "--metrics", "psnr,lpips"]) == 0
    assert cli.main(["-m", "jpeg", "--out", str(out)]) == 2  # --data missing
    assert "--data is required" in capsys.readouterr().err


def test_default_metrics_apply_to_the_data(two_kodak: Path, tmp_path: Path) -> None:
    """Without --metrics, FID/KID are left out for a small set (and MS-SSIM for small images)."""
    from diffcodec.eval.runner import default_metrics

    kodak = [(512, 768)] * 24
    assert default_metrics(kodak, 256, 2048) == ("psnr", "ms_ssim", "lpips", "dists")
    assert default_metrics([(512, 768)] * 256, 256, 2048) == (  # 8 patches per image: 2048
        "psnr",
        "ms_ssim",
        "lpips",
        "dists",
        "fid",
        "kid",
    )
    assert default_metrics([(128, 128)], 256, 2048) == ("psnr", "lpips", "dists")
    messages: list[str] = []
    evaluator = Evaluator(two_kodak, tmp_path / "run", EvalConfig(progress=False, log=messages.append))
    assert evaluator.config.metrics == ("psnr", "ms_ssim", "lpips", "dists")
    assert any("fid, kid do not apply to 2 images" in m for m in messages)
    assert (
        json.loads((tmp_path / "run" / "run.json").read_text())["protocol"]["metrics"]
        == "psnr,ms_ssim,lpips,dists"
    )
