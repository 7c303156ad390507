"""One error hierarchy: every deliberate diffcodec error derives from ``diffcodec.DiffcodecError``."""

from __future__ import annotations

import pytest

import diffcodec
from diffcodec import errors


@pytest.mark.parametrize(
    ("old_module", "name", "builtin"),
    [
        ("diffcodec.bitstream", "DecodeError", ValueError),
        ("diffcodec.zoo.hub", "CheckpointError", ValueError),
        ("diffcodec.zoo.hub", "MissingWeightsError", FileNotFoundError),
        ("diffcodec.nn.backbone", "BaseModelNotFoundError", FileNotFoundError),
        ("diffcodec.demo", "ModelUnavailableError", RuntimeError),
        ("diffcodec.cli", "UsageError", Exception),
        ("diffcodec.data.crops", "TooSmall", Exception),
    ],
)
def test_every_error_class_is_one_class_under_the_common_base(
    old_module: str, name: str, builtin: type
) -> None:
    import importlib

    cls = getattr(errors, name)
    assert getattr(importlib.import_module(old_module), name) is cls, "the old import path must still work"
    assert issubclass(cls, errors.DiffcodecError) and issubclass(cls, builtin)


def test_the_base_and_the_common_errors_are_exported_at_top_level() -> None:
    for name in ("DiffcodecError", "DecodeError", "CheckpointError", "MissingWeightsError"):
        assert getattr(diffcodec, name) is getattr(errors, name)


def test_a_malformed_file_is_caught_by_the_base_class() -> None:
    with pytest.raises(diffcodec.DiffcodecError, match="magic"):
        diffcodec.Bitstream.from_bytes(b"not a diffcodec file at all")
