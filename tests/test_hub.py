"""Checkpoint I/O: save_pretrained / from_pretrained / diffcodec.load, local folders and an offline hub cache.

``TinyConvCodec`` is a small but real codec: a conv encoder, per-rung channel truncation, rounding to int8
written as raw bytes (every byte in the file, honest bpp), a conv decoder, and an optional frozen "base"
layer loaded from a hub repo the way methods load SD weights. test_zoo.py and test_cli.py reuse it.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file, save_file
from torch import nn

import diffcodec
from diffcodec.codecs.base import BaseModelRef, Codec, CodecOutput, EncodedImage
from diffcodec.codecs.latent_hyperprior import LatentHyperprior, tiny_backbone
from diffcodec.codecs.precision import set_inference_precision
from diffcodec.imageio import to_tensor
from diffcodec.nn.backbone import OneStepBackbone
from diffcodec.nn.base_weights import record_base_weights
from diffcodec.zoo.hub import (
    CheckpointError,
    MissingWeightsError,
    decode_init_args,
    full_state_dict,
    resolve_codec_class,
)

KODIM23 = "kodim23.png"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"


class TinyConvCodec(Codec):
    """Stride-4 conv autoencoder; rung r codes the first ``2·rates[r]`` latent channels as int8 bytes.

    One int8 per coded latent element at 1/16 of the pixels: exactly ``rates[r]`` bpp plus the header.
    """

    method = "tiny-conv"
    pad_multiple = 4
    paper = "A test codec"
    licence = "apache-2.0"

    def __init__(
        self,
        name: str = "tiny-conv",
        channels: int = 8,
        latent_channels: int = 4,
        rates: tuple[float, ...] = (0.5, 1.0, 2.0),
        base_repo: str | None = None,
        base_revision: str | None = None,
    ) -> None:
        super().__init__()
        self._name = str(name)
        self._rates = tuple(float(r) for r in rates)
        self.coded = [round(2 * r) for r in self._rates]
        if any(not 1 <= k <= latent_channels for k in self.coded):
            raise ValueError(f"rates {rates} need 1..{latent_channels} latent channels")
        self.base_repo, self.base_revision = base_repo, base_revision
        self.base = nn.Conv2d(3, 3, 1)  # a frozen "pretrained" colour transform
        if base_repo is not None:
            path = hf_hub_download(base_repo, "base.safetensors", revision=base_revision)
            self.base.load_state_dict(load_file(path))
            record_base_weights(self.base)
        self.base.requires_grad_(False)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, channels, 3, 2, 1), nn.GELU(), nn.Conv2d(channels, latent_channels, 3, 2, 1)
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent_channels, channels, 4, 2, 1),
            nn.GELU(),
            nn.ConvTranspose2d(channels, 3, 4, 2, 1),
        )
        self.log_scale = nn.Parameter(torch.full((latent_channels,), 3.0))

    def base_model_ref(self) -> BaseModelRef | None:
        if self.base_repo is None:
            return None
        return BaseModelRef(self.base_repo, self.base_revision, "test-licence")

    def _latent(self, x: torch.Tensor, rung: int) -> torch.Tensor:
        y = self.encoder(self.base(x * 2 - 1)) * self.log_scale.exp()[None, :, None, None]
        return y[:, : self.coded[rung]]

    def _synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        full = y_hat.new_zeros(y_hat.shape[0], self.log_scale.numel(), *y_hat.shape[-2:])
        full[:, : y_hat.shape[1]] = y_hat / self.log_scale[: y_hat.shape[1]].exp()[None, :, None, None]
        return torch.sigmoid(self.decoder(full))

    def forward(self, x: torch.Tensor) -> CodecOutput:
        y = self._latent(x, self.quality)
        y_hat = y + (y.round().clamp(-128, 127) - y).detach()
        bits = torch.full((x.shape[0],), 8.0 * y[0].numel())
        return CodecOutput(x_hat=self._synthesis(y_hat), rate_bits={"y": bits})

    def _compress(self, x: torch.Tensor, rung: int) -> EncodedImage:
        q = self._latent(x, rung).round().clamp(-128, 127).to(torch.int8)
        return EncodedImage(streams=[q.numpy().tobytes()])

    def _decompress(self, encoded: EncodedImage, padded_size: tuple[int, int], rung: int) -> torch.Tensor:
        shape = (1, self.coded[rung], padded_size[0] // 4, padded_size[1] // 4)
        if len(encoded.streams) != 1 or len(encoded.streams[0]) != int(np.prod(shape)):
            raise ValueError(f"expected one stream of {int(np.prod(shape))} bytes")
        q = np.frombuffer(encoded.streams[0], dtype=np.int8).reshape(shape)
        return self._synthesis(torch.from_numpy(q.astype(np.float32)))


class OtherCodec(TinyConvCodec):
    method = "other"


def tiny(seed: int = 0, **kwargs) -> TinyConvCodec:
    torch.manual_seed(seed)
    return TinyConvCodec(**kwargs).eval()


def put_in_hub_cache(
    cache: Path,
    repo_id: str,
    files: dict[str, Path | bytes],
    commit: str = COMMIT,
    branch: str | None = "main",
) -> Path:
    """Lay files out as huggingface_hub's cache does: models--org--name/refs/<branch>, snapshots/<commit>/."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copy(content, snapshot / name)
        else:
            (snapshot / name).write_bytes(content)
    if branch is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / branch).write_text(commit)
    return snapshot


