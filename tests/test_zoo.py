"""The zoo registry, zoo_status (offline cache checks) and diffcodec.load's name / path / hub resolution."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_hub import COMMIT, OTHER_COMMIT, TinyConvCodec, put_in_hub_cache, tiny, use_empty_hub_cache

import diffcodec
from diffcodec.zoo import ZooEntry, get_entry, list_models, load, register, registry, zoo_status
from diffcodec.zoo.hub import MissingWeightsError

OFFICIAL = {"oscar", "stablecodec", "onedc", "cadc"}
NOT_ON_HUB = OFFICIAL - {"oscar"}


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests may register entries; the real registry is restored afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def entry(**fields) -> ZooEntry:
    defaults = dict(
        name="tiny-test",
        method="tiny-conv",
        rates=(0.5, 1.0, 2.0),
        hub_id="test-org/tiny",
        revision=COMMIT,
        base_model=None,
        base_revision=None,
        licence="apache-2.0",
        paper="A test codec",
    )
    return ZooEntry(**(defaults | fields))


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return use_empty_hub_cache(tmp_path, monkeypatch)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    folder = tmp_path / "saved"
    tiny(seed=7, name="tiny-zoo").save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------------------------- registry
def test_official_methods_are_listed_honestly() -> None:
    entries = {e.name: e for e in list_models()}
    assert set(entries) >= OFFICIAL
    assert diffcodec.list_models() == list_models()
    for name in OFFICIAL:
        e = entries[name]
        assert e.implemented and e.licence and "arXiv:" in e.paper and e.base_model
    assert entries["oscar"].hub_id == "jinpeig/OSCAR" and len(entries["oscar"].rates) == 8
    assert entries["stablecodec"].licence == "mit" and entries["onedc"].licence == "cc-by-nc-sa-4.0"
    assert entries["cadc"].hub_id is None


@pytest.mark.parametrize("name", sorted(NOT_ON_HUB))
def test_entries_without_hub_weights_say_where_they_are(name: str) -> None:
    with pytest.raises(MissingWeightsError, match=f"'{name}' has no released weights"):
        load(name)


def test_official_checkpoint_entry_says_how_to_get_and_convert_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache, offline (conftest)
    with pytest.raises(MissingWeightsError, match=r"jinpeig/OSCAR.*hf download.*diffcodec convert oscar"):
        load("oscar")


def test_entries_are_validated() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        entry(name="Tiny Test")
    with pytest.raises(ValueError, match="ascending"):
        entry(rates=(1.0, 0.5))
    with pytest.raises(ValueError, match="positive"):
        entry(rates=(0.0, 0.5))
    with pytest.raises(ValueError, match="org/name"):
        entry(hub_id="just-a-name")
    assert entry(rates=[1, 2]).rates == (1.0, 2.0)


def test_register_refuses_duplicates_unless_replacing() -> None:
    register(entry())
    with pytest.raises(ValueError, match="exists"):
        register(entry(notes="again"))
    register(entry(notes="again"), replace=True)
    assert get_entry("tiny-test").notes == "again"
    with pytest.raises(KeyError, match="no zoo model named 'nope'"):
        get_entry("nope")


# ------------------------------------------------------------------------------------------- zoo_status
def test_zoo_status_checks_the_hub_cache_offline(hub_cache: Path, saved: Path) -> None:
    oscar = get_entry("oscar")
    assert zoo_status(oscar) == "not downloaded"
    put_in_hub_cache(hub_cache, "jinpeig/OSCAR", {"oscar.pkl": b"not really a pickle"})
    assert zoo_status(oscar) == "cached"
    assert zoo_status(get_entry("stablecodec")) == "not on the hub"

    pinned = entry()
    assert zoo_status(pinned) == "not downloaded"
    put_in_hub_cache(
        hub_cache, "test-org/tiny", {"model.safetensors": saved / "model.safetensors"}, commit=OTHER_COMMIT
    )
    assert zoo_status(pinned) == "not downloaded"  # another revision is cached, not the pinned one
    assert zoo_status(entry(bundled_path=str(saved))) == "bundled"
    assert zoo_status(entry(bundled_path=str(saved / "absent"))) == "not downloaded"


# ------------------------------------------------------------------------------------------------- load
def test_load_a_hub_entry_at_its_pinned_revision(hub_cache: Path, saved: Path) -> None:
    files = {name: saved / name for name in ("config.json", "model.safetensors")}
    put_in_hub_cache(hub_cache, "test-org/tiny", files, commit=COMMIT, branch=None)  # no refs/main
    register(entry())
    codec = load("tiny-test", bpp=1.1)
    assert isinstance(codec, TinyConvCodec) and codec.model_id == "tiny-zoo" and codec.quality == 1
    with pytest.raises(MissingWeightsError, match="revision v9"):
        load("tiny-test", revision="v9")


def test_bundled_weights_come_before_the_hub(hub_cache: Path, saved: Path) -> None:
    register(entry(bundled_path=str(saved)))
    codec = load("tiny-test", quality=2)
    assert codec.model_id == "tiny-zoo" and codec.quality == 2
    with pytest.raises(ValueError, match="bundled"):
        load("tiny-test", revision="main")


def test_entry_without_hub_or_bundled_weights(saved: Path) -> None:
    register(entry(hub_id=None, notes="weights on a USB stick"))
    with pytest.raises(MissingWeightsError, match="USB stick"):
        load("tiny-test")


def test_load_places_the_codec_on_the_device_in_eval_mode(saved: Path) -> None:
    codec = load(saved, device=torch.device("cpu"))
    assert not codec.training and codec.device == torch.device("cpu")
    assert load(str(saved)).model_id == "tiny-zoo"


def test_load_resolution_errors(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Did you mean 'oscar'"):
        load("oscr")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint folder at \./nowhere"):
        load("./nowhere")
    with pytest.raises(FileNotFoundError, match="write 'hf-hub:someone/model'"):
        load("someone/model")
    with pytest.raises(ValueError, match="expected 'hf-hub:org/name'"):
        load("hf-hub:no-slash")
    with pytest.raises(ValueError, match="applies to hub repos"):
        load(saved, revision="main")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingWeightsError, match=r"no config\.json"):
        load(tmp_path / "empty")
