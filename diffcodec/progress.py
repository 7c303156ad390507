"""Progress bars for long work (tqdm, on stderr): files in the CLI, tiles of large images.

Bars are shown when stderr is a terminal and hidden otherwise (logs, pipes, CI), so scripted output
stays clean. :func:`set_progress` overrides that: ``diffcodec --quiet`` turns them off, ``set_progress(True)``
forces them on. Only work with at least ``min_items`` steps gets a bar; a single tile never does.

    from diffcodec.progress import set_progress
    set_progress(False)   # no bars from the API, whatever stderr is
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress", "progress_enabled", "set_progress"]

T = TypeVar("T")

_setting: bool | None = None  # None: on when stderr is a terminal


def set_progress(enabled: bool | None) -> None:
    """Show bars (True), hide them (False), or decide from stderr being a terminal (None, the default)."""
    global _setting
    _setting = None if enabled is None else bool(enabled)


def progress_enabled() -> bool:
    """Whether :func:`progress` draws a bar now."""
    if _setting is not None:
        return _setting
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress(
    items: Iterable[T],
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    min_items: int = 2,
) -> Iterator[T] | Iterable[T]:
    """``items``, wrapped in a tqdm bar on stderr when bars are on and there are ``min_items`` or more."""
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if not progress_enabled() or (total is not None and total < min_items):
        return items
    from tqdm import tqdm

    # every step is long (a file, a network pass over a tile): redraw on each one, no rate limiting
    return tqdm(
        items,
        total=total,
        desc=desc,
        unit=unit,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0,
    )