def use_empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, offline hub cache: HF_HUB_CACHE (for subprocesses) and huggingface_hub's constant."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_empty_hub_cache(tmp_path, monkeypatch)


@pytest.fixture
def base_repo(hub_cache: Path, tmp_path: Path) -> str:
    """A hub repo holding the base layer's weights, at COMMIT (main) and OTHER_COMMIT (different values)."""
    for seed, commit, branch in ((1, COMMIT, "main"), (2, OTHER_COMMIT, None)):
        torch.manual_seed(seed)
        file = tmp_path / f"base{seed}.safetensors"
        save_file(nn.Conv2d(3, 3, 1).state_dict(), str(file))
        put_in_hub_cache(hub_cache, "test-org/tiny-base", {"base.safetensors": file}, commit, branch)
    return "test-org/tiny-base"


@pytest.fixture(scope="module")
def image(kodak_dir: Path) -> torch.Tensor:
    return to_tensor(kodak_dir / KODIM23)


# ---------------------------------------------------------------------------------------------- saving
def test_save_pretrained_writes_config_weights_and_card(tmp_path: Path) -> None:
    codec = tiny(channels=6, name="tiny-a")
    codec.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_diffcodec_class"].endswith(":TinyConvCodec")
    assert config["init_args"] == {
        "name": "tiny-a",
        "channels": 6,
        "latent_channels": 4,
        "rates": [0.5, 1.0, 2.0],
        "base_repo": None,
        "base_revision": None,
    }
    assert config["rates"] == [0.5, 1.0, 2.0]
    assert config["model_id"] == "tiny-a" and config["method"] == "tiny-conv"
    assert config["base_model"] is None and config["base_fingerprint"] is None
    assert set(load_file(tmp_path / "model.safetensors")) == set(codec.state_dict())  # base kept: no ref
    card = (tmp_path / "README.md").read_text()
    assert "library_name: diffcodec" in card and "license: apache-2.0" in card
    assert "tiny-conv" in card and "A test codec" in card and "| 2 | 2 |" in card


def test_unserialisable_constructor_argument_refuses_to_save(tmp_path: Path) -> None:
    codec = tiny(name=Path("not-json"))
    with pytest.raises(TypeError, match=r"\['name'\] are not JSON-serialisable"):
        codec.save_pretrained(tmp_path)


