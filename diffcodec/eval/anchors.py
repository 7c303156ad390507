"""Classical anchors — JPEG, WebP and AVIF through Pillow — with the runner's codec interface.

Each anchor is a ladder of encoder quality settings (rung ``k`` = the ``k``-th quality in the sweep),
so it runs through the same loop as a learned codec: the file Pillow writes is the bitstream, and
its size (headers included) is the rate. Settings are fixed and recorded in ``settings``:

- JPEG: libjpeg(-turbo) as bundled with Pillow, 4:2:0 chroma subsampling, optimised Huffman tables.
- WebP: libwebp lossy, ``method=6`` (slowest, best compression).
- AVIF: libavif (Pillow ≥ 11.3 built with it), 4:2:0, ``speed=6`` (libavif's default).

Quality sweeps default to values that reach the lowest rate each format can produce; pass
``qualities=`` (or ``-m jpeg:5,10,20`` on the command line) to choose others.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, features

from diffcodec.imageio import ImageLike, to_pil, to_tensor

__all__ = ["ANCHORS", "AnchorFile", "PillowAnchor", "anchor_available"]


@dataclass(frozen=True)
class _Format:
    pil_format: str
    feature: str
    suffix: str
    default_qualities: tuple[int, ...]
    options: tuple[tuple[str, Any], ...]


ANCHORS: dict[str, _Format] = {
    "jpeg": _Format(
        "JPEG", "jpg", ".jpg", (1, 5, 10, 20, 30, 50, 75, 90), (("subsampling", 2), ("optimize", True))
    ),
    "webp": _Format("WEBP", "webp", ".webp", (0, 5, 10, 20, 40, 60, 80, 95), (("method", 6),)),
    "avif": _Format(
        "AVIF", "avif", ".avif", (0, 5, 10, 20, 35, 50, 70, 90), (("subsampling", "4:2:0"), ("speed", 6))
    ),
}


def anchor_available(name: str) -> bool:
    """Whether this Pillow build can write ``name`` (``"jpeg"``, ``"webp"``, ``"avif"``)."""
    return name in ANCHORS and bool(features.check(ANCHORS[name].feature))


@dataclass(frozen=True)
class AnchorFile:
    """An anchor's compressed image: the file bytes and the image size (for bpp)."""

    data: bytes
    height: int
    width: int

    def to_bytes(self) -> bytes:
        return self.data

    @property
    def num_bytes(self) -> int:
        return len(self.data)

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / (self.height * self.width)


class PillowAnchor:
    """A JPEG / WebP / AVIF ladder: ``compress(image, quality=k)`` encodes at ``qualities[k]``."""

    def __init__(self, name: str, qualities: Sequence[int] | None = None) -> None:
        if name not in ANCHORS:
            raise ValueError(f"unknown anchor {name!r}; choose from {sorted(ANCHORS)}")
        if not anchor_available(name):
            raise RuntimeError(f"this Pillow build ({Image.__version__}) cannot write {name.upper()}")
        self.name = name
        self.format = ANCHORS[name]
        qualities = tuple(self.format.default_qualities if qualities is None else qualities)
        if not qualities:
            raise ValueError(f"{name}: give at least one quality setting")
        for q in qualities:
            if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= 100:
                raise ValueError(f"{name} qualities are integers in 0..100, got {q!r}")
        self.qualities = qualities
        self.settings = {
            "format": self.format.pil_format,
            **dict(self.format.options),
            "pillow": Image.__version__,
        }
        version = features.version(self.format.feature)
        if version:
            self.settings["library_version"] = version
        self.file_suffix = self.format.suffix

    @property
    def model_id(self) -> str:
        return self.name

    @property
    def num_rungs(self) -> int:
        return len(self.qualities)

    def rung_label(self, rung: int) -> str:
        return f"{self.name} q={self.qualities[rung]}"

    def _rung(self, quality: int | None) -> int:
        if quality is None:
            return 0
        if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality < self.num_rungs:
            raise ValueError(
                f"{self.name}: quality is a rung index 0..{self.num_rungs - 1} "
                f"(encoder qualities {list(self.qualities)}), got {quality!r}"
            )
        return quality

    def compress(self, image: ImageLike, quality: int | None = None) -> AnchorFile:
        """Encode the 8-bit (rounded) image at rung ``quality``."""
        rung = self._rung(quality)
        pil = image if isinstance(image, Image.Image) else to_pil(to_tensor(image))
        pil = pil.convert("RGB")
        buffer = io.BytesIO()
        pil.save(
            buffer, format=self.format.pil_format, quality=self.qualities[rung], **dict(self.format.options)
        )
        return AnchorFile(buffer.getvalue(), height=pil.height, width=pil.width)

    def decompress(self, stream: AnchorFile | bytes | str | os.PathLike, output: str = "tensor"):
        """Decode a file (bytes, :class:`AnchorFile` or path) to a (1, 3, H, W) tensor or a PIL image."""
        if output not in ("pil", "tensor"):
            raise ValueError(f"output must be 'pil' or 'tensor', got {output!r}")
        if isinstance(stream, AnchorFile):
            data = stream.data
        elif isinstance(stream, (bytes, bytearray, memoryview)):
            data = bytes(stream)
        else:
            with open(stream, "rb") as handle:
                data = handle.read()
        try:
            with Image.open(io.BytesIO(data)) as opened:
                if opened.format != self.format.pil_format:
                    raise ValueError(f"expected a {self.format.pil_format} file, got {opened.format}")
                decoded = opened.convert("RGB")
        except (OSError, SyntaxError) as error:
            raise ValueError(f"not a decodable {self.name} file: {error}") from error
        return decoded if output == "pil" else to_tensor(decoded)

    def to(self, *args: Any, **kwargs: Any) -> PillowAnchor:
        """Anchors run on the CPU; accepted so that the runner can move every codec the same way."""
        return self

    def __repr__(self) -> str:
        return f"PillowAnchor({self.name!r}, qualities={list(self.qualities)})"
