"""Training OSCAR (Guo et al., NeurIPS 2025, §3.3–§4.1): :class:`OSCARTraining` wraps an :class:`OSCAR`.

It follows the paper where the official code departs from it, keeping the official behaviour reachable
by configuration:

- stage 1 trains all hyper-encoders *in parallel* (paper §4.1; the official code runs one job per rate —
  the same maths, gradients are clipped per hyper-encoder as in separate runs): L_sim (Eq. 6) + L_VQ
  commitment (Eq. 7–8; ``commitment_weight=0`` is the official code, which discards it);
- stage 2 (Eq. 14–16): a random rung per step, L_repa + λ₁·(L₂ + DISTS + EA-DISTS) + λ₂·L_G, with a latent
  discriminator (:class:`~diffcodec.training.discriminators.LatentDiscriminator`) whose generator loss has
  gradients (the official code wraps the discriminator in ``no_grad``, which makes L_G inert:
  ``gan_weight=0`` reproduces it). The official L1 pixel loss, stage-2 per-channel cosine with weight 2 and
  AdamW weight decay 1e-2 are options (``pixel_loss="l1"``, ``latent_cosine_axis="channel"``,
  ``latent_cosine_weight=2``, ``weight_decay``).
- The U-Net's ``conv_in`` base weights stay frozen (only its LoRA trains), as in the official code and the
  paper ("we apply LoRA").
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from diffcodec.codecs.oscar.model import OSCAR, HyperEncoderOutput, channel_norms
from diffcodec.training import losses
from diffcodec.training.discriminators import LatentDiscriminator
from diffcodec.training.module import CodecTraining

__all__ = ["OSCARTraining"]

PixelLossKind = Literal["mse", "l1"]
CosineAxis = Literal["position", "channel"]


def base_unet_copy(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """A copy of the U-Net without the codec's LoRA adapters: the base weights only."""
    clean = UNet2DConditionModel.from_config(unet.config)
    state = {k.replace(".base_layer.", "."): v for k, v in unet.state_dict().items() if ".lora_" not in k}
    clean.load_state_dict(state)
    return clean.to(next(unet.parameters()).device)


