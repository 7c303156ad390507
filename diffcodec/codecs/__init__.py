"""Codecs: the shared contract, backbone, entropy models, blocks, and one file per method."""

from diffcodec.codecs.base import BaseModelRef, Codec, CodecOutput, EncodedImage

__all__ = ["BaseModelRef", "Codec", "CodecOutput", "EncodedImage"]