# -------------------------------------------------------------------------------------- round trips
def test_round_trip_reproduces_weights_and_bitstreams(tmp_path: Path, image: torch.Tensor) -> None:
    codec = tiny(seed=3, name="tiny-rt")
    codec.set_rung(1)
    streams = [codec.compress(image, quality=q).to_bytes() for q in range(codec.num_rungs)]
    decoded = codec.decompress(streams[2], output="tensor")
    codec.save_pretrained(tmp_path)

    for loaded in (
        Codec.from_pretrained(tmp_path),
        TinyConvCodec.from_pretrained(str(tmp_path)),
        diffcodec.load(tmp_path),
    ):
        assert type(loaded) is TinyConvCodec and not loaded.training
        assert loaded.model_id == "tiny-rt" and loaded.rates == codec.rates
        for key, value in codec.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        assert [loaded.compress(image, quality=q).to_bytes() for q in range(3)] == streams
        assert torch.equal(loaded.decompress(streams[2], output="tensor"), decoded)
    # rates are honest: 8 bits per coded latent element (1/16 of the pixels), plus a few header bytes
    for q, data in enumerate(streams):
        assert 8 * len(data) / (768 * 512) == pytest.approx(codec.rates[q], abs=1e-3)


def test_load_sets_the_rung_from_quality_or_bpp(tmp_path: Path) -> None:
    tiny().save_pretrained(tmp_path)
    assert diffcodec.load(tmp_path).quality == 0
    assert diffcodec.load(tmp_path, quality=2).quality == 2
    assert diffcodec.load(tmp_path, quality=-2).quality == 1
    assert diffcodec.load(tmp_path, bpp=0.9).quality == 1
    assert diffcodec.load(tmp_path, bpp=100.0).quality == 2
    with pytest.raises(ValueError, match="has 3 rungs"):
        diffcodec.load(tmp_path, quality=3)
    with pytest.raises(ValueError, match="either quality= or bpp="):
        diffcodec.load(tmp_path, quality=1, bpp=0.5)


def test_copies_keep_their_constructor_arguments(tmp_path: Path) -> None:
    import copy

    original = tiny(name="copied", channels=5)
    clone = copy.deepcopy(original)
    clone.save_pretrained(tmp_path)
    assert diffcodec.load(tmp_path).model_id == "copied"
    assert json.loads((tmp_path / "config.json").read_text())["init_args"]["channels"] == 5


def test_overrides_replace_stored_constructor_arguments(tmp_path: Path) -> None:
    tiny(name="stored").save_pretrained(tmp_path)
    assert diffcodec.load(tmp_path, name="renamed").model_id == "renamed"


@dataclass
class Widths:
    n: int = 1


