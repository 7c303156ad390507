"""diffcodec: one-step diffusion image codecs (OSCAR, OneDC, StableCodec, CADC).

import diffcodec
codec = diffcodec.load("NAME", quality=0)
stream = codec.compress("photo.png")
image = codec.decompress(stream)
"""

from diffcodec.bitstream import Bitstream
from diffcodec.errors import (
    CheckpointError,
    DecodeError,
    DiffcodecError,
    MissingWeightsError,
)
from diffcodec.version import __version__
from diffcodec.zoo import list_models, load

__all__ = [
    "Bitstream",
    "CheckpointError",
    "DecodeError",
    "DiffcodecError",
    "MissingWeightsError",
    "__version__",
    "list_models",
    "load",
]
