"""StableCodec (Zhang et al., ICCV 2025): :mod:`.model` (the codec and its modules), :mod:`.training`
(:class:`~diffcodec.codecs.stablecodec.training.StableCodecTraining`, imported on demand: it needs
Lightning)."""

from diffcodec.codecs.stablecodec.model import *  # noqa: F403
from diffcodec.codecs.stablecodec.model import BASE_LICENCE, __all__  # noqa: F401
