"""OSCAR (Guo et al., NeurIPS 2025): :mod:`.model` (the codec and its modules), :mod:`.training`
(:class:`~diffcodec.codecs.oscar.training.OSCARTraining`, imported on demand: it needs Lightning)."""

from diffcodec.codecs.oscar.model import *  # noqa: F403
from diffcodec.codecs.oscar.model import (  # noqa: F401  (names used by the converter and tests)
    ADAPTER_GROUPS,
    BASE_LICENCE,
    BASE_MODEL,
    __all__,
    adapter_name,
)
