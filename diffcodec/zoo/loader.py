"""``diffcodec.load``: a zoo name, a local checkpoint folder or ``"hf-hub:org/repo"`` → a ready codec."""

from __future__ import annotations

import importlib
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffcodec.zoo.identify import HF_HUB_PREFIX, check_source
from diffcodec.zoo.registry import ZooEntry, get_entry

if TYPE_CHECKING:
    import torch

    from diffcodec.codecs.base import Codec

__all__ = ["HF_HUB_PREFIX", "load", "load_status", "zoo_status"]


#: Values of :func:`zoo_status`.
BUNDLED, CACHED, NOT_DOWNLOADED, NOT_ON_HUB = "bundled", "cached", "not downloaded", "not on the hub"


def bundled_folder(entry: ZooEntry) -> Path | None:
    """The entry's folder inside the installed package, if it has one and it is there."""
    if entry.bundled_path is None:
        return None
    folder = Path(entry.bundled_path)
    if not folder.is_absolute():
        folder = Path(str(resources.files("diffcodec") / entry.bundled_path))
    return folder if folder.is_dir() else None


def zoo_status(entry: ZooEntry) -> str:
    """Where the entry's weights are on this machine, checked offline (no network call):

    ``"bundled"`` (shipped in the package), ``"cached"`` (in the Hugging Face hub cache, see
    ``HF_HUB_CACHE``), ``"not downloaded"``, or ``"not on the hub"`` (no hub repo: see the entry's notes).
    """
    if bundled_folder(entry) is not None:
        return BUNDLED
    if entry.hub_id is None:
        return NOT_ON_HUB
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(entry.hub_id, entry.weights_file, revision=entry.revision)
    return CACHED if isinstance(found, str) else NOT_DOWNLOADED


def load_status(entry: ZooEntry, local: str | None = None) -> str:
    """What ``diffcodec.load(entry.name)`` will do here (the ``STATUS`` column of ``diffcodec zoo``).

    ``"ready"`` (weights bundled or in the hub cache), ``"downloads on first load"`` (on the hub; official
    checkpoints are converted as they load), ``"convert the official checkpoint"`` (weights published off
    the hub: ``diffcodec convert``), ``"no weights released"``, or ``"not yet implemented"``. ``local`` is
    :func:`zoo_status` when already known.
    """
    from diffcodec.zoo.convert import converters

    if not entry.implemented:
        return "not yet implemented"
    local = local if local is not None else zoo_status(entry)
    if local in (BUNDLED, CACHED):
        return "ready"
    if local == NOT_DOWNLOADED:
        return "downloads on first load"
    return "convert the official checkpoint" if entry.method in converters() else "no weights released"


def _from_entry(entry: ZooEntry, revision: str | None, device: str, overrides: dict[str, Any]) -> Codec:
    from diffcodec.codecs.base import Codec
    from diffcodec.zoo.hub import MissingWeightsError

    if not entry.implemented:
        where = f"hub repo {entry.hub_id}" if entry.hub_id else "no hub repo"
        raise NotImplementedError(
            f"{entry.name!r} ({entry.paper}) is listed in the zoo but not yet implemented in this version of "
            f"diffcodec; official weights: {where} ({entry.notes or 'see the zoo docs'})."
        )
    if entry.official_loader is not None:
        module_name, _, function = entry.official_loader.partition(":")
        if not module_name.startswith("diffcodec.codecs."):
            raise ValueError(
                f"{entry.name}: official loaders live in the method packages (diffcodec.codecs.<method>."
                f"convert), got {module_name!r}"
            )
        loader = getattr(importlib.import_module(module_name), function)
        options = {"base_model": entry.base_model, "base_revision": entry.base_revision, **overrides}
        try:
            return loader(entry.hub_id, revision=revision or entry.revision, **options).to(device)
        except MissingWeightsError as error:
            raise MissingWeightsError(
                f"{error} This is the official, unconverted checkpoint: convert it once with "
                f"`diffcodec convert {entry.method} DIR/{entry.weights_file} OUT_DIR`, then "
                f'diffcodec.load("OUT_DIR").'
            ) from error
    folder = bundled_folder(entry)
    if folder is not None:
        if revision is not None:
            raise ValueError(f"{entry.name!r} is bundled with the package; revision= does not apply")
        return Codec.from_pretrained(folder, map_location=device, **overrides)
    if entry.hub_id is None:
        raise MissingWeightsError(f"{entry.name!r} has no released weights ({entry.notes})")
    return Codec.from_pretrained(
        entry.hub_id, revision=revision or entry.revision, map_location=device, **overrides
    )


def load(
    name_or_path: str | os.PathLike[str],
    quality: int | None = None,
    bpp: float | None = None,
    device: str | torch.device = "cpu",
    revision: str | None = None,
    dtype: torch.dtype | str | None = None,
    compile: bool = False,
    **overrides: Any,
) -> Codec:
    """Load a codec, in eval mode on ``device``, with the rung chosen by ``quality`` or ``bpp``.

    ``name_or_path`` is tried as ``"hf-hub:org/name"`` (a hub repo, at ``revision``), then a zoo name
    (``diffcodec zoo`` lists them), then a local checkpoint folder written by ``save_pretrained``.
    ``overrides`` replace constructor arguments stored in the checkpoint (e.g. a local path to the base
    model). Nothing is downloaded when ``HF_HUB_OFFLINE=1``; missing weights raise
    :class:`~diffcodec.zoo.hub.MissingWeightsError` saying how to fetch them.

    ``dtype`` (``torch.bfloat16`` / ``torch.float16``, or ``"bf16"`` / ``"fp16"``) runs the synthesis networks
    (U-Net, VAE decoder, text encoder, BLIP) in that precision, ``compile=True`` compiles the U-Net and VAE
    decoder; the analysis and entropy path stay float32, so files do not depend on either. The backbone's
    convolutional networks run in ``channels_last`` memory format
    (:func:`~diffcodec.codecs.precision.set_inference_precision`).
    """
    if quality is not None and bpp is not None:
        raise ValueError("pass either quality= or bpp=, not both")
    device = str(device)
    source = os.fspath(name_or_path)
    kind = check_source(source)  # an unknown name fails here, before torch or any model is loaded
    from diffcodec.codecs.base import Codec

    if kind == "hub":
        repo_id = source[len(HF_HUB_PREFIX) :]
        from diffcodec.zoo.hub import is_repo_id

        if not is_repo_id(repo_id):
            raise ValueError(f"{source!r}: expected 'hf-hub:org/name'")
        codec = Codec.from_pretrained(repo_id, revision=revision, map_location=device, **overrides)
    elif kind == "zoo":
        entry = get_entry(source)
        codec = _from_entry(entry, revision, device, overrides)
        origin = codec.__dict__.get("_weights_from") or f"hub {entry.hub_id} (official checkpoint, converted)"
        codec.__dict__["_weights_from"] = f"zoo {source!r}, {origin}"
    else:
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub repos, but {source} is a local folder")
        codec = Codec.from_pretrained(Path(source).expanduser(), map_location=device, **overrides)
    codec.set_rung(quality, bpp)
    from diffcodec.codecs.precision import set_inference_precision

    return set_inference_precision(codec, dtype, compile=compile)  # channels_last too (any device)
