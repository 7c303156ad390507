"""Training CADC (Sheng et al., CVPR 2026, §3.5, Eq. 15–16): StableCodec's two stages plus the ADGIC
auxiliary-image loss. Stage 1 conditions the U-Net on the fixed prompt only; stage 2 captions x̂_aux on the
fly (no gradient through BLIP) and adds d₄·L_aux = d₄·MSE(g_aux(l_T[:, 0:4]), x) and the adversarial term.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from diffcodec.codecs.base import CodecOutput
from diffcodec.codecs.cadc.model import CADC
from diffcodec.codecs.stablecodec.training import StableCodecTraining

__all__ = ["CADCTraining"]


class CADCTraining(StableCodecTraining):
    """λ·R + d₁·MSE + d₂·LPIPS_VGG + d₃·L_CLIP, + d₄·L_aux + d₅·L_adv in stage 2 (paper Eq. 15–16).

    Args: those of :class:`~diffcodec.codecs.stablecodec.training.StableCodecTraining`, and
        aux_weight: d₄ of L_aux = MSE(x̂_aux, x) on [−1, 1], stage 2 only (1.0).
    """

    def __init__(
        self,
        codec: CADC,
        *,
        stage: int = 1,
        mse_weight: float = 2.0,
        lpips_weight: float = 1.0,
        clip_weight: float = 0.1,
        aux_weight: float = 1.0,
        adversarial_weight: float = 0.1,
        adversarial_target: float = 0.8,
        learning_rate: float = 1e-4,
        discriminator_learning_rate: float = 2e-5,
        weight_decay: float = 1e-2,
        gradient_clip: float = 1.0,
        accumulate_grad_batches: int = 1,
        clip_model: str | Mapping[str, Any] | None = "openai/clip-vit-base-patch32",
        discriminator_model: str | Mapping[str, Any] | None = "facebook/dinov2-with-registers-base",
        diffaugment: str = "color,translation,cutout",
    ) -> None:
        super().__init__(
            codec, stage=stage, mse_weight=mse_weight, lpips_weight=lpips_weight, clip_weight=clip_weight,
            adversarial_weight=adversarial_weight, adversarial_target=adversarial_target,
            learning_rate=learning_rate, discriminator_learning_rate=discriminator_learning_rate,
            weight_decay=weight_decay, gradient_clip=gradient_clip,
            accumulate_grad_batches=accumulate_grad_batches, clip_model=clip_model,
            discriminator_model=discriminator_model, diffaugment=diffaugment,
        )  # fmt: skip

    def codec_output(self, x: Tensor) -> CodecOutput:
        """Stage 1 conditions on the fixed prompt only; stage 2 on the caption of x̂_aux too (§3.5)."""
        return self.codec(x, captions=self.stage != 1)

    def extra_terms(self, out: CodecOutput, ref: Tensor, weights: dict[str, float]) -> dict[str, Tensor]:
        """L_aux (ADGIC, stage 2 only, when the codec has g_aux and ``aux_weight`` is set)."""
        if self.stage != 2 or out.aux["x_aux"] is None or not self.hparams.aux_weight:
            return {}
        weights["aux"] = self.hparams.aux_weight
        return {"aux": F.mse_loss(out.aux["x_aux"], ref)}
