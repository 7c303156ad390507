"""Writing users' files safely: never half a file, never a file replaced by accident.

Every file diffcodec writes for a user (``.dcb`` files, reconstructed images) goes through
:func:`write_atomic`: the bytes go to a temporary file in the target folder, which is then renamed over
the target with ``os.replace`` (atomic on POSIX and Windows within one file system). A write that fails
(disk full, interrupted) therefore leaves the previous file, if any, untouched and no partial file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_atomic"]


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
