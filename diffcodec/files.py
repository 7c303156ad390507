"""Users' files, safely: never half a file written, never a file replaced by accident, never a pickle run.

Every file diffcodec writes for a user (``.dcb`` files, reconstructed images) goes through
:func:`write_atomic`: the bytes go to a temporary file in the target folder, which is then renamed over
the target with ``os.replace`` (atomic on POSIX and Windows within one file system). A write that fails
(disk full, interrupted) therefore leaves the previous file, if any, untouched and no partial file.

Every checkpoint diffcodec reads goes through :func:`load_checkpoint_file` (``torch.load`` with
``weights_only=True``): a crafted pickle is refused with :class:`~diffcodec.errors.CheckpointError`, and
nothing in it runs.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

from diffcodec.errors import CheckpointError

__all__ = ["CHECKPOINT_SAFE_GLOBALS", "load_checkpoint_file", "refused_pickle", "write_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    A write that fails (disk full, interrupted) leaves any previous file at ``path`` as it was and no
    temporary file behind. With ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` and
    nothing is written (checked atomically with a hard link where the file system has them). The file
    gets the permissions a plain ``open(path, "wb")`` would give it.
    """
    path = Path(path)
    exists = f"{path} exists; pass overwrite=True (--force on the command line) to replace it"
    if not overwrite and path.exists():
        raise FileExistsError(exists)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), 0o666 & ~_umask())
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if overwrite:
            os.replace(temporary, path)
            return
        try:
            os.link(temporary, path)  # fails if path exists, atomically
        except FileExistsError:
            raise FileExistsError(exists) from None
        except OSError:  # no hard links on this file system
            if path.exists():
                raise FileExistsError(exists) from None
            os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


#: What the safe loader allows beyond tensors and plain containers: paths (a data module's or codec's
#: hyper-parameters given as ``pathlib.Path``). Constructing them runs no code of the file's choosing.
CHECKPOINT_SAFE_GLOBALS: tuple[type, ...] = (pathlib.PosixPath, pathlib.WindowsPath)


def refused_pickle(path: str | os.PathLike, error: pickle.UnpicklingError) -> CheckpointError:
    """The error for a checkpoint that ``torch.load(weights_only=True)`` refused, naming what it wanted."""
    wanted = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    what = f" ({wanted.group(1)})" if wanted else ""
    return CheckpointError(
        f"{path} holds Python objects other than tensors{what}: diffcodec reads checkpoints with "
        "torch.load(weights_only=True) and does not run code from them. Re-save the tensors you trust "
        "(e.g. with safetensors)."
    )


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with :data:`CHECKPOINT_SAFE_GLOBALS` allowed.

    A file that holds anything else (a pickle that would import and call code) raises
    :class:`CheckpointError` naming what it wanted to load; nothing in it is executed.
    """
    import torch  # only here: the bottom layer does not import torch

    try:
        with torch.serialization.safe_globals(list(CHECKPOINT_SAFE_GLOBALS)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise refused_pickle(path, error) from None
    except Exception as error:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(error).__name__}: {error})"
        ) from error
