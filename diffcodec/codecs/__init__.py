"""Codecs: the shared contract, backbone, entropy models, blocks, and one file per method."""

from diffcodec.codecs.base import Codec, CodecOutput, EncodedImage

__all__ = ["Codec", "CodecOutput", "EncodedImage"]
