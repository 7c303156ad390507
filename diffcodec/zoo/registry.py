"""The model zoo: one :class:`ZooEntry` per named model, registered by the method packages.

Each method package has a ``zoo.py`` next to its model that calls :func:`register` (the official release,
the bundled small model); :func:`discover` imports them the first time the zoo is asked.

An entry says where the weights live (a hub repo at a pinned revision, or a folder bundled with the
package), what they were trained from (the base model and its licence), the rate ladder and the paper.
:func:`diffcodec.load` turns a name into a codec; ``diffcodec zoo`` prints this table.

Entries whose method is not implemented in this version are listed (so the zoo is honest about what
exists upstream) but ``load`` refuses them with a message that says so.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
from dataclasses import dataclass

__all__ = ["SMALL_NOTES", "ZooEntry", "discover", "get_entry", "list_models", "register", "register_bundled"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class ZooEntry:
    """A named model.

    ``rates`` are the nominal bits per pixel of each rung, ascending (``quality=k`` is ``rates[k]``);
    empty when not yet measured in diffcodec. ``hub_id`` / ``revision`` locate the weights on the Hugging
    Face Hub (``revision`` should be a commit hash for reproducibility); ``bundled_path`` is a folder
    inside the ``diffcodec`` package (relative), used before the hub when present. ``weights_file`` is
    the file whose presence in the local cache means the weights are on this machine (an official
    checkpoint may use its own name until converted). ``official_loader`` (``"module:function"`` in the
    method's converter, ``diffcodec.codecs.<method>.convert``) reads an official, unconverted checkpoint
    from ``hub_id`` at load time.
    ``implemented`` is False for methods this version lists but cannot run yet.
    """

    name: str
    method: str
    rates: tuple[float, ...]
    hub_id: str | None
    revision: str | None
    base_model: str | None
    base_revision: str | None
    licence: str
    paper: str
    bundled_path: str | None = None
    notes: str = ""
    base_licence: str | None = None
    implemented: bool = True
    weights_file: str = "model.safetensors"
    official_loader: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"zoo names are lower-case [a-z0-9._-], got {self.name!r}")
        object.__setattr__(self, "rates", tuple(float(r) for r in self.rates))
        if any(r <= 0 for r in self.rates) or list(self.rates) != sorted(self.rates):
            raise ValueError(f"{self.name}: rates must be positive and ascending, got {self.rates}")
        if self.hub_id is not None and self.hub_id.count("/") != 1:
            raise ValueError(f"{self.name}: hub_id must look like 'org/name', got {self.hub_id!r}")


_REGISTRY: dict[str, ZooEntry] = {}
_DISCOVERED = False


def register(entry: ZooEntry, *, replace: bool = False) -> ZooEntry:
    """Add ``entry`` to the zoo (``replace=True`` to overwrite an entry of the same name)."""
    if entry.name in _REGISTRY and not replace:
        raise ValueError(f"a zoo entry named {entry.name!r} exists; pass replace=True to overwrite it")
    _REGISTRY[entry.name] = entry
    return entry


def discover() -> None:
    """Import every method package's ``zoo`` module once (``diffcodec/codecs/<method>/zoo.py``): each
    registers its entries, so adding a method never edits this file (timm's / CompressAI's pattern). The
    modules hold data only; importing them loads no torch."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import diffcodec.codecs

    for package in sorted(pkgutil.iter_modules(diffcodec.codecs.__path__), key=lambda p: p.name):
        if package.ispkg and importlib.util.find_spec(f"diffcodec.codecs.{package.name}.zoo") is not None:
            importlib.import_module(f"diffcodec.codecs.{package.name}.zoo")


def list_models() -> list[ZooEntry]:
    """Every registered entry: the method packages' (in package order), then any registered later."""
    discover()
    return list(_REGISTRY.values())


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name``; ``KeyError`` naming the known ones otherwise."""
    discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no zoo model named {name!r}; known: {', '.join(_REGISTRY) or 'none'}") from None


# ---------------------------------------------------------------------------------------------- entries
#: notes of the bundled small models (trained by diffcodec from scratch with recipes/bundled/train.sh, their
#: small base model included, so every weight is in the package and nothing is downloaded)
SMALL_NOTES = (
    "bundled in the package (works offline); small widths and minutes of training: shows the pipeline, "
    "not the paper's quality; base model: diffcodec's small kl-f8 VAE + U-Net (recipes/base)"
)


def register_bundled(name: str, method: str, rates: tuple[float, ...], paper: str) -> ZooEntry:
    """Register a model bundled in the package (``assets/models/<name>``; docs/bundled.md): trained by
    diffcodec from scratch, licensed apache-2.0, no hub repo and no base model to download."""
    entry = ZooEntry(
        name=name, method=method, rates=rates, hub_id=None, revision=None, base_model=None,
        base_revision=None, licence="apache-2.0", paper=paper, bundled_path=f"assets/models/{name}",
        notes=SMALL_NOTES,
    )  # fmt: skip
    return register(entry)
