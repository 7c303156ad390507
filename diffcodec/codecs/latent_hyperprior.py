"""Compatibility alias: the reference codec lives in :mod:`diffcodec.codecs.reference` (saved folders and
user code name ``diffcodec.codecs.latent_hyperprior:LatentHyperprior``)."""

from diffcodec.codecs.reference.model import LatentHyperprior, tiny_backbone

__all__ = ["LatentHyperprior", "tiny_backbone"]
