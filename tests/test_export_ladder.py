"""``diffcodec export CKPT CKPT CKPT OUT``: one-λ training runs become the rungs of one ladder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import diffcodec
from diffcodec.cli import main as cli_main
from diffcodec.codecs.stablecodec import SMALL_ELIC, SMALL_LATENT_CODEC, StableCodec
from diffcodec.codecs.stablecodec.training import StableCodecTraining
from diffcodec.training.checkpoint import CODEC_KEY, codec_record, strip_base_weights
from diffcodec.training.export import codec_from_ladder
from diffcodec.zoo.hub import CheckpointError


def one_lambda_run(path: Path, lam: float, offset: float, stage: int = 1) -> StableCodec:
    """A Lightning checkpoint as `diffcodec fit` writes it, of a one-λ StableCodec whose own weights are
    shifted by ``offset`` (the shared ones, built from seed 0, are the same in every run)."""
    torch.manual_seed(0)
    codec = StableCodec(lambdas=[lam], latent_codec=SMALL_LATENT_CODEC, elic=SMALL_ELIC)
    module = StableCodecTraining(codec, stage=stage, clip_model=None, discriminator_model=None)
    with torch.no_grad():
        for parameter in codec.latent_codec.parameters():
            parameter.add_(offset)
    state = strip_base_weights(module, module.state_dict())
    torch.save({"state_dict": state, CODEC_KEY: codec_record(module)}, path)
    return codec.eval()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[StableCodec]]:
    root = tmp_path_factory.mktemp("runs")
    paths = [root / f"r{k}.ckpt" for k in range(3)]
    singles = [one_lambda_run(p, lam, 0.01 * k) for k, (p, lam) in enumerate(zip(paths, [2.0, 0.5, 0.125]))]
    return paths, singles


def test_each_rung_codes_like_its_own_run(runs: tuple[list[Path], list[StableCodec]], tmp_path: Path) -> None:
    paths, singles = runs
    out = tmp_path / "ladder"
    assert cli_main(["export", *map(str, paths), str(out), "--rates", "0.01", "0.02", "0.04"]) == 0
    ladder = diffcodec.load(str(out))
    assert ladder.lambdas == (2.0, 0.5, 0.125) and ladder.rates == (0.01, 0.02, 0.04)
    assert type(ladder) is StableCodec and not hasattr(ladder, "discriminator")  # a plain codec
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    for rung, single in enumerate(singles):
        # the same payload; the files differ in the rung field (and so in the check, docs/bitstream.md)
        ours, theirs = ladder.compress(x, quality=rung), single.compress(x)
        assert ours.streams == theirs.streams and ours.side == theirs.side and ours.rung == rung
    streams = {ladder.compress(x, quality=rung).to_bytes() for rung in range(3)}
    assert len(streams) == 3  # the rungs really hold different weights


def test_runs_that_disagree_on_shared_weights_are_refused(
    runs: tuple[list[Path], list[StableCodec]], tmp_path: Path
) -> None:
    paths, _ = runs
    odd = tmp_path / "odd.ckpt"
    checkpoint = torch.load(paths[1], weights_only=False)
    key = next(k for k in checkpoint["state_dict"] if k.startswith("codec.backbone.conditioning."))
    checkpoint["state_dict"][key] = checkpoint["state_dict"][key] + 1
    torch.save(checkpoint, odd)
    with pytest.raises(CheckpointError, match="share"):
        codec_from_ladder([paths[0], odd, paths[2]])


def test_runs_of_other_settings_are_refused(
    runs: tuple[list[Path], list[StableCodec]], tmp_path: Path
) -> None:
    paths, _ = runs
    other = tmp_path / "other.ckpt"
    torch.manual_seed(0)
    codec = StableCodec(lambdas=[1.0], latent_codec=SMALL_LATENT_CODEC, elic=SMALL_ELIC, timestep=500)
    torch.save({"state_dict": codec.state_dict(), CODEC_KEY: codec_record(codec)}, other)
    with pytest.raises(CheckpointError, match="timestep"):
        codec_from_ladder([paths[0], other])


def test_float16_export_halves_the_weights_and_still_codes(
    runs: tuple[list[Path], list[StableCodec]], tmp_path: Path
) -> None:
    import json

    from safetensors import safe_open

    paths, _ = runs
    full, half = tmp_path / "fp32", tmp_path / "fp16"
    assert cli_main(["export", *map(str, paths), str(full)]) == 0
    assert cli_main(["export", *map(str, paths), str(half), "--dtype", "float16"]) == 0
    assert json.loads((half / "config.json").read_text())["weights_dtype"] == "float16"
    with safe_open(str(half / "model.safetensors"), "pt") as stored:
        names = stored.keys()
        dtypes = {stored.get_slice(k).get_dtype() for k in names}
        rung_keys = [k for k in names if k.startswith("rungs.1.")]
        assert rung_keys and stored.get_slice(rung_keys[0]).get_dtype() == "F16"  # the rung bank too
    assert "F16" in dtypes
    assert (half / "model.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    codec = diffcodec.load(str(half), quality=2)
    assert next(codec.parameters()).dtype == torch.float32  # loaded back into the codec's own dtype
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    stream = codec.compress(x)
    assert stream.to_bytes() == codec.compress(x).to_bytes()
    reference = diffcodec.load(str(full), quality=2)
    x_ref = reference.decompress(reference.compress(x), output="tensor")
    assert (codec.decompress(stream, output="tensor") - x_ref).abs().mean() < 0.01  # fp16 rounding only


def test_float16_export_refuses_push_to_hub(
    runs: tuple[list[Path], list[StableCodec]], tmp_path: Path
) -> None:
    from diffcodec.training.export import export_checkpoint

    with pytest.raises(ValueError, match="huggingface-cli upload"):
        export_checkpoint(runs[0], tmp_path / "x", push_to_hub="org/name", weights_dtype=torch.float16)
