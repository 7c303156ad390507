"""CADC (Sheng et al., CVPR 2026): :mod:`.model` (the codec and its modules), :mod:`.training`
(:class:`~diffcodec.codecs.cadc.training.CADCTraining`; it needs Lightning) and :mod:`.zoo` (its zoo
entries).

The model's names (``from diffcodec.codecs.cadc import …``) are loaded on first use.
"""

from __future__ import annotations

from diffcodec.codecs import lazy_model_names
from diffcodec.codecs.cadc import zoo as zoo  # registers the zoo entries (no torch)

__getattr__, __dir__ = lazy_model_names(__name__)
