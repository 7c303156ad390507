"""Which model wrote a ``.dcb`` file, found from its 8-bit model tag without loading any model.

Every file carries ``model_tag(model_id)`` (:func:`diffcodec.bitstream.model_tag`, the low byte of
CRC-32 of the model identifier). A zoo entry's model identifier is its name (the bundled models' and the
converted official checkpoints' ``config.json`` say so); a local folder's is the ``model_id`` in its
``config.json``. So ``diffcodec decompress FILE.dcb`` can pick the model by itself, and a file decoded with
the wrong model can be answered with the name of the right one.

Eight bits cannot tell every possible model apart: two candidates with the same tag are reported as
ambiguous, never guessed between. Nothing here imports torch: it runs before any model is loaded.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from diffcodec.bitstream import model_tag
from diffcodec.zoo.registry import list_models

__all__ = [
    "TaggedModel",
    "check_source",
    "folder_model_id",
    "models_with_tag",
    "source_model_id",
    "tag_owners",
]

HF_HUB_PREFIX = "hf-hub:"


@dataclass(frozen=True)
class TaggedModel:
    """A model that could be loaded with ``diffcodec.load(source)`` and writes files tagged ``tag``."""

    source: str  # what to pass to diffcodec.load / -m
    model_id: str
    tag: int

    def __str__(self) -> str:
        return self.source if self.source == self.model_id else f"{self.source} ({self.model_id})"


def folder_model_id(folder: str | os.PathLike[str]) -> str | None:
    """The ``model_id`` a checkpoint folder's ``config.json`` records (None if it is not readable)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    model_id = config.get("model_id") if isinstance(config, dict) else None
    if not isinstance(model_id, str):
        init_args = config.get("init_args") if isinstance(config, dict) else None
        model_id = init_args.get("name") if isinstance(init_args, dict) else None
    return model_id if isinstance(model_id, str) and model_id else None


def check_source(source: str) -> str:
    """Raise at once (no model loaded, no torch imported) if ``source`` cannot name a model.

    Returns its kind: ``"hub"`` (``hf-hub:org/name``), ``"zoo"`` or ``"folder"``. An unknown name raises
    ``ValueError`` with the nearest zoo names ("Did you mean …?"), a path that is not a folder
    ``FileNotFoundError``.
    """
    if source.startswith(HF_HUB_PREFIX):
        return "hub"
    names = [entry.name for entry in list_models()]
    if source in names:
        return "zoo"
    if Path(source).expanduser().is_dir():
        return "folder"
    if os.sep in source or "/" in source or source.startswith((".", "~")):
        hint = f" (for a hub repo write 'hf-hub:{source}')" if source.count("/") == 1 else ""
        raise FileNotFoundError(f"no checkpoint folder at {source}{hint}")
    close = difflib.get_close_matches(source, names, n=2)
    hint = f" Did you mean {' or '.join(repr(name) for name in close)}?" if close else ""
    raise ValueError(
        f"{source!r} is not a zoo model, a checkpoint folder, or 'hf-hub:org/name'.{hint} "
        f"Zoo models: {', '.join(names)} (see `diffcodec zoo`)."
    )


def source_model_id(source: str) -> str | None:
    """The model identifier ``diffcodec.load(source)`` will have, when it is known without loading.

    A zoo name is its own identifier; a folder's comes from its ``config.json``; a hub repo's is unknown
    (None) until its config is fetched.
    """
    kind = check_source(source)
    if kind == "zoo":
        return source
    if kind == "folder":
        return folder_model_id(Path(source).expanduser())
    return None


def models_with_tag(tag: int, folders: Iterable[str | os.PathLike[str]] = ()) -> list[TaggedModel]:
    """Every known model whose files carry ``tag``: the zoo (bundled models included), then ``folders``."""
    found = [
        TaggedModel(entry.name, entry.name, tag)
        for entry in list_models()
        if entry.implemented and model_tag(entry.name) == tag
    ]
    for folder in folders:
        model_id = folder_model_id(folder)
        if model_id is not None and model_tag(model_id) == tag:
            found.append(TaggedModel(os.fspath(folder), model_id, tag))
    return found


def tag_owners(tag: int) -> str:
    """``"'a' or 'b'"`` for the zoo models with ``tag``, or a sentence saying none is known."""
    owners = models_with_tag(tag)
    if not owners:
        return "no zoo model (a model of your own? pass its folder with -m)"
    return " or ".join(repr(owner.source) for owner in owners)