class OSCARTraining(CodecTraining):
    """Stage 1 (representation alignment) or stage 2 (unified fine-tuning) of an :class:`OSCAR`.

    Args:
        codec: the OSCAR to train.
        stage: 1 or 2. learning_rate, weight_decay, gradient_clip, accumulate_grad_batches, channels_last,
            compile: see
            :class:`~diffcodec.training.module.CodecTraining`.
        pixel_loss, dists_weight, edge_dists_weight, latent_cosine_weight, latent_cosine_axis,
            commitment_weight: the stage-2 loss (λ₁ terms) and L_repa.
        gan_weight (λ₂), discriminator_weight, gan_loss, discriminator_learning_rate: the latent GAN
            (stage 2; ``gan_weight=0`` builds no discriminator).
        rung_seed: seeds stage 2's per-step rung draw (the same on every rank).
    """

    def __init__(
        self,
        codec: OSCAR,
        *,
        stage: int = 1,
        pixel_loss: PixelLossKind = "mse",
        dists_weight: float = 1.0,
        edge_dists_weight: float = 1.0,
        latent_cosine_weight: float = 1.0,
        latent_cosine_axis: CosineAxis = "position",
        commitment_weight: float = 1.0,
        gan_weight: float = 5e-3,
        discriminator_weight: float = 1.0,
        gan_loss: losses.GanLoss = "non-saturating",
        learning_rate: float = 5e-5,
        weight_decay: float = 1e-5,
        discriminator_learning_rate: float = 5e-5,
        gradient_clip: float = 1.0,
        accumulate_grad_batches: int = 1,
        channels_last: bool = False,
        compile: bool = False,
        rung_seed: int = 123,
    ) -> None:
        super().__init__(
            codec, stage=stage, learning_rate=learning_rate, weight_decay=weight_decay,
            gradient_clip=gradient_clip, accumulate_grad_batches=accumulate_grad_batches,
            channels_last=channels_last, compile=compile,
        )  # fmt: skip
        self.discriminator: LatentDiscriminator | None = None
        if stage == 2 and gan_weight > 0:  # a clean copy of the base U-Net, without the codec's adapters
            hp = codec.hparams
            self.discriminator = LatentDiscriminator(
                base_unet_copy(codec.backbone.unet), lora_rank=hp.lora_rank, lora_alpha=hp.lora_alpha,
                embedding_length=hp.embedding_length,
            )  # fmt: skip
        self._loss_networks: dict[str, nn.Module] = {}  # DISTS, built on first use; not in the state dict

    def steps_several_optimizers(self) -> bool:
        """Stage 2 with the latent GAN alternates generator and discriminator steps."""
        return self.discriminator is not None

    # ------------------------------------------------------------------ losses
    def _draw_rung(self) -> int:
        """Stage 2's rung for this step: uniform, the same on every rank (seeded by the global step)."""
        return random.Random(self.hparams.rung_seed * 1_000_003 + self.global_step).randrange(
            self.codec.num_rungs
        )

    def alignment_loss(self, z0: torch.Tensor, out: HyperEncoderOutput) -> dict[str, torch.Tensor]:
        """L_repa = L_sim (Eq. 6, ``latent_cosine_axis``) + commitment (Eq. 7–8), unweighted terms."""
        cosine = losses.latent_cosine_similarity(z0, out.z_hat, self.hparams.latent_cosine_axis).mean()
        return {"cosine": cosine, "commit": out.commit_loss}

    def generator_terms(self, x: torch.Tensor, rung: int) -> dict[str, torch.Tensor]:
        """Stage-2 losses at ``rung`` (paper Eq. 14–15) and their weighted sum ``loss``."""
        hp = self.hparams
        out = self.codec(x, rung=rung)
        aux = out.aux
        align = self.alignment_loss(
            aux["z0"], HyperEncoderOutput(aux["z_hat"], aux["indices"], aux["commit_loss"])
        )
        terms = {"pixel": losses.pixel_loss(out.x_hat, x, hp.pixel_loss), **align}
        loss = (
            terms["pixel"]
            - hp.latent_cosine_weight * align["cosine"]
            + hp.commitment_weight * align["commit"]
        )
        if hp.dists_weight or hp.edge_dists_weight:
            if "dists" not in self._loss_networks:
                self._loss_networks["dists"] = losses.DISTSLoss()
            dists = self._loss_networks["dists"].to(x.device)
            if hp.dists_weight:
                terms["dists"] = dists(out.x_hat, x)
                loss = loss + hp.dists_weight * terms["dists"]
            if hp.edge_dists_weight:
                terms["edge_dists"] = dists.edge_aware(out.x_hat, x)
                loss = loss + hp.edge_dists_weight * terms["edge_dists"]
        if self.discriminator is not None:
            logits = self.discriminator(*self._noised(aux["x0"]))
            terms["gan"] = losses.generator_loss(logits, hp.gan_loss)
            loss = loss + hp.gan_weight * terms["gan"]
        terms["loss"] = loss
        terms["x0"] = aux["x0"]
        terms["z0"] = aux["z0"]
        return terms

    def _noised(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A latent noised at t ~ U{20, …, 979} (official ``discriminator.py``), and t."""
        steps = torch.randint(20, 980, (latent.shape[0],), device=latent.device)
        return self.codec.backbone.add_noise(latent, torch.randn_like(latent), steps), steps

    # ------------------------------------------------------------------ Lightning
    def training_step(self, batch: torch.Tensor | Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = self.images(batch)
        if self.stage == 1:
            return self._stage1_step(x, batch_idx)
        return self._stage2_step(x, batch_idx)

    def _stage1_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """All hyper-encoders at once on one VAE encoding; the U-Net is not used (paper §3.3)."""
        with torch.no_grad():
            z0 = self.codec.encode_latent(x)
        total = x.new_zeros(())
        logs = {}
        for rung, encoder in enumerate(self.codec.hyper_encoders):
            terms = self.alignment_loss(z0, encoder(z0))
            total = total - terms["cosine"] + self.hparams.commitment_weight * terms["commit"]
            logs[f"cosine_q{rung}"] = terms["cosine"]
        # clipped per encoder: the official runs are independent
        groups = [encoder.parameters() for encoder in self.codec.hyper_encoders]
        self.log_terms({"loss": total, **logs}, prog_bar=False)
        return self.optimize(total, batch_idx, clip_groups=groups)

    def _stage2_step(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        rung = self._draw_rung()
        if self.discriminator is None:  # one optimiser: automatic optimisation
            terms = self.generator_terms(x, rung)
            self.log_terms({**terms, "rung": torch.tensor(float(rung))})
            return self.optimize(terms["loss"], batch_idx)
        opt_g, opt_d = self.optimizer_pair()
        with self.toggled(opt_g):  # the discriminator gets no generator gradients
            terms = self.generator_terms(x, rung)
            self.update(opt_g, terms["loss"], batch_idx)
        logs = dict(terms)
        if opt_d is not None:
            with self.toggled(opt_d):
                real = self.discriminator(*self._noised(terms["z0"]))
                fake = self.discriminator(*self._noised(terms["x0"].detach()))
                d_loss = hp.discriminator_weight * losses.discriminator_loss(real, fake, hp.gan_loss)
                self.update(opt_d, d_loss, batch_idx)
            logs["discriminator"] = d_loss
        self.log_terms({**logs, "rung": torch.tensor(float(rung))})
        return terms["loss"].detach()

    def validation_step(self, batch: torch.Tensor | Sequence[torch.Tensor], batch_idx: int) -> None:
        """Stage 1: the cosine similarity per rung (what calibration measures). Stage 2: also pixel MSE."""
        codec = self.codec
        x = self.images(batch)
        z0 = codec.encode_latent(x)
        logs = {}
        for rung, encoder in enumerate(codec.hyper_encoders):
            s = codec.backbone.vae_scale_factor * codec.rung_table[rung].latent_stride
            if x.shape[-2] % s or x.shape[-1] % s:
                continue
            z_hat = encoder.decode(encoder.encode(z0))
            logs[f"cosine_q{rung}"] = losses.latent_cosine_similarity(z0, z_hat, "position").mean()
            if self.stage == 2:
                x_hat = codec.synthesize(z_hat, channel_norms(z0), rung)[0]
                logs[f"mse_q{rung}"] = torch.mean((x_hat - x) ** 2)
        self.log_terms(logs, prefix="val/", sync_dist=True)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        params = list(self.codec.hyper_encoders.parameters())
        if self.stage == 2:
            params += list(self.codec.backbone.trainable_parameters())
        generator = self.adamw(params, hp.learning_rate)
        if self.discriminator is None:
            return generator
        return [generator, self.adamw(self.discriminator.parameters(), hp.discriminator_learning_rate)]
