"""CADC (Sheng et al., CVPR 2026): :mod:`.model` (the codec and its modules), :mod:`.training`
(:class:`~diffcodec.codecs.cadc.training.CADCTraining`, imported on demand: it needs Lightning)."""

from diffcodec.codecs.cadc.model import *  # noqa: F403
from diffcodec.codecs.cadc.model import __all__  # noqa: F401
