"""The reference codec (LatentHyperprior, the worked example of docs/contributing.md): :mod:`.model` (the
codec and its modules), :mod:`.training`
(:class:`~diffcodec.codecs.reference.training.LatentHyperpriorTraining`; it needs Lightning).

The model's names (``from diffcodec.codecs.reference import …``) are loaded on first use.
"""

from __future__ import annotations

from diffcodec.codecs import lazy_model_names

__getattr__, __dir__ = lazy_model_names(__name__)
