"""OneDC (Xue et al., NeurIPS 2025): :mod:`.model` (the codec and its modules), :mod:`.convert` (the
official-checkpoint converter), :mod:`.training` (:class:`~diffcodec.codecs.onedc.training.OneDCTraining`;
it needs Lightning) and :mod:`.zoo` (its zoo entries).

The model's names (``from diffcodec.codecs.onedc import …``) are loaded on first use.
"""

from __future__ import annotations

from diffcodec.codecs import lazy_model_names
from diffcodec.codecs.onedc import zoo as zoo  # registers the zoo entries (no torch)

__getattr__, __dir__ = lazy_model_names(__name__)
