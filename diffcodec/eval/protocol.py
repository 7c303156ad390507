"""What the evaluation runner needs from a codec, so classical anchors and diffcodec models share it.

Every :class:`diffcodec.codecs.Codec` satisfies :class:`CodecLike`, and so do the Pillow anchors in
:mod:`diffcodec.eval.anchors`. A codec's rungs are indexed ``0 … num_rungs − 1``; ``compress`` returns
an object whose ``to_bytes()`` is the complete file (the runner writes it to disk and measures the
rate from its size), and ``decompress`` takes those bytes back.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["CodecLike", "EncodedLike", "file_suffix", "rung_label"]


@runtime_checkable
class EncodedLike(Protocol):
    """A compressed image: ``to_bytes()`` is everything the decoder needs."""

    def to_bytes(self) -> bytes: ...


@runtime_checkable
class CodecLike(Protocol):
    """The part of a codec the evaluation runner uses.

    Optional extras the runner reads when present: ``rates`` (nominal bpp per rung, for labels),
    ``rung_label(k)``, ``file_suffix`` (``".dcb"`` for diffcodec files) and ``to(device)``.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def num_rungs(self) -> int: ...

    def compress(self, image: Any, quality: int | None = None) -> EncodedLike: ...

    def decompress(self, stream: bytes, output: str = "tensor") -> torch.Tensor: ...


def rung_label(codec: CodecLike, rung: int) -> str:
    """Human-readable name of a rung: the codec's own label, else its nominal rate, else ``q<k>``."""
    label = getattr(codec, "rung_label", None)
    if callable(label):
        return str(label(rung))
    rates = getattr(codec, "rates", None)
    try:
        return f"q{rung} ({float(rates[rung]):g} bpp)"
    except (TypeError, IndexError, ValueError, NotImplementedError):
        return f"q{rung}"


def file_suffix(codec: CodecLike) -> str:
    """Extension of the files a codec writes (``.dcb`` for diffcodec bitstreams)."""
    return str(getattr(codec, "file_suffix", ".dcb"))
