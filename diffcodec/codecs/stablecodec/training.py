"""Training StableCodec (Zhang et al., ICCV 2025, §3.4): :class:`StableCodecTraining` wraps a
:class:`~diffcodec.codecs.stablecodec.model.StableCodec`.

Stage 1 trains ``λ·R + 2·MSE + LPIPS_VGG + 0.1·L_CLIP`` (λ = 0.5, paper Eq. 5–6); stage 2 fine-tunes per
target λ with a DINOv2 discriminator (``+ 0.1·L_adv``, Eq. 7). Stage 2 updates the discriminator on
0.1·[BCE(D(x), 0.8) + BCE(D(x̂.detach()), 0)]; the generator pass leaves no gradient in it (the official
loop leaks one), and real and fake terms share one optimiser step per accumulation group (the official code
steps twice, which under accumulation mixes the two terms anyway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffcodec.codecs.stablecodec.model import StableCodec
from diffcodec.training.discriminators import DINOv2Discriminator
from diffcodec.training.losses import CLIPLoss, LPIPSLoss
from diffcodec.training.module import CodecTraining

__all__ = ["StableCodecTraining"]


class StableCodecTraining(CodecTraining):
    """Stage 1 (base training) or stage 2 (per-λ fine-tuning with the DINOv2 discriminator).

    The rate weight λ is the codec's active rung's (``codec.lambdas[codec.quality]``).

    Args:
        codec: the StableCodec (or CADC) to train.
        stage: 1 or 2. learning_rate, weight_decay, gradient_clip, accumulate_grad_batches, channels_last,
            compile: see
            :class:`~diffcodec.training.module.CodecTraining`.
        mse_weight (2), lpips_weight (1), clip_weight (0.1): the distortion D.
        adversarial_weight (0.1), adversarial_target (0.8), discriminator_learning_rate: stage 2's GAN.
        clip_model / discriminator_model: hub id, folder, or a config dict for a random-init model.
        diffaugment: the discriminator's DiffAugment policy.
    """

    def __init__(
        self,
        codec: StableCodec,
        *,
        stage: int = 1,
        mse_weight: float = 2.0,
        lpips_weight: float = 1.0,
        clip_weight: float = 0.1,
        adversarial_weight: float = 0.1,
        adversarial_target: float = 0.8,
        learning_rate: float = 1e-4,
        discriminator_learning_rate: float = 2e-5,
        weight_decay: float = 1e-2,
        gradient_clip: float = 1.0,
        accumulate_grad_batches: int = 1,
        channels_last: bool = False,
        compile: bool = False,
        clip_model: str | Mapping[str, Any] | None = "openai/clip-vit-base-patch32",
        discriminator_model: str | Mapping[str, Any] | None = "facebook/dinov2-with-registers-base",
        diffaugment: str = "color,translation,cutout",
    ) -> None:
        super().__init__(
            codec, stage=stage, learning_rate=learning_rate, weight_decay=weight_decay,
            gradient_clip=gradient_clip, accumulate_grad_batches=accumulate_grad_batches,
            channels_last=channels_last, compile=compile,
        )  # fmt: skip
        self._losses: dict[str, nn.Module] = {}  # LPIPS / CLIP, built on first use, not in the state dict
        self.discriminator: DINOv2Discriminator | None = None
        if stage == 2 and adversarial_weight > 0:
            self.discriminator = DINOv2Discriminator(discriminator_model, policy=diffaugment)

    def steps_several_optimizers(self) -> bool:
        """Stage 2 alternates generator and discriminator steps."""
        return self.discriminator is not None

    def _loss_network(self, name: str) -> nn.Module:
        if name not in self._losses:
            hp = self.hparams
            self._losses[name] = LPIPSLoss("vgg") if name == "lpips" else CLIPLoss(hp.clip_model)
        return self._losses[name].to(self.device)

    def codec_output(self, x: Tensor) -> Any:
        """The codec's training path for this stage (a hook: CADC captions only in stage 2)."""
        return self.codec(x)

    def generator_terms(self, x: Tensor) -> dict[str, Tensor]:
        """λ·R + D (+ β·L_adv in stage 2) on x ∈ [0, 1] at the active rung (paper Eq. 5–7).

        R = bpp_y + bpp_z from the noisy likelihoods over the batch's pixel count; D = 2·MSE + LPIPS_VGG +
        0.1·L_CLIP on images in [−1, 1]; L_adv = BCE(D(x̂), 0.8) (the official generator target).
        """
        hp = self.hparams
        out = self.codec_output(x)
        ref, rec = x * 2 - 1, out.x_hat * 2 - 1
        terms = {"bpp": out.bpp(x.shape[-2] * x.shape[-1]).mean(), "mse": F.mse_loss(rec, ref)}
        weights = {"bpp": self.codec.lambdas[self.codec.quality], "mse": hp.mse_weight}
        for key in ("lpips", "clip"):
            if hp[f"{key}_weight"]:
                terms[key], weights[key] = self._loss_network(key)(rec, ref), hp[f"{key}_weight"]
        terms.update(self.extra_terms(out, ref, weights))
        if self.stage == 2 and self.discriminator is not None:
            terms["adversarial"] = self.discriminator.loss(self.discriminator(rec), hp.adversarial_target)
            weights["adversarial"] = hp.adversarial_weight
        terms["loss"] = sum(weights[key] * terms[key] for key in weights)
        terms["x_hat"] = out.x_hat
        return terms

    def extra_terms(self, out: Any, ref: Tensor, weights: dict[str, float]) -> dict[str, Tensor]:
        """Further loss terms of a derived method (their weights go into ``weights``); none here."""
        return {}

    def training_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        """One micro-batch of stage 1 or 2 with gradient accumulation (see the module docstring)."""
        hp = self.hparams
        x = self.images(batch)
        if self.discriminator is None:  # one optimiser: automatic optimisation
            terms = self.generator_terms(x)
            self.log_terms(terms, prog_bar=False)
            return self.optimize(terms["loss"], batch_idx)
        opt_g, opt_d = self.optimizer_pair()
        with self.toggled(opt_g):  # discriminator parameters: no generator gradients
            terms = self.generator_terms(x)
            self.update(opt_g, terms["loss"], batch_idx)
        logs = dict(terms)
        if opt_d is not None:
            with self.toggled(opt_d):
                real = self.discriminator.loss(self.discriminator(x * 2 - 1), hp.adversarial_target)
                fake = self.discriminator.loss(self.discriminator(terms["x_hat"].detach() * 2 - 1), 0.0)
                self.update(opt_d, hp.adversarial_weight * (real + fake), batch_idx)
            logs |= {"d_real": real, "d_fake": fake}
        self.log_terms(logs, prog_bar=False)
        return terms["loss"].detach()

    def validation_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> None:
        """Forward pass in eval mode: likelihood bpp (rounded latents) and PSNR of the active rung."""
        x = self.images(batch)
        out = self.codec_output(x)
        mse = F.mse_loss(out.x_hat.clamp(0, 1), x)
        logs = {"bpp": out.bpp(x.shape[-2] * x.shape[-1]).mean(), "psnr": -10 * torch.log10(mse)}
        self.log_terms(logs, prefix="val/", sync_dist=True)

    def configure_optimizers(self) -> Any:
        """AdamW (0.9, 0.999), eps 1e-8, weight decay 1e-2 over the latent codec, the U-Net LoRA + conv_in
        and the VAE-encoder LoRA; stage 2 adds the discriminator heads' AdamW."""
        hp = self.hparams
        params = [*self.codec.latent_codec.parameters(), *self.codec.backbone.trainable_parameters()]
        generator = self.adamw(params, hp.learning_rate, betas=(0.9, 0.999), eps=1e-8)
        if self.discriminator is None:
            return generator
        heads = self.adamw(
            self.discriminator.parameters(), hp.discriminator_learning_rate, betas=(0.9, 0.999), eps=1e-8
        )
        return [generator, heads]
