"""Entropy models and real entropy coding.

- :class:`EntropyBottleneck` — factorized prior (Ballé et al. 2018), CompressAI-compatible.
- :class:`GaussianConditional`, :func:`get_scale_table` — conditional Gaussian with a quantised scale table.
- :class:`SymbolEncoder` / :class:`SymbolDecoder` — multi-call streams over constriction's range coder, driven
  by integer :class:`CdfTable`\\ s (``module.cdf_table()``); used by both modules and by context models.
- :func:`pmf_to_quantized_cdf` — CompressAI-exact 16-bit CDF quantisation.
- :class:`LowerBound`, :func:`ste_round` — the autograd helpers.

See ``docs/entropy.md`` for the stream format and the determinism rules.
"""

from diffcodec.entropy.coder import SymbolDecoder, SymbolEncoder, decode_symbols, encode_symbols
from diffcodec.entropy.entropy_model import EntropyModel
from diffcodec.entropy.factorized import EntropyBottleneck
from diffcodec.entropy.gaussian import GaussianConditional, get_scale_table
from diffcodec.entropy.ops import LowerBound, ste_round
from diffcodec.entropy.tables import CdfTable, pmf_to_quantized_cdf

__all__ = [
    "CdfTable",
    "EntropyBottleneck",
    "EntropyModel",
    "GaussianConditional",
    "LowerBound",
    "SymbolDecoder",
    "SymbolEncoder",
    "decode_symbols",
    "encode_symbols",
    "get_scale_table",
    "pmf_to_quantized_cdf",
    "ste_round",
]
