"""Pre-training the small base model (VAE + U-Net) under the embedded small codecs.

The full-size codecs start from Stable Diffusion. The small models bundled with diffcodec cannot (no hub
access, and SD is 1 B parameters), so they start from a **small base model we train ourselves** on the
bundled photos, in two LightningCLI stages (``recipes/base/``):

1. :class:`AutoencoderPretraining` — a kl-f8 ``AutoencoderKL`` (the SD VAE architecture at small widths)
   trained with the latent-diffusion autoencoder loss L1 + LPIPS + β·KL (Rombach et al., CVPR 2022, §3 and
   App. G). **Deviation:** no patch-GAN term (too slow to balance on a CPU budget). At the end the latent
   scaling factor is set to 1/σ of the training latents, as LDM does ("we rescale the latents by the
   component-wise standard deviation", App. G), so the noise schedule sees unit-variance latents.
2. :class:`DenoiserPretraining` — a ``UNet2DConditionModel`` trained as a DDPM denoiser (Ho et al., 2020,
   Eq. 14; ε- or v-prediction, Salimans & Ho 2022 §4) on the frozen VAE's latents, timesteps uniform in
   [0, 1000), conditioned on a learned null embedding (no text encoder in the small base).

Each stage writes a diffusers folder (``vae/``, then ``unet/`` + ``scheduler/`` beside a copy of
``vae/``) that the codecs take as ``backbone: <folder>`` (see
:func:`diffcodec.nn.backbone.small_backbone`)::

    diffcodec fit -c recipes/base/vae.yaml
    diffcodec fit -c recipes/base/unet_eps.yaml      # StableCodec, CADC, OneDC
    diffcodec fit -c recipes/base/unet_v.yaml        # OSCAR (SD-2.1 is a v-prediction model)
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn

from diffcodec.nn.backbone import ATTENTION_WINDOWS, BASE_WINDOWS_FILE, tiny_configs
from diffcodec.nn.windowed_attention import WindowedSelfAttnProcessor
from diffcodec.training.throughput import ThroughputOptions

__all__ = ["SMALL_BASE_VAE", "AutoencoderPretraining", "DenoiserPretraining"]

#: The bundled models' VAE: SD's kl-f8 architecture at widths 16–64 (≈1.0 M parameters).
SMALL_BASE_VAE: dict[str, Any] = {
    **tiny_configs()["vae_config"], "block_out_channels": [16, 32, 64, 64], "norm_num_groups": 8,
}  # fmt: skip


def _psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    mse = F.mse_loss(x.clamp(0, 1), y.clamp(0, 1))
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


class AutoencoderPretraining(ThroughputOptions, L.LightningModule):
    """Stage 1 of the small base: train a kl-f8 VAE (see the module docstring).

    Args:
        vae_config: an ``AutoencoderKL`` config (default :data:`SMALL_BASE_VAE`).
        output_dir: where the trained VAE is written (``<output_dir>/vae``) when training ends.
        l1_weight, lpips_weight, kl_weight: loss weights (LDM: 1, 1, 1e-6).
        lpips_net: LPIPS trunk; LDM uses "vgg", the bundled base uses "alex" (≈10× cheaper on a CPU).
        learning_rate: AdamW learning rate (cosine-decayed to 10 % over ``trainer.max_steps``).
        channels_last, compile: throughput options (:mod:`diffcodec.training.throughput`; compile: the
            VAE's encoder and decoder).
    """

    def __init__(
        self,
        vae_config: Mapping[str, Any] | None = None,
        output_dir: str = "runs/base/small-sd",
        l1_weight: float = 1.0,
        lpips_weight: float = 1.0,
        kl_weight: float = 1e-6,
        lpips_net: Literal["alex", "vgg"] = "vgg",
        learning_rate: float = 5e-4,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.vae = AutoencoderKL.from_config(dict(vae_config or SMALL_BASE_VAE))
        self._lpips: nn.Module | None = None
        self.register_buffer("latent_moments", torch.zeros(3, dtype=torch.float64))  # n, Σz, Σz²

    def lpips(self) -> nn.Module:
        if self._lpips is None:  # built on first use, kept out of the state dict
            from diffcodec.training.losses import LPIPSLoss

            self._lpips = LPIPSLoss(self.hparams.lpips_net).to(self.device)
        return self._lpips

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x = self.images(batch) * 2 - 1
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample()
        x_hat = self.vae.decode(z).sample
        l1 = (x_hat - x).abs().mean()
        perceptual = self.lpips()(x_hat, x) if self.hparams.lpips_weight else x.new_zeros(())
        kl = posterior.kl().mean()
        loss = (
            self.hparams.l1_weight * l1 + self.hparams.lpips_weight * perceptual + self.hparams.kl_weight * kl
        )
        with torch.no_grad():
            mean = posterior.mean.double()
            self.latent_moments += torch.stack(
                [mean.new_tensor(mean.numel()), mean.sum(), mean.square().sum()]
            )
        self.log_dict(
            {"train/loss": loss, "train/l1": l1, "train/lpips": perceptual, "train/kl": kl}, prog_bar=True
        )
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x = self.images(batch)
        x_hat = self.vae.decode(self.vae.encode(x * 2 - 1).latent_dist.mode()).sample.add(1).div(2)
        self.log("val/psnr", _psnr(x_hat, x), prog_bar=True)

    def latent_std(self) -> float:
        """Standard deviation of the posterior means seen in training (all of them, all channels)."""
        n, total, squares = self.latent_moments.tolist()
        if n == 0:
            raise RuntimeError("no training batch seen yet: the latent scaling factor is unknown")
        return math.sqrt(max(squares / n - (total / n) ** 2, 1e-12))

    def save_vae(self, output_dir: str | Path) -> Path:
        """Write ``<output_dir>/vae`` with ``scaling_factor`` = 1/σ of the training latents (LDM App. G)."""
        self.vae.register_to_config(scaling_factor=1.0 / self.latent_std())
        target = Path(output_dir) / "vae"
        self.vae.save_pretrained(target)
        return target

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            self.save_vae(self.hparams.output_dir)

    def configure_optimizers(self) -> Any:
        return _adamw_cosine(self, self.vae.parameters(), self.hparams.learning_rate)


class DenoiserPretraining(ThroughputOptions, L.LightningModule):
    """Stage 2 of the small base: a DDPM-trained U-Net on the frozen VAE's latents (module docstring).

    Args:
        base_dir: the folder stage 1 wrote (its ``vae/``); the U-Net and scheduler are written beside it
            into ``output_dir`` together with a copy of the VAE.
        output_dir: the finished base-model folder (``vae/``, ``unet/``, ``scheduler/``).
        unet_config: a ``UNet2DConditionModel`` config (default: :func:`tiny_configs`' U-Net).
        prediction_type: "epsilon" (SD-1.5, SD-Turbo) or "v_prediction" (SD-2.1).
        embedding_length: tokens of the learned null conditioning.
        learning_rate: AdamW learning rate (cosine-decayed to 10 % over ``trainer.max_steps``).
        channels_last, compile: throughput options (:mod:`diffcodec.training.throughput`; compile: the
            U-Net and the frozen VAE's encoder and decoder).
        unet_attention_window, vae_attention_window: the base's attention windows (latent positions;
            None = global), used in training and written to ``backbone.json`` so that every codec built
            on the base uses them (:func:`diffcodec.nn.backbone.base_attention_windows`). The default 16
            (128 px, the training crop) makes inference cost linear in the pixels; on crops of 128 px
            or less training is the same as with global attention.
    """

    def __init__(
        self,
        base_dir: str = "runs/base/small-sd",
        output_dir: str = "runs/base/small-sd-eps",
        unet_config: Mapping[str, Any] | None = None,
        prediction_type: Literal["epsilon", "v_prediction"] = "epsilon",
        embedding_length: int = 8,
        learning_rate: float = 2e-4,
        channels_last: bool = False,
        compile: bool = False,
        unet_attention_window: int | None = 16,
        vae_attention_window: int | None = 16,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        configs = tiny_configs(prediction_type=prediction_type)
        self.vae = AutoencoderKL.from_pretrained(Path(base_dir) / "vae").eval().requires_grad_(False)
        self.unet = UNet2DConditionModel.from_config(dict(unet_config or configs["unet_config"]))
        if self.unet.config.in_channels != self.vae.config.latent_channels:
            raise ValueError("the U-Net's in_channels must equal the VAE's latent channels")
        self.scheduler_config = configs["scheduler_config"]
        self.scheduler = DDPMScheduler.from_config(self.scheduler_config)
        dim = int(self.unet.config.cross_attention_dim)
        self.null_embedding = nn.Parameter(torch.randn(1, embedding_length, dim) * 0.02)
        if unet_attention_window is not None:
            self.unet.set_attn_processor(WindowedSelfAttnProcessor(unet_attention_window))

    def train(self, mode: bool = True) -> DenoiserPretraining:
        super().train(mode)
        self.vae.eval()  # frozen
        return self

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            latents = self.vae.encode(x * 2 - 1).latent_dist.sample() * self.vae.config.scaling_factor
        noise = torch.randn_like(latents)
        steps = torch.randint(
            0, self.scheduler.config.num_train_timesteps, (len(latents),), device=self.device
        )
        self.scheduler.alphas_cumprod = self.scheduler.alphas_cumprod.to(self.device)
        noisy = self.scheduler.add_noise(latents, noise, steps)
        target = (
            noise
            if self.hparams.prediction_type == "epsilon"
            else self.scheduler.get_velocity(latents, noise, steps)
        )
        context = self.null_embedding.expand(len(latents), -1, -1)
        windows = {"latent_size": tuple(noisy.shape[-2:])} if self.hparams.unet_attention_window else None
        prediction = self.unet(
            noisy, steps, encoder_hidden_states=context, cross_attention_kwargs=windows
        ).sample
        return F.mse_loss(prediction, target)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._loss(self.images(batch))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", self._loss(self.images(batch)), prog_bar=True)

    def save_base(self, output_dir: str | Path) -> Path:
        """Write the finished base model: ``vae/`` (copied), ``unet/``, ``scheduler/``, ``backbone.json``."""
        target = Path(output_dir)
        target.mkdir(parents=True, exist_ok=True)
        if (target / "vae").resolve() != (Path(self.hparams.base_dir) / "vae").resolve():
            shutil.copytree(Path(self.hparams.base_dir) / "vae", target / "vae", dirs_exist_ok=True)
        self.unet.save_pretrained(target / "unet")
        DDPMScheduler.from_config(self.scheduler_config).save_pretrained(target / "scheduler")
        windows = {key: self.hparams[key] for key in ATTENTION_WINDOWS}
        (target / BASE_WINDOWS_FILE).write_text(json.dumps(windows, indent=2) + "\n")
        return target

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            self.save_base(self.hparams.output_dir)

    def configure_optimizers(self) -> Any:
        return _adamw_cosine(self, [*self.unet.parameters(), self.null_embedding], self.hparams.learning_rate)


def _adamw_cosine(module: L.LightningModule, parameters: Any, learning_rate: float) -> Any:
    """AdamW with a cosine decay to 10 % of ``learning_rate`` over the trainer's ``max_steps``."""
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=0.0)
    total = max(int(module.trainer.max_steps), 1) if module.trainer.max_steps > 0 else 10_000

    def factor(step: int) -> float:
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
