"""Checkpoint I/O behind ``Codec.save_pretrained`` / ``Codec.from_pretrained`` (huggingface_hub's mixin).

A diffcodec checkpoint is a folder (or a hub repo) with three files::

    config.json         {"_diffcodec_class": "diffcodec.codecs.x:Cls", "init_args": {...}, "rates": [...],
                         "model_id": ..., "base_model": {"repo_id", "revision", "licence"} | null, ...}
    model.safetensors   the state dict, minus the unchanged base-model weights (re-loaded from base_model;
                        see diffcodec/nn/base_weights.py: every tensor that differs is written)
    README.md           the model card

``config.json`` names the class as ``module:qualname``. Loading resolves it among the codec classes already
defined in this process, or imports it — but only from the ``diffcodec`` package: a file never makes
diffcodec import arbitrary code. The constructor arguments are recorded when the codec is built
(``Codec.__new__``), so every codec whose arguments are JSON values (or dataclasses of them) round-trips.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import importlib
import inspect
import json
import os
import re
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import is_jsonable

from diffcodec.errors import CheckpointError, MissingWeightsError
from diffcodec.files import load_checkpoint_file

if TYPE_CHECKING:
    from diffcodec.codecs.base import Codec

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "MissingWeightsError",
    "class_path",
    "codec_config",
    "load_checkpoint_file",
    "load_codec",
    "resolve_codec_class",
    "save_codec",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
_CLASS_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.<>]*$")
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


# ---------------------------------------------------------------------------------------------- classes
#: Every Codec subclass defined in this process, by ``module:qualname`` (filled by Codec.__init_subclass__).
CODEC_CLASSES: dict[str, type] = {}


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_codec_class(path: str) -> type[Codec]:
    """``"diffcodec.codecs.x:Cls"`` → the class. Imports only modules of the ``diffcodec`` package."""
    from diffcodec.codecs.base import Codec

    if not isinstance(path, str) or not _CLASS_PATH.match(path):
        raise CheckpointError(f"config.json names an invalid codec class {path!r} (expected 'module:Class')")
    if path in CODEC_CLASSES:
        return CODEC_CLASSES[path]  # type: ignore[return-value]
    module_name, qualname = path.split(":")
    if module_name != "diffcodec" and not module_name.startswith("diffcodec."):
        raise CheckpointError(
            f"config.json names the class {path!r}, outside the diffcodec package; diffcodec only imports "
            "its own modules. If it is your own Codec subclass, import its module before loading."
        )
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise CheckpointError(
            f"config.json names the codec class {path!r}, which this diffcodec version does not have "
            f"({type(error).__name__}: {error}); was the checkpoint saved by a newer version?"
        ) from error
    if not (isinstance(target, type) and issubclass(target, Codec)):
        raise CheckpointError(f"config.json names {path!r}, which is not a Codec class")
    return target


# ------------------------------------------------------------------------------------------ init args
def _passed_args(cls: type, args: tuple, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(passed arguments by name, every argument by name with the defaults filled in)."""
    params = dict(inspect.signature(cls.__init__).parameters)
    positional = [
        name
        for name, p in list(params.items())[1:]
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    passed = {**dict(zip(positional, args)), **kwargs}
    values: dict[str, Any] = {}
    for name, p in params.items():
        if p.default is not inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD:
            values[name] = p.default
    values.pop("self", None)
    values.update(passed)
    return passed, values


def bound_init_args(cls: type, args: tuple, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor arguments by name, defaults included, as passed (not JSON-encoded)."""
    return _passed_args(cls, args, kwargs)[1]


def encode_init_args(cls: type, args: tuple, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The constructor arguments as JSON values, and the names of those that are not JSON-serialisable.

    Defaults are included (so a checkpoint does not change meaning when a default changes); dataclass
    values are stored as dicts and rebuilt from the constructor's type hints on load.
    """
    passed, values = _passed_args(cls, args, kwargs)
    encoded: dict[str, Any] = {}
    unsaved: list[str] = []
    for name, value in values.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        if is_jsonable(value):
            encoded[name] = copy.deepcopy(value)  # later mutation of a passed dict must not change it
        elif name in passed:
            unsaved.append(name)
    return encoded, unsaved


def decode_init_args(cls: type, init_args: Mapping[str, Any]) -> dict[str, Any]:
    """Undo JSON's lossy bits using the constructor's type hints: dicts → dataclasses, lists → tuples."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # unresolvable forward references: pass the JSON values through
        hints = {}
    decoded = dict(init_args)
    for name, value in init_args.items():
        hint = hints.get(name)
        candidates = (
            typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UnionType) else (hint,)
        )
        for candidate in candidates:
            if isinstance(value, dict) and dataclasses.is_dataclass(candidate):
                decoded[name] = candidate(**value)
                break
            if isinstance(value, list) and (candidate is tuple or typing.get_origin(candidate) is tuple):
                decoded[name] = tuple(value)
                break
    return decoded


_UnionType = type(int | None)


# ---------------------------------------------------------------------------------------------- saving
@contextlib.contextmanager
def persisting_base(codec: Codec) -> Iterator[None]:
    """Make ``codec.state_dict()`` complete while inside.

    A backbone leaves its frozen base weights out of ``state_dict()`` (``OneStepBackbone.persist_base``
    is False by default). The checkpoint writer decides itself what to leave out — only what the base
    model re-creates — so a randomly initialised backbone (small test configs) is saved whole.
    """
    modules = [m for m in codec.modules() if isinstance(getattr(m, "persist_base", None), bool)]
    previous = [m.persist_base for m in modules]
    for module in modules:
        module.persist_base = True
    try:
        yield
    finally:
        for module, value in zip(modules, previous):
            module.persist_base = value


def full_state_dict(codec: Codec) -> dict[str, torch.Tensor]:
    with persisting_base(codec):
        return codec.state_dict()


def base_state(codec: Codec, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The entries of ``state`` (default: the full state dict) that are unchanged base-model weights
    (:meth:`Codec.base_weight_keys`; empty without a base model reference)."""
    state = full_state_dict(codec) if state is None else state
    keys = codec.base_weight_keys(state)
    return {k: v for k, v in state.items() if k in keys}


def fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """A cheap fingerprint of tensors: names, shapes, dtypes and up to 256 evenly spaced values of each.

    Stored with a checkpoint so that base weights re-loaded from another revision (or left at random
    initialisation) are detected instead of silently producing different images.
    """
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach()
        digest.update(f"{key}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        flat = tensor.reshape(-1)
        if flat.numel():
            sample = flat[:: max(1, flat.numel() // 256)][:256]
            digest.update(sample.to("cpu", torch.float64).numpy().tobytes())
    return digest.hexdigest()[:32]


def codec_config(codec: Codec, base_weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Everything needed to rebuild ``codec`` without knowing its class (the content of config.json).

    ``base_weights``: :func:`base_state` when the caller has it already.
    """
    from diffcodec.version import __version__

    cls = type(codec)
    init_args = dict(getattr(codec, "_diffcodec_init_args", {}))
    unsaved = list(getattr(codec, "_diffcodec_unsaved_args", []))
    if unsaved:
        raise TypeError(
            f"cannot save {cls.__name__}: constructor argument(s) {unsaved} are not JSON-serialisable, so "
            "config.json could not rebuild the codec. Pass JSON values (str, numbers, lists, dicts, "
            "dataclasses of them) to the constructor, e.g. a path as str."
        )
    missing = [
        name
        for name, p in list(inspect.signature(cls.__init__).parameters.items())[1:]
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and name not in init_args
    ]
    if missing:
        raise TypeError(
            f"cannot save {cls.__name__}: required constructor argument(s) {missing} were not recorded"
        )
    backbone = getattr(codec, "backbone", None)
    if isinstance(init_args.get("backbone"), (str, Mapping)) and hasattr(backbone, "base_configs"):
        # a small base-model folder (diffcodec.training.small_base): its weights are saved with the codec,
        # so config.json records the architecture, not a path that exists only on the training machine;
        # configs are re-read from the backbone too, so that attention windows set since are kept
        init_args["backbone"] = backbone.base_configs()
    base = codec.base_model_ref()
    base_weights = base_state(codec) if base_weights is None else base_weights
    return {
        "_diffcodec_class": class_path(cls),
        "_diffcodec_version": __version__,
        "format_version": FORMAT_VERSION,
        "method": codec.method,
        "model_id": codec.model_id,
        "rates": list(codec.rates),
        "base_model": dataclasses.asdict(base) if base is not None else None,
        "base_weights": len(base_weights),  # how many tensors the base model supplies
        "base_fingerprint": fingerprint(base_weights) if base_weights else None,
        "init_args": init_args,
    }


def save_codec(
    codec: Codec, directory: str | os.PathLike[str], *, weights_dtype: torch.dtype | None = None
) -> None:
    """Write ``config.json`` and ``model.safetensors`` (without the base weights) into ``directory``.

    ``weights_dtype`` (e.g. ``torch.float16``) stores the floating-point *parameters* in that type, halving
    the file (diffusers' ``variant="fp16"``), including a ladder's stored rungs (``rungs.{r}.<parameter>``);
    buffers (entropy and scale tables, GDN pedestals) keep their own type.
    Loading casts them back to the codec's dtype, so a model saved this way codes with the rounded weights
    on both ends. Default: the parameters' own dtype.
    """
    from safetensors.torch import save_file

    from diffcodec.codecs.rungs import module_key

    directory = Path(directory)
    full_state = full_state_dict(codec)
    base_weights = base_state(codec, full_state)
    config = codec_config(codec, base_weights)
    parameter_names: set[str] = set()  # the entries stored in weights_dtype
    if weights_dtype is not None:
        if not weights_dtype.is_floating_point:
            raise ValueError(f"weights_dtype must be a floating-point dtype, got {weights_dtype}")
        config["weights_dtype"] = str(weights_dtype).removeprefix("torch.")
        with persisting_base(codec):
            parameter_names = {name for name, _ in codec.named_parameters(remove_duplicate=False)}
    state: dict[str, torch.Tensor] = {}
    seen_storages: set[tuple[int, int]] = set()
    for key, tensor in full_state.items():
        if key in base_weights:  # bit-identical to what the base model loads
            continue
        tensor = tensor.detach().to("cpu").contiguous()
        if module_key(key) in parameter_names and tensor.is_floating_point():  # a ladder's stored rungs too
            tensor = tensor.to(weights_dtype)
        storage = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and storage in seen_storages:  # tied weights: safetensors refuses shared memory
            tensor = tensor.clone()
        seen_storages.add(storage)
        state[key] = tensor
    metadata = {"format": "pt", "diffcodec_class": config["_diffcodec_class"], "model_id": codec.model_id}
    save_file(state, str(directory / WEIGHTS_NAME), metadata=metadata)
    (directory / CONFIG_NAME).write_text(
        json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


# --------------------------------------------------------------------------------------------- loading
def is_repo_id(value: str) -> bool:
    return bool(_REPO_ID.match(value)) and ".." not in value


def missing_weights_message(repo_id: str, revision: str | None, filename: str, reason: str) -> str:
    revision_flag = f" --revision {revision}" if revision else ""
    cache = hf_constants.HF_HUB_CACHE
    return (
        f"the weights of {repo_id!r} ({filename}, revision {revision or 'main'}) are not on this machine: "
        f"{reason}. The hub cache searched is {cache} (set HF_HUB_CACHE to use another). "
        f"On a machine with internet run `hf download {repo_id}{revision_flag} --local-dir DIR`, copy DIR "
        f'here and load it with diffcodec.load("/path/to/DIR") (or `diffcodec ... -m /path/to/DIR`).'
    )


def fetch(
    source: str,
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    """Path of ``filename`` in a local checkpoint folder or a hub repo (downloaded or from the cache)."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub repos, but {source} is a local folder")
        path = folder / filename
        if not path.is_file():
            present = sorted(p.name for p in folder.iterdir())[:8]
            raise MissingWeightsError(
                f"{folder} has no {filename}: not a diffcodec checkpoint folder (expected {CONFIG_NAME} and "
                f"{WEIGHTS_NAME}, as written by save_pretrained; found {present or 'nothing'})"
            )
        return path
    if not is_repo_id(source):
        raise FileNotFoundError(f"no checkpoint folder at {source} (and it is not a hub repo id 'org/name')")
    from diffcodec.version import __version__

    try:
        return Path(
            hf_hub_download(
                repo_id=source,
                filename=filename,
                revision=revision,
                cache_dir=cache_dir,
                force_download=force_download,
                local_files_only=local_files_only,
                token=token,
                library_name="diffcodec",
                library_version=__version__,
            )
        )
    except LocalEntryNotFoundError as error:
        offline = hf_constants.HF_HUB_OFFLINE or local_files_only
        reason = (
            "offline mode is on and the hub cache has no copy" if offline else "the hub could not be reached"
        )
        raise MissingWeightsError(missing_weights_message(source, revision, filename, reason)) from error
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise MissingWeightsError(
            f"hub repo {source!r} does not exist or is not accessible ({type(error).__name__}); check the "
            "name, or log in with `hf auth login` for a gated or private repo"
        ) from error
    except RevisionNotFoundError as error:
        raise MissingWeightsError(f"hub repo {source!r} has no revision {revision!r}") from error
    except EntryNotFoundError as error:
        raise MissingWeightsError(
            f"hub repo {source!r} (revision {revision or 'main'}) has no {filename}: not a diffcodec "
            "checkpoint (official checkpoints must first be converted with `diffcodec convert`)"
        ) from error
    except HfHubHTTPError as error:
        raise MissingWeightsError(missing_weights_message(source, revision, filename, str(error))) from error


def read_config(path: Path, where: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{where}: {CONFIG_NAME} is not readable JSON ({error})") from error
    if not isinstance(config, dict) or "_diffcodec_class" not in config:
        raise CheckpointError(
            f"{where}: {CONFIG_NAME} is not a diffcodec config (no '_diffcodec_class'); official checkpoints "
            "must first be converted with `diffcodec convert`"
        )
    if not isinstance(config.get("init_args", {}), dict):
        raise CheckpointError(f"{where}: {CONFIG_NAME} has a malformed 'init_args' (expected an object)")
    return config


def _listing(keys: Iterable[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_weights(
    codec: Codec,
    path: Path,
    config: Mapping[str, Any],
    where: str,
    *,
    strict: bool = True,
) -> None:
    """Load ``model.safetensors`` into ``codec``; missing base weights are expected, anything else is not."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))  # to the CPU; the caller moves the codec
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{where}: {WEIGHTS_NAME} is not a readable safetensors file ({error})"
        ) from error
    try:
        result = codec.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise CheckpointError(
            f"{where}: {WEIGHTS_NAME} does not fit {type(codec).__name__} built from {CONFIG_NAME}: {error}"
        ) from error
    base_expected = config.get("base_model") is not None
    base_weights = base_state(codec) if base_expected else {}
    missing = [k for k in result.missing_keys if k not in base_weights]
    unexpected = list(result.unexpected_keys)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    expected_fp = config.get("base_fingerprint")
    if base_expected and expected_fp:
        actual_fp = fingerprint(base_weights)
        if actual_fp != expected_fp:
            base = config["base_model"]
            problems.append(
                f"the base weights loaded from {base.get('repo_id')!r} (revision {base.get('revision')}) "
                f"differ from those the checkpoint was trained with (fingerprint {actual_fp}, "
                f"expected {expected_fp})"
            )
    if problems and strict:
        raise CheckpointError(
            f"{where}: the weights do not match {type(codec).__name__}: "
            + "; ".join(problems)
            + ". Was the checkpoint saved by another version or config? (strict=False loads it anyway)"
        )
    if problems:
        import warnings

        warnings.warn(f"{where}: loaded non-strictly: " + "; ".join(problems), stacklevel=3)


def drop_training_args(cls: type, init_args: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``init_args`` without the training settings ``cls`` no longer takes (its ``retired_args``), with a
    warning naming them; any other unknown argument is left for the constructor to refuse.

    Folders written before training moved out of the codecs (``diffcodec.codecs.<method>.training``)
    hold training settings (``stage``, ``learning_rate``, loss weights, …) in config.json. They do not
    change the weights or the coding, so such folders load; ``save_pretrained`` writes a clean config.
    """
    params = inspect.signature(cls.__init__).parameters
    retired = getattr(cls, "retired_args", frozenset())
    dropped = sorted(name for name in init_args if name in retired and name not in params)
    if dropped:
        import warnings

        warnings.warn(
            f"{where}: {CONFIG_NAME} holds training settings that {cls.__name__} no longer takes "
            f"({', '.join(dropped)}); they are ignored (training settings now live in the method's training "
            "module and its recipes). Re-save the folder with `codec.save_pretrained(folder)` to drop them.",
            stacklevel=3,
        )
    return {name: value for name, value in init_args.items() if name not in dropped}


def load_codec(
    expected_cls: type[Codec],
    source: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    token: str | bool | None = None,
    map_location: str = "cpu",
    strict: bool = True,
    **overrides: Any,
) -> Codec:
    """Build the codec described by a checkpoint's config.json and load its weights.

    ``overrides`` replace constructor arguments (e.g. a local path for the base model).
    """
    source = os.fspath(source)
    where = source if revision is None else f"{source}@{revision}"
    hub_kwargs = dict(
        revision=revision,
        cache_dir=cache_dir,
        force_download=force_download,
        local_files_only=local_files_only,
        token=token,
    )
    if config is None:
        config = read_config(fetch(source, CONFIG_NAME, **hub_kwargs), where)
    cls = resolve_codec_class(config["_diffcodec_class"])
    if not issubclass(cls, expected_cls):
        raise CheckpointError(
            f"{where} holds a {cls.__name__}, not a {expected_cls.__name__}; use diffcodec.load() or "
            f"{cls.__name__}.from_pretrained()"
        )
    init_args = decode_init_args(
        cls, {**drop_training_args(cls, config.get("init_args", {}), where), **overrides}
    )
    weights = fetch(source, WEIGHTS_NAME, **hub_kwargs)  # before building: fail fast when missing
    try:
        codec = cls(**init_args)
    except TypeError as error:
        raise CheckpointError(
            f"{where}: {cls.__name__} cannot be built from {CONFIG_NAME} ({error})"
        ) from error
    load_weights(codec, weights, config, where, strict=strict)
    codec.to(map_location)
    codec.eval()
    return codec
