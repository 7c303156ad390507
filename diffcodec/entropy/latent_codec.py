"""The latent-codec protocol: one contract for the parts of a codec that turn latents into strings and back.

CompressAI's ``LatentCodec`` is the model (``compressai.latent_codecs``): a module with

- ``forward(*inputs) -> dict`` — the differentiable training path; its ``"likelihoods"`` entry maps each
  coded latent to its element-wise likelihoods (or, for fixed-length index codes, is absent and the bits
  are counted by the codec);
- ``compress(*inputs) -> dict`` — real coding of **one** image: ``"strings"`` is a list of string lists
  (one list per coded latent, one string per image) and ``"shape"`` the grid the decoder needs;
- ``decompress(strings, shape) -> dict`` — the symmetric inverse: given exactly ``compress``'s
  ``"strings"`` and ``"shape"`` it rebuilds what the synthesis needs (``"y_hat"``, ``"z_hat"``, …), the
  same tensors the encoder conditioned on.

Implemented by the hyperprior + quadtree latent codecs of StableCodec, CADC and OneDC (Gaussian
conditional with a hyperprior, He et al. 2022 checkerboard/quadtree context), OneDC's FSQ hyper-latent and
OSCAR's VQ hyper-encoders (fixed-length index codes). A codec's ``_compress`` / ``_decompress`` put the
strings into the container; the rate a user sees is always the file size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["LatentCodec", "Strings"]

#: one list of strings per coded latent, one string per image in each
Strings = Sequence[Sequence[bytes]]


@runtime_checkable
class LatentCodec(Protocol):
    """The protocol (see the module docstring); structural: any module with these methods conforms."""

    def forward(self, *inputs: Any, **options: Any) -> dict[str, Any]:
        """Differentiable pass; ``"likelihoods"`` when the latents are entropy-coded."""
        ...

    def compress(self, *inputs: Any, **options: Any) -> dict[str, Any]:
        """``{"strings": Strings, "shape": grid, …}`` for one image."""
        ...

    def decompress(self, strings: Strings, shape: Any, **options: Any) -> dict[str, Any]:
        """The decoder's tensors from exactly :meth:`compress`'s ``strings`` and ``shape``."""
        ...
