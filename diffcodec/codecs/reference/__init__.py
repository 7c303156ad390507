"""The reference codec (LatentHyperprior): :mod:`.model` (the codec), :mod:`.training`
(:class:`~diffcodec.codecs.reference.training.LatentHyperpriorTraining`, imported on demand)."""

from diffcodec.codecs.reference.model import LatentHyperprior, tiny_backbone

__all__ = ["LatentHyperprior", "tiny_backbone"]
