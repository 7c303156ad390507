"""Training OneDC (Xue et al., NeurIPS 2025, §3.3–§3.4): :class:`OneDCTraining` wraps a
:class:`~diffcodec.codecs.onedc.model.OneDC`.

- Stage 1 (codec + U-Net LoRA + conv_in + vae_reduction): L1 + LPIPS + λ_step·bpp_y (paper Eq. 1, with the
  official quadratic λ warm-up λ_step = λ₀ + (step/S)²·(λ − λ₀)) + the semantic-distillation code loss
  code_weight·(CE + 0.01·MSE) against a VQGAN tokenizer's codes (:mod:`diffcodec.codecs.onedc.losses`).
- Stage 2 (DMD2 distillation, the codec frozen; paper §3.4, Yin et al. 2024 "Improved Distribution
  Matching Distillation"): the generator turn every ``generator_update_every`` optimiser steps
  (L_dm + 1e-3·L_gen + 0.625·(L1 + LPIPS)), the guidance turn (fake score + 1e-2·GAN head) every step.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from torch import Tensor, nn

from diffcodec.codecs.onedc.losses import (
    CodePredictor,
    LPIPSAvgPool,
    VQGANTokenizer,
    code_prediction_loss,
    tokenizer_input,
)
from diffcodec.codecs.onedc.model import OneDC, eval_bpp_estimate, small_backbone_config, train_bpp
from diffcodec.nn.backbone import encode_text, load_component, reference_configs
from diffcodec.training.dmd import DMDGuidance, expand_embedding
from diffcodec.training.module import CodecTraining

__all__ = ["OneDCTraining"]


class OneDCTraining(CodecTraining):
    """Stage 1 or stage 2 of a :class:`~diffcodec.codecs.onedc.model.OneDC` (see the module docstring).

    Args:
        codec: the OneDC to train (its active rung; λ is ``codec.lambdas[codec.quality]``).
        stage: 1 or 2. learning_rate (5e-5 stage 1, 1e-6 stage 2), weight_decay (1e-2), gradient_clip
            (5.0), accumulate_grad_batches, channels_last, compile: see
            :class:`~diffcodec.training.module.CodecTraining`.
        Stage 1: l1_weight, lpips_weight (1, 1), rate_warmup_steps / rate_warmup_start (4000, 1e-4),
            code_weight (1e-3), code_mse_weight (0.01), tokenizer (a
            :class:`~diffcodec.codecs.onedc.losses.VQGANTokenizer` config; None disables the code loss),
            code_predictor (:class:`~diffcodec.codecs.onedc.losses.CodePredictor` options).
        Stage 2: teacher_model / teacher_revision (SD-1.5 repo or folder for the real and fake scores and the
            CLIP text encoder; None: random-init teachers of the codec's U-Net architecture), teacher_prompt
            (the caption the teachers see; official: per-image BLIP-2 captions), real_guidance_scale
            (1.75), dm_weight (1), gan_weight (1e-3), recon_weight (0.625), guidance_gan_weight (1e-2),
            generator_update_every (10), guidance_learning_rate (1e-6).
    """

    def __init__(
        self,
        codec: OneDC,
        *,
        stage: int = 1,
        l1_weight: float = 1.0,
        lpips_weight: float = 1.0,
        rate_warmup_steps: int = 4000,
        rate_warmup_start: float = 1e-4,
        code_weight: float = 1e-3,
        code_mse_weight: float = 0.01,
        tokenizer: Mapping[str, Any] | None = None,
        code_predictor: Mapping[str, Any] | None = None,
        teacher_model: str | None = None,
        teacher_revision: str | None = None,
        teacher_prompt: str = "",
        real_guidance_scale: float = 1.75,
        dm_weight: float = 1.0,
        gan_weight: float = 1e-3,
        recon_weight: float = 0.625,
        guidance_gan_weight: float = 1e-2,
        generator_update_every: int = 10,
        learning_rate: float = 5e-5,
        guidance_learning_rate: float = 1e-6,
        weight_decay: float = 1e-2,
        gradient_clip: float = 5.0,
        accumulate_grad_batches: int = 1,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        if generator_update_every < 1:
            raise ValueError(f"generator_update_every must be >= 1, got {generator_update_every}")
        super().__init__(
            codec, stage=stage, learning_rate=learning_rate, weight_decay=weight_decay,
            gradient_clip=gradient_clip, accumulate_grad_batches=accumulate_grad_batches,
            channels_last=channels_last, compile=compile,
        )  # fmt: skip
        self.rate_weight: float | None = None  # λ_step when a schedule sets it; None: computed per step
        self._losses: dict[str, nn.Module] = {}  # LPIPS, built on first use, not in the state dict
        self.tokenizer = self.code_predictor = self.guidance = None
        if stage == 1 and tokenizer is not None and code_weight > 0:
            self.tokenizer = VQGANTokenizer(**dict(tokenizer))
            self.code_predictor = CodePredictor(
                codec.latent_codec.semantic_channels,
                self.tokenizer.codebook.shape[0],
                **dict(code_predictor or {}),
            )
        if stage == 2:
            codec.latent_codec.requires_grad_(False)
            self._build_guidance(teacher_model, teacher_revision, teacher_prompt, real_guidance_scale)

    def steps_several_optimizers(self) -> bool:
        """Stage 2 alternates the generator and the guidance (DMD2)."""
        return self.stage == 2

    def _build_guidance(
        self, teacher: str | None, revision: str | None, prompt: str, guidance_scale: float
    ) -> None:
        """Stage 2's real and fake scores (SD-1.5), the GAN head and the teachers' text embeddings."""
        scheduler = reference_configs("sd-1.5")["scheduler_config"]
        if teacher is not None:
            from transformers import AutoTokenizer, CLIPTextModel

            def load(loader: Any, sub: str) -> Any:
                return load_component(loader, teacher, sub, revision=revision)

            real = load(UNet2DConditionModel.from_pretrained, "unet")
            fake = load(UNet2DConditionModel.from_pretrained, "unet")
            tokenizer = load(AutoTokenizer.from_pretrained, "tokenizer")
            text_encoder = load(CLIPTextModel.from_pretrained, "text_encoder")
            text, uncond = encode_text(tokenizer, text_encoder, [prompt, ""]).chunk(2)
        else:  # random-init teachers of the backbone's U-Net architecture (tests, CPU recipes)
            backbone = self.codec.hparams.backbone
            configs = dict(backbone or small_backbone_config(self.codec.latent_codec.semantic_channels))
            real = UNet2DConditionModel.from_config(configs["unet_config"])
            fake = copy.deepcopy(real)
            generator = torch.Generator().manual_seed(0)
            dim = real.config.cross_attention_dim
            text, uncond = torch.randn(2, 1, 8, dim, generator=generator)
        self.guidance = DMDGuidance(real, fake, scheduler, real_guidance_scale=guidance_scale)
        self.register_buffer("teacher_text", text.detach(), persistent=False)
        self.register_buffer("teacher_uncond", uncond.detach(), persistent=False)

    # ------------------------------------------------------------------ losses
    def lpips(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """LPIPS-VGG with average pooling on [0, 1] images (built on first use, not in the state dict)."""
        if "lpips" not in self._losses:
            self._losses["lpips"] = LPIPSAvgPool()
        return self._losses["lpips"].to(x.device)(x_hat, x)

    def rate_lambda(self, step: int | None) -> float:
        """λ_step = λ₀ + (step/S)²·(λ − λ₀) for 0 < step ≤ S, else λ (at step 0 the final λ, as the official
        ``if step and …`` test). A :class:`~diffcodec.training.HyperparameterSchedule` may set
        ``rate_weight`` instead."""
        if self.rate_weight is not None:
            return float(self.rate_weight)
        hp, final = self.hparams, self.codec.lambdas[self.codec.quality]
        if step and step <= hp.rate_warmup_steps:
            return hp.rate_warmup_start + (step / hp.rate_warmup_steps) ** 2 * (final - hp.rate_warmup_start)
        return final

    def reconstruction_terms(self, x_hat: Tensor, x: Tensor) -> dict[str, Tensor]:
        """L1 + LPIPS on [0, 1] images (weights ``l1_weight`` / ``lpips_weight``)."""
        hp = self.hparams
        terms = {"l1": F.l1_loss(x_hat, x)}
        recon = hp.l1_weight * terms["l1"]
        if hp.lpips_weight:
            terms["lpips"] = self.lpips(x_hat, x)
            recon = recon + hp.lpips_weight * terms["lpips"]
        terms["recon"] = recon
        return terms

    def stage1_terms(self, x: Tensor, step: int | None = None) -> dict[str, Tensor]:
        """L1 + LPIPS + λ_step·bpp_y + code_weight·(CE + 0.01·MSE) (paper Eq. 1)."""
        hp = self.hparams
        out = self.codec(x)
        terms = self.reconstruction_terms(out.x_hat, x)
        num_pixels = x.shape[-2] * x.shape[-1]
        loss = terms["recon"]
        if "y" in out.likelihoods:
            terms["bpp_y"] = train_bpp(out.likelihoods["y"], num_pixels).mean()
            terms["lambda"] = torch.tensor(self.rate_lambda(step))
            loss = loss + terms["lambda"] * terms["bpp_y"]
        if self.code_predictor is not None:
            z_q, indices = self.tokenizer.tokenize(tokenizer_input(x))
            logits = self.code_predictor(out.aux["y_semantic"])
            terms.update(
                code_prediction_loss(logits, indices, z_q, self.tokenizer.codebook, hp.code_mse_weight)
            )
            loss = loss + hp.code_weight * terms["code"]
        terms["loss"] = loss
        return terms

    def stage2_step(self, x: Tensor, step: int, batch_idx: int) -> dict[str, Tensor]:
        """One DMD2 iteration: the generator turn when ``step`` % ``generator_update_every`` = 0
        (L_dm + 1e-3·L_gen + 0.625·(L1 + LPIPS)), then the guidance turn (L_fake + 1e-2·L_D)."""
        hp = self.hparams
        codec, guidance = self.codec, self.guidance
        opt_g, opt_d = self.optimizer_pair()
        with torch.no_grad():  # the codec is frozen
            cond = codec.encode_latent(x)
            out = codec.latent_codec(x * 2 - 1, cond, z_only=codec.z_only[codec.quality])
        batch = x.shape[0]
        text = expand_embedding(self.teacher_text, batch)
        uncond = expand_embedding(self.teacher_uncond, batch)
        logs: dict[str, Tensor] = {}
        generator_turn = step % hp.generator_update_every == 0
        with torch.set_grad_enabled(generator_turn):
            x0 = codec.generate(out["ctrl"], out["tokens"])
        if generator_turn:
            with self.toggled(opt_g):  # gradients reach the generator only
                logs["dm"] = guidance.distribution_matching_loss(x0, text, uncond)
                logs["gen_gan"] = guidance.generator_gan_loss(x0, text)
                logs.update(self.reconstruction_terms(codec.render(x0, clamp=False), x))
                loss = (
                    hp.dm_weight * logs["dm"]
                    + hp.gan_weight * logs["gen_gan"]
                    + hp.recon_weight * logs["recon"]
                )
                self.update(opt_g, loss, batch_idx)
            logs["generator_loss"] = loss
        with self.toggled(opt_d):
            logs["fake_score"] = guidance.fake_score_loss(x0, text, uncond)
            logs["discriminator"] = guidance.discriminator_loss(cond, x0, text)
            self.update(opt_d, logs["fake_score"] + hp.guidance_gan_weight * logs["discriminator"], batch_idx)
        return logs

    # ------------------------------------------------------------------ Lightning
    def training_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        x = self.images(batch)
        step = self.optimizer_step_count
        if self.stage == 1:  # one optimiser: automatic optimisation
            terms = self.stage1_terms(x, step)
            self.log_terms(terms)
            return self.optimize(terms["loss"], batch_idx)
        terms = self.stage2_step(x, step, batch_idx)
        self.log_terms(terms)
        return terms["fake_score"].detach()

    def validation_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> None:
        """Eval-mode forward: the official bpp estimate of y (+ z) and PSNR of the active rung."""
        x = self.images(batch)
        out = self.codec(x)
        num_pixels = x.shape[-2] * x.shape[-1]
        bpp = out.rate_bits["z"] / num_pixels
        if "y" in out.likelihoods:
            symbols = torch.round(out.aux["y"] - out.aux["means"])
            bpp = bpp + eval_bpp_estimate(symbols, out.aux["scales"], num_pixels)
        mse = F.mse_loss(out.x_hat.clamp(0, 1), x)
        self.log_terms({"bpp": bpp.mean(), "psnr": -10 * torch.log10(mse)}, prefix="val/", sync_dist=True)

    def configure_optimizers(self) -> Any:
        """AdamW (0.9, 0.999), weight decay 0.01. Stage 1: codec + LoRA + conv_in + vae_reduction + code
        predictor. Stage 2: the generator (LoRA, conv_in, vae_reduction) and the guidance (fake U-Net + GAN
        head). Learning-rate warm-up: a recipe callback (``LinearWarmup``, 500 steps)."""
        hp = self.hparams
        codec = self.codec
        generator = [*codec.backbone.trainable_parameters(), *codec.vae_reduction.parameters()]
        if self.stage == 1:
            generator += [*codec.latent_codec.parameters()]
            if self.code_predictor is not None:
                generator += [*self.code_predictor.parameters()]
            return self.adamw(generator, hp.learning_rate, betas=(0.9, 0.999))
        return [
            self.adamw(generator, hp.learning_rate, betas=(0.9, 0.999)),
            self.adamw(self.guidance.guidance_parameters(), hp.guidance_learning_rate, betas=(0.9, 0.999)),
        ]