class WithDataclass(TinyConvCodec):
    def __init__(self, widths: Widths | None = None, sizes: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        self.widths, self.sizes = widths, sizes


def test_init_args_decoding_restores_tuples_and_dataclasses(tmp_path: Path) -> None:
    decoded = decode_init_args(WithDataclass, {"widths": {"n": 3}, "sizes": [1, 2]})
    assert decoded == {"widths": Widths(3), "sizes": (1, 2)}
    codec = WithDataclass(widths=Widths(5))
    assert codec._diffcodec_init_args == {"widths": {"n": 5}, "sizes": (1,)}
    codec.save_pretrained(tmp_path)
    loaded = diffcodec.load(tmp_path)
    assert loaded.widths == Widths(5) and loaded.sizes == (1,)


# ------------------------------------------------------------------------------------- the hub cache
def test_offline_hub_cache_by_branch_and_by_commit(
    hub_cache: Path, tmp_path: Path, image: torch.Tensor
) -> None:
    codec = tiny(seed=4, name="tiny-hub")
    codec.save_pretrained(tmp_path / "saved")
    files = {name: tmp_path / "saved" / name for name in ("config.json", "model.safetensors", "README.md")}
    put_in_hub_cache(hub_cache, "test-org/tiny", files)
    expected = codec.compress(image, quality=1).to_bytes()

    by_branch = Codec.from_pretrained("test-org/tiny")
    by_commit = Codec.from_pretrained("test-org/tiny", revision=COMMIT)
    via_load = diffcodec.load("hf-hub:test-org/tiny", quality=1, revision=COMMIT)
    assert via_load.quality == 1
    for loaded in (by_branch, by_commit, via_load):
        assert loaded.compress(image, quality=1).to_bytes() == expected


def test_missing_hub_weights_say_how_to_get_them(hub_cache: Path) -> None:
    with pytest.raises(MissingWeightsError) as info:
        diffcodec.load("hf-hub:test-org/absent", revision="v1")
    message = str(info.value)
    assert "'test-org/absent'" in message and "offline" in message
    assert "hf download test-org/absent --revision v1 --local-dir DIR" in message
    assert 'diffcodec.load("/path/to/DIR")' in message and str(hub_cache) in message


def test_config_without_weights_is_reported(hub_cache: Path, tmp_path: Path) -> None:
    tiny().save_pretrained(tmp_path / "saved")
    put_in_hub_cache(hub_cache, "test-org/half", {"config.json": tmp_path / "saved" / "config.json"})
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors.*hf download test-org/half"):
        Codec.from_pretrained("test-org/half")
    (tmp_path / "saved" / "model.safetensors").unlink()
    with pytest.raises(MissingWeightsError, match=r"has no model\.safetensors: not a diffcodec checkpoint"):
        diffcodec.load(tmp_path / "saved")


# ------------------------------------------------------------------------------------- base weights
def test_base_weights_are_not_saved_but_reloaded_from_the_base_repo(
    base_repo: str, tmp_path: Path, image: torch.Tensor
) -> None:
    codec = tiny(seed=5, base_repo=base_repo, base_revision=COMMIT)
    assert not codec.base.weight.requires_grad
    codec.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert not any(key.startswith("base.") for key in saved)
    assert set(saved) == {k for k in codec.state_dict() if not k.startswith("base.")}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["base_model"] == {"repo_id": base_repo, "revision": COMMIT, "licence": "test-licence"}
    assert config["base_weights"] == 2 and config["base_fingerprint"]
    card = (tmp_path / "README.md").read_text()
    assert f"base_model: {base_repo}" in card and "test-licence" in card and COMMIT in card

    loaded = diffcodec.load(tmp_path)
    assert torch.equal(loaded.base.weight, codec.base.weight)
    assert loaded.compress(image, quality=2).to_bytes() == codec.compress(image, quality=2).to_bytes()

    # another base revision holds other weights: refused (fingerprint), accepted with strict=False
    with pytest.raises(CheckpointError, match="differ from those the checkpoint was trained with"):
        diffcodec.load(tmp_path, base_revision=OTHER_COMMIT)
    with pytest.warns(UserWarning, match="non-strictly"):
        Codec.from_pretrained(tmp_path, strict=False, base_revision=OTHER_COMMIT)


def test_trained_or_replaced_base_tensors_are_saved(base_repo: str, tmp_path: Path) -> None:
    codec = tiny(seed=5, base_repo=base_repo, base_revision=COMMIT)
    assert codec.base_weight_keys() == {"base.weight", "base.bias"}
    assert not tiny().base_weight_keys()  # no base model reference: everything is saved
    with torch.no_grad():
        codec.base.bias.add_(1e-3)  # trained
    codec.base.weight = nn.Parameter(codec.base.weight.double().float())  # replaced, bit-identical
    assert codec.base_weight_keys() == {"base.weight"}
    codec.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert "base.bias" in saved and "base.weight" not in saved
    loaded = diffcodec.load(tmp_path)
    assert torch.equal(loaded.base.bias, codec.base.bias)


# -------------------------------------------------------------------------------- bad checkpoints
def test_corrupt_weights_file(tmp_path: Path) -> None:
    tiny().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        diffcodec.load(tmp_path)


def test_mismatched_weights_list_the_keys(tmp_path: Path) -> None:
    tiny().save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["extra.weight"] = torch.zeros(1)
    del state["log_scale"]
    save_file(state, str(tmp_path / "model.safetensors"))
    expected = r"1 missing key\(s\): log_scale; 1 unexpected key\(s\): extra\.weight"
    with pytest.raises(CheckpointError, match=expected):
        diffcodec.load(tmp_path)

    config = json.loads((tmp_path / "config.json").read_text())
    config["init_args"]["channels"] = 5
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"size mismatch for encoder\.0\.weight"):
        diffcodec.load(tmp_path)


