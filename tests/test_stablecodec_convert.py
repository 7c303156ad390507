"""Converting official StableCodec checkpoints (diffcodec/codecs/stablecodec/convert.py).

No official weights exist on this machine, so the checkpoints are synthetic: (1) at full size, tensors of the
manifest's key layout and shapes (``specs/manifests/stablecodec_ckpt.json``, compressai ≤ 1.2.6 names) on
the meta device, loaded into a full-size codec with no missing or unexpected keys; (2) at small size, real
tensors written as ``stablecodec_ft{λ}.pkl`` files in the official layout, converted, saved and reloaded.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from diffcodec.codecs.stablecodec import (
    OFFICIAL_CODEC_KEY_PREFIXES,
    SMALL_ELIC,
    SMALL_LATENT_CODEC,
    StableCodec,
)
from diffcodec.codecs.stablecodec import convert as conv
from diffcodec.nn.backbone import reference_configs
from diffcodec.zoo.hub import CheckpointError

SMALL = {"latent_codec": SMALL_LATENT_CODEC, "elic": SMALL_ELIC, "base_model": None}


@pytest.fixture(scope="module")
def manifest(shared_dir: Path) -> dict:
    return json.loads((shared_dir / "specs/manifests/stablecodec_ckpt.json").read_text())


def test_full_size_official_layout_loads_exactly(manifest: dict, shared_dir: Path) -> None:
    entries = conv.OFFICIAL_ENTRIES
    with torch.device("meta"):
        codec = StableCodec(backbone=reference_configs("sd-turbo"))
        checkpoint = {e: {k: torch.empty(shape) for k, shape in manifest[e].items()} for e in entries}
        conv.load_official_rung(codec, checkpoint)  # raises on any missing / unexpected / mis-shaped key
    state = codec.rung_state_dict()
    assert len(state) == sum(len(manifest[e]) for e in entries)
    assert sum(v.numel() for k, v in state.items() if k.startswith("backbone.unet.")) == 33_356_224
    assert sum(v.numel() for k, v in state.items() if k.startswith("backbone.vae.")) == 1_477_168
    # the ELIC file's g_a keys are exactly our E_Aux
    elic = {"g_a." + k: list(v.shape) for k, v in codec.aux_encoder.state_dict().items()}
    used = json.loads((shared_dir / "specs/manifests/elic_ckpt.json").read_text())["g_a_subset_used"]
    assert elic == used


def test_missing_and_unexpected_keys_are_refused(manifest: dict) -> None:
    entries = conv.OFFICIAL_ENTRIES
    with torch.device("meta"):
        codec = StableCodec(backbone=reference_configs("sd-turbo"))
        checkpoint = {e: {k: torch.empty(shape) for k, shape in manifest[e].items()} for e in entries}
        del checkpoint["state_dict_codec"]["g_c.block.3.blocks.1.fc2.bias"]
        checkpoint["state_dict_unet"]["time_embedding.linear_1.lora_A.default.weight"] = torch.empty(32, 320)
        with pytest.raises(CheckpointError, match=r"1 missing .*g_c.block.3.*1 unexpected .*time_embedding"):
            conv.load_official_rung(codec, checkpoint)


# ---------------------------------------------------------------------------------------------- small, real
_LISTS = {"matrices": "_matrix", "biases": "_bias", "factors": "_factor"}


def to_official(codec: StableCodec) -> dict[str, dict[str, torch.Tensor]]:
    """The active rung in the official layout (the inverse of the converter's renaming)."""
    official: dict[str, dict[str, torch.Tensor]] = {e: {} for e in conv.OFFICIAL_ENTRIES}
    for key, value in codec.rung_state_dict().items():
        value = value.clone()
        if key.startswith("backbone.unet."):
            official["state_dict_unet"][key[len("backbone.unet.") :]] = value
        elif key.startswith("backbone.vae."):
            official["state_dict_vae"][key[len("backbone.vae.") :]] = value
        else:
            key = key[len("latent_codec.") :]
            for old, new in OFFICIAL_CODEC_KEY_PREFIXES.items():
                key = old + key[len(new) :] if key.startswith(new) else key
            if match := re.match(r"^entropy_bottleneck\.(matrices|biases|factors)\.(\d+)$", key):
                key = f"entropy_bottleneck.{_LISTS[match.group(1)]}{match.group(2)}"
            if key.endswith(("._offset", "._quantized_cdf", "._cdf_length", ".scale_table")):
                value = torch.zeros(0, dtype=value.dtype)  # saved during training: empty tables
            official["state_dict_codec"][key] = value
    return official


@pytest.fixture(scope="module")
def official_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("official")
    torch.manual_seed(1)
    source = StableCodec(lambdas=(8.0,), **SMALL).eval()
    files = []
    for lam in (2, 8):
        with torch.no_grad():
            for parameter in [*source.latent_codec.parameters(), *source.backbone.trainable_parameters()]:
                parameter.add_(0.01 * torch.randn_like(parameter))
        path = folder / f"stablecodec_ft{lam}.pkl"
        torch.save(to_official(source), path)
        files.append((lam, path, {k: v.clone() for k, v in source.rung_state_dict().items()}))
    elic = {"g_a." + k: v for k, v in source.aux_encoder.state_dict().items()}
    elic |= {
        "g_s.synthesis_transform.0.weight": torch.zeros(3),
        "entropy_bottleneck.quantiles": torch.zeros(3),
    }
    torch.save(elic, folder / "elic_official.pth")
    return {"folder": folder, "files": files, "elic": folder / "elic_official.pth", "source": source}


def test_converts_loads_saves_and_reloads(official_files: dict, tmp_path: Path) -> None:
    files = official_files["files"]
    codec = conv.convert_stablecodec([p for _, p, _ in files], official_files["elic"], tmp_path, **SMALL)
    assert codec.lambdas == (8.0, 2.0)  # ascending rate = descending λ
    assert codec.rates[0] < codec.rates[1]
    for rung, lam in enumerate(codec.lambdas):
        expected = next(state for value, _, state in files if value == lam)
        codec.set_rung(rung)
        for key, value in codec.rung_state_dict().items():
            if not key.endswith(("._offset", "._quantized_cdf", "._cdf_length", ".scale_table")):
                assert torch.equal(value, expected[key]), key
    assert torch.equal(
        codec.aux_encoder.analysis_transform[0].weight,
        official_files["source"].aux_encoder.analysis_transform[0].weight,
    )
    reloaded = StableCodec.from_pretrained(tmp_path)
    image = torch.rand(1, 3, 256, 256)
    for rung in (0, 1):
        data = codec.compress(image, quality=rung).to_bytes()
        assert reloaded.compress(image, quality=rung).to_bytes() == data


def test_converter_rejects_bad_files(official_files: dict, tmp_path: Path) -> None:
    (_, path, _), _ = official_files["files"]
    broken = tmp_path / "stablecodec_ft4.pkl"
    torch.save({"state_dict_codec": {}}, broken)
    with pytest.raises(CheckpointError, match="expected a dict with entries"):
        conv.convert_stablecodec([broken], official_files["elic"], **SMALL)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict_codec"]["LRP.0.block.0.branch2.weight"] = torch.zeros(1)
    torch.save(checkpoint, broken)
    with pytest.raises(CheckpointError, match="shape"):
        conv.convert_stablecodec([broken], official_files["elic"], **SMALL)
    torch.save({"h_a.0.weight": torch.zeros(1)}, tmp_path / "elic.pth")
    with pytest.raises(CheckpointError, match="g_a"):
        conv.convert_stablecodec([path], tmp_path / "elic.pth", **SMALL)
    with pytest.raises(ValueError, match="λ"):
        conv.convert_stablecodec([tmp_path / "weights.pkl"], official_files["elic"], **SMALL)


def test_file_names_rates_and_cli() -> None:
    assert conv.lambda_from_filename("x/stablecodec_ft12.pkl") == 12.0
    assert conv.lambda_from_filename("stablecodec_base.pkl") == 0.5
    assert conv.nominal_kodak_bpp(32) == pytest.approx(0.00579)
    assert conv.nominal_kodak_bpp(2) == pytest.approx(0.03413)
    rates = [conv.nominal_kodak_bpp(lam) for lam in (32, 24, 16, 12, 8, 6, 4, 3, 2)]
    assert rates == sorted(rates)
    parser = argparse.ArgumentParser()
    conv.add_arguments(parser)
    args = parser.parse_args(
        ["a/stablecodec_ft2.pkl", "b/stablecodec_ft32.pkl", "--elic", "e.pth", "-o", "out"]
    )
    assert args.checkpoints == ["a/stablecodec_ft2.pkl", "b/stablecodec_ft32.pkl"] and args.elic == "e.pth"
