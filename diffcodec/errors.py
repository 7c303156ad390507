"""Every error diffcodec raises on purpose: one base class, :class:`DiffcodecError`, and its subclasses.

``except diffcodec.DiffcodecError`` catches all of them. Each subclass also derives from the built-in
exception it replaced (``ValueError``, ``FileNotFoundError``, ``RuntimeError``), so code written against
the earlier classes keeps working. The classes stay importable from their former modules
(``diffcodec.bitstream.DecodeError``, ``diffcodec.zoo.hub.CheckpointError``, …).

This module is the bottom layer: it imports nothing from diffcodec.
"""

from __future__ import annotations

__all__ = [
    "BaseModelNotFoundError",
    "CheckpointError",
    "DecodeError",
    "DiffcodecError",
    "MissingWeightsError",
    "ModelUnavailableError",
    "TooSmall",
    "UsageError",
]


class DiffcodecError(Exception):
    """Base class of every error diffcodec raises deliberately."""


class DecodeError(DiffcodecError, ValueError):
    """A file (or payload) that cannot be decoded. ``offset`` is the byte where the problem is, if known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.reason = message
        self.offset = offset
        super().__init__(message if offset is None else f"{message} (at byte offset {offset})")


class MissingWeightsError(DiffcodecError, FileNotFoundError):
    """The weights are not on this machine (and cannot be downloaded here)."""


class CheckpointError(DiffcodecError, ValueError):
    """A checkpoint exists but cannot be used: unreadable, corrupt, or not matching the codec."""


class BaseModelNotFoundError(DiffcodecError, FileNotFoundError):
    """A base model (VAE, U-Net, scheduler, text encoder) is neither local nor in the hub cache."""


class ModelUnavailableError(DiffcodecError, RuntimeError):
    """The model asked for cannot be loaded on this machine (not bundled, no local weights, bad folder)."""


class UsageError(DiffcodecError):
    """A command-line mistake found after parsing (exit status 2)."""


class TooSmall(DiffcodecError):
    """The image is smaller than the crop needs and the policy is ``min_size="skip"``."""
