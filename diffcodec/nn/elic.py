"""ELIC analysis transform g_a — StableCodec's frozen auxiliary encoder E_Aux.

StableCodec (Zhang et al., ICCV 2025, §3.3 "Dual-Branch Coding Structure") feeds the image through
the analysis transform of a pre-trained high-rate ELIC model (He et al., CVPR 2022) and concatenates
its stride-16 features with the SD-VAE latent. Architecture and weight layout: official code
and ``manifests/elic_ckpt.json`` (key ``g_a_subset_used``)::

    x ∈ [0,1] (3×H×W) ─conv5/2─► 192 ─RB×3─► conv5/2 ─RB×3─► Attn ─► conv5/2 ─RB×3─► conv5/2 ─► 320 ─Attn─►
                                                                         latent2 (320×H/16×W/16)

RB = ELIC :class:`~diffcodec.nn.blocks.ResidualBottleneck`, Attn = CompressAI
:class:`~diffcodec.nn.blocks.AttentionBlock`. The official weights live in ``elic_official.pth``,
a flat state dict of the whole ELIC model; only its ``g_a.*`` tensors (138) are used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from os import PathLike

import torch
from torch import nn

from diffcodec.files import load_checkpoint_file
from diffcodec.nn.blocks import AttentionBlock, ResidualBottleneck, conv

__all__ = ["OFFICIAL_PREFIX", "ELICAnalysisTransform"]

logger = logging.getLogger(__name__)

OFFICIAL_PREFIX = "g_a."
"""Prefix of the analysis-transform tensors inside ``elic_official.pth``."""


class ELICAnalysisTransform(nn.Module):
    """ELIC g_a (``AnalysisTransform``): 3 → N → M channels at stride 16; 7,337,792 params at N=192, M=320.

    Keys ``analysis_transform.{0..14}.*`` — the official ``g_a.*`` keys without the ``g_a.`` prefix.
    Input: an RGB batch in [0, 1] (StableCodec passes (x + 1)/2). Output: the raw features, no
    quantisation. StableCodec keeps it frozen and in eval mode (§7); the module has no normalisation
    or dropout, so train/eval mode does not change its output.
    """

    def __init__(self, N: int = 192, M: int = 320) -> None:
        super().__init__()

        def stage(in_ch: int) -> list[nn.Module]:
            return [conv(in_ch, N), *(ResidualBottleneck(N) for _ in range(3))]

        self.analysis_transform = nn.Sequential(
            *stage(3), *stage(N), AttentionBlock(N), *stage(N), conv(N, M), AttentionBlock(M)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"ELIC g_a expects an RGB batch of shape (B, 3, H, W), got {tuple(x.shape)}")
        return self.analysis_transform(x)

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
        """Load the ``g_a.*`` tensors of an ``elic_official.pth``-layout state dict (strict on g_a).

        Every g_a key must be present with the right shape (the official loader is non-strict, which
        would silently leave g_a random). Keys outside ``g_a.`` (g_s, hyper transforms,
        context models, entropy models) are ignored — their names are unverified and StableCodec never
        uses them. Returns the ignored keys.
        """
        ours = {k[len(OFFICIAL_PREFIX) :]: v for k, v in state_dict.items() if k.startswith(OFFICIAL_PREFIX)}
        ignored = [k for k in state_dict if not k.startswith(OFFICIAL_PREFIX)]
        if not ours:
            raise KeyError(
                f"no '{OFFICIAL_PREFIX}*' keys in the state dict ({len(state_dict)} keys); "
                "expected the elic_official.pth layout"
            )
        expected = self.state_dict()
        missing = sorted(OFFICIAL_PREFIX + k for k in expected.keys() - ours.keys())
        unexpected = sorted(OFFICIAL_PREFIX + k for k in ours.keys() - expected.keys())
        if missing or unexpected:
            raise KeyError(
                f"ELIC g_a key mismatch: {len(missing)} missing (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        for key, tensor in ours.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(
                    f"{OFFICIAL_PREFIX}{key}: checkpoint shape {tuple(tensor.shape)} does not match "
                    f"the model's {tuple(expected[key].shape)} (N, M differ?)"
                )
        self.load_state_dict(ours, strict=True)
        if ignored:
            logger.info("ELIC g_a: loaded %d tensors, ignored %d non-g_a keys", len(ours), len(ignored))
        return ignored

    @classmethod
    def from_official(
        cls, checkpoint: str | PathLike[str] | Mapping[str, torch.Tensor], N: int = 192, M: int = 320
    ) -> ELICAnalysisTransform:
        """Build g_a and load it from ``elic_official.pth`` (a path, read ``weights_only``) or its dict."""
        if not isinstance(checkpoint, Mapping):
            checkpoint = load_checkpoint_file(checkpoint)  # weights_only: never runs code from the file
            if not isinstance(checkpoint, Mapping):
                raise TypeError(f"expected a flat state dict in the ELIC checkpoint, got {type(checkpoint)}")
        model = cls(N, M)
        model.load_official_state_dict(checkpoint)
        return model