def test_bad_configs(tmp_path: Path) -> None:
    tiny().save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())

    config_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not readable JSON"):
        diffcodec.load(tmp_path)
    config_path.write_text(json.dumps({"hidden_size": 3}))
    with pytest.raises(CheckpointError, match="not a diffcodec config"):
        diffcodec.load(tmp_path)
    config_path.write_text(json.dumps(config | {"init_args": {"bogus": 1}}))
    with pytest.raises(CheckpointError, match=r"cannot be built from config\.json"):
        diffcodec.load(tmp_path)
    with pytest.raises(CheckpointError, match="holds a TinyConvCodec, not a OtherCodec"):
        OtherCodec.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("os:system", "outside the diffcodec package"),
        ("subprocess:Popen", "outside the diffcodec package"),
        ("diffcodec.codecs.no_such_module:X", "does not have"),
        ("diffcodec.bitstream:Bitstream", "not a Codec class"),
        ("diffcodec.bitstream", "invalid codec class"),
        ("__import__('os'):x", "invalid codec class"),
    ],
)
def test_class_resolution_never_imports_outside_diffcodec(path: str, message: str) -> None:
    with pytest.raises(CheckpointError, match=message):
        resolve_codec_class(path)


def test_codec_classes_from_the_config_are_resolved_in_the_diffcodec_namespace() -> None:
    assert resolve_codec_class("diffcodec.codecs.base:Codec") is Codec
    assert resolve_codec_class(f"{TinyConvCodec.__module__}:TinyConvCodec") is TinyConvCodec


def test_save_load_of_the_reference_codec(tmp_path: Path, image: torch.Tensor) -> None:
    """LatentHyperprior (tiny backbone, random init): every weight saved, identical files after reload."""
    torch.manual_seed(0)
    codec = LatentHyperprior(channels=16, latent_channels=16, hyper_channels=8).eval()
    x = image[..., :128, :128]
    stream = codec.compress(x, quality=1)
    codec.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["_diffcodec_class"] == "diffcodec.codecs.reference.model:LatentHyperprior"
    # folders written before the method packages still name the old module
    assert resolve_codec_class("diffcodec.codecs.latent_hyperprior:LatentHyperprior") is LatentHyperprior
    loaded = diffcodec.load(tmp_path, quality=1)
    assert type(loaded) is LatentHyperprior and loaded.quality == 1
    assert loaded.compress(x).to_bytes() == stream.to_bytes()
    set_inference_precision(codec)  # the runtime layout load() gives (channels_last): then bit-identical
    assert torch.equal(loaded.decompress(stream, output="tensor"), codec.decompress(stream, output="tensor"))


def test_reference_codec_on_a_base_model_saves_only_its_own_weights(
    tmp_path: Path, image: torch.Tensor
) -> None:
    """A pretrained backbone (here a diffusers folder of tiny SD parts) is re-loaded, not saved; LoRA-free
    trained parts of it (the widened conv_in, the learned embedding) are saved."""
    from diffusers import DDPMScheduler

    torch.manual_seed(1)
    parts = OneStepBackbone.from_config(**tiny_backbone())
    base = tmp_path / "tiny-sd"
    parts.vae.save_pretrained(base / "vae")
    parts.unet.save_pretrained(base / "unet")
    DDPMScheduler.from_config(tiny_backbone()["scheduler_config"]).save_pretrained(base / "scheduler")

    torch.manual_seed(2)
    codec = LatentHyperprior(channels=16, latent_channels=16, hyper_channels=8, base_model=str(base)).eval()
    x = image[..., :128, :128]
    stream = codec.compress(x, quality=2)
    codec.save_pretrained(tmp_path / "saved")
    saved = set(load_file(tmp_path / "saved" / "model.safetensors"))
    full = set(full_state_dict(codec))
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["base_model"]["repo_id"] == str(base) and config["base_fingerprint"]
    assert saved == set(full) - codec.base_weight_keys()
    assert "backbone.unet.conv_in.weight" in saved and "backbone.conditioning.embedding" in saved
    assert (
        "backbone.unet.conv_out.weight" not in saved and "backbone.vae.decoder.conv_out.weight" not in saved
    )

    loaded = diffcodec.load(tmp_path / "saved", quality=2)
    assert type(loaded) is LatentHyperprior
    assert loaded.compress(x).to_bytes() == stream.to_bytes()
    reloaded = full_state_dict(loaded)
    for key, value in full_state_dict(codec).items():
        assert torch.equal(reloaded[key], value), key
