"""OneDC (Xue et al., NeurIPS 2025): :mod:`.model` (the codec and its modules), :mod:`.training`
(:class:`~diffcodec.codecs.onedc.training.OneDCTraining`, imported on demand: it needs Lightning)."""

from diffcodec.codecs.onedc.model import *  # noqa: F403
from diffcodec.codecs.onedc.model import (  # noqa: F401  (names used by the converter and tests)
    DMD2_REPO,
    EXLOW_RATE,
    SD21_REPO,
    __all__,
)
