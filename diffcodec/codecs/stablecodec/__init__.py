"""StableCodec (Zhang et al., ICCV 2025): :mod:`.model` (the codec and its modules), :mod:`.convert` (the
official-checkpoint converter), :mod:`.training`
(:class:`~diffcodec.codecs.stablecodec.training.StableCodecTraining`; it needs Lightning) and :mod:`.zoo`
(its zoo entries).

The model's names (``from diffcodec.codecs.stablecodec import …``) are loaded on first use.
"""

from __future__ import annotations

from diffcodec.codecs import lazy_model_names
from diffcodec.codecs.stablecodec import zoo as zoo  # registers the zoo entries (no torch)

__getattr__, __dir__ = lazy_model_names(__name__)
