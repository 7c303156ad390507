"""Training CADC (Sheng et al., CVPR 2026, §3.5, Eq. 15–16): StableCodec's two stages plus the ADGIC
auxiliary-image loss. Stage 1 conditions the U-Net on the fixed prompt only; stage 2 captions x̂_aux on the
fly (no gradient through BLIP) and adds d₄·L_aux = d₄·MSE(g_aux(l_T[:, 0:4]), x) and the adversarial term.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor

from diffcodec.codecs.base import CodecOutput
from diffcodec.codecs.cadc.model import CADC
from diffcodec.codecs.stablecodec.training import StableCodecTraining

__all__ = ["CADCTraining"]


class CADCTraining(StableCodecTraining):
    """λ·R + d₁·MSE + d₂·LPIPS_VGG + d₃·L_CLIP, + d₄·L_aux + d₅·L_adv in stage 2 (paper Eq. 15–16).

    Args: those of :class:`~diffcodec.codecs.stablecodec.training.StableCodecTraining` (same defaults),
        and aux_weight: d₄ of L_aux = MSE(x̂_aux, x) on [−1, 1], stage 2 only (1.0).
    """

    def __init__(self, codec: CADC, *, aux_weight: float = 1.0, **kwargs: Any) -> None:
        super().__init__(codec, **kwargs)

    def codec_output(self, x: Tensor) -> CodecOutput:
        """Stage 1 conditions on the fixed prompt only; stage 2 on the caption of x̂_aux too (§3.5)."""
        return self.codec(x, captions=self.stage != 1)

    def extra_terms(self, out: CodecOutput, ref: Tensor, weights: dict[str, float]) -> dict[str, Tensor]:
        """L_aux (ADGIC, stage 2 only, when the codec has g_aux and ``aux_weight`` is set)."""
        if self.stage != 2 or out.aux["x_aux"] is None or not self.hparams.aux_weight:
            return {}
        weights["aux"] = self.hparams.aux_weight
        return {"aux": F.mse_loss(out.aux["x_aux"], ref)}
