"""DMD2 distillation for one-step generators: distribution matching and a latent GAN on U-Net features.

Yin et al., "Improved Distribution Matching Distillation for Fast Image Synthesis" (DMD2, NeurIPS 2024),
as the OneDC code uses it (official ``train_sd15_codec_stage2.py``, after tianweiy/DMD2 ``sd_guidance.py``).
Generic: any one-step
generator whose output is an SD latent can be trained with it (OneDC's stage 2; OSCAR / StableCodec /
CADC style generators as well).

::

    generator x̂₀ ──noise to t──► x_t ──┬─► real U-Net (frozen teacher, CFG) ─► x₀_real ─┐
                                       └─► fake U-Net (trained online)     ─► x₀_fake ─┴─► ∇
    ∇ = (p_real − p_fake) / mean|p_real|,   p = x̂₀ − x₀
    L_dm = ½·MSE(x̂₀, sg(x̂₀ − ∇))                          (distribution matching, DMD2 Eq. 2 / DMD Eq. 7)

    fake U-Net down path + mid block ─► cls_pred_branch ─► realism logit  (GAN on the mid features, DMD2 §4.2)
    L_gen = softplus(−D(noise(x̂₀)))            L_D = softplus(D(noise(sg x̂₀))) + softplus(−D(noise(x_real)))
    L_fake = ‖ε_fake(noise(sg x̂₀, t), t) − ε‖²   (the fake score follows the generator's distribution)

:class:`DMDGuidance` holds the two score networks and the discriminator head and computes the four losses;
the training loop (which parameters step when, the 10 guidance updates per generator update) belongs to the
method (:class:`~diffcodec.codecs.onedc.OneDC`). Noise-schedule maths is float64 where DMD2 uses it
(``get_x0_from_noise``), timesteps are drawn as DMD2 draws them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DConditionModel
from torch import Tensor, nn

__all__ = [
    "ClassifierHead",
    "DMDGuidance",
    "expand_embedding",
    "predict_noise",
    "unet_mid_features",
    "x0_from_noise",
]


def x0_from_noise(sample: Tensor, noise: Tensor, alphas_cumprod: Tensor, timesteps: Tensor) -> Tensor:
    """DMD2's ``get_x0_from_noise``: (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t in float64."""
    alpha = alphas_cumprod.double().to(sample.device)[timesteps].view(-1, 1, 1, 1)
    return (sample.double() - (1 - alpha).sqrt() * noise.double()) / alpha.sqrt()


def predict_noise(
    unet: UNet2DConditionModel,
    sample: Tensor,
    text_embedding: Tensor,
    uncond_embedding: Tensor | None,
    timesteps: Tensor,
    guidance_scale: float = 1.0,
) -> Tensor:
    """ε-prediction, with classifier-free guidance ε_u + s·(ε_c − ε_u) when ``guidance_scale`` > 1."""
    dtype = unet.dtype
    if guidance_scale > 1:
        if uncond_embedding is None:
            raise ValueError("classifier-free guidance needs the unconditional embedding")
        both = torch.cat((uncond_embedding, text_embedding)).to(dtype)
        noise = unet(torch.cat((sample, sample)).to(dtype), torch.cat((timesteps, timesteps)), both).sample
        uncond, cond = noise.chunk(2)
        return uncond + guidance_scale * (cond - uncond)
    return unet(sample.to(dtype), timesteps, text_embedding.to(dtype)).sample


def unet_mid_features(
    unet: UNet2DConditionModel, sample: Tensor, timesteps: Tensor, encoder_hidden_states: Tensor
) -> Tensor:
    """The U-Net's mid-block output (DMD2's ``classify_forward``): the down path and the mid block only.

    Walks diffusers' ``UNet2DConditionModel`` submodules in the order of its ``forward`` (time embedding,
    ``conv_in``, down blocks, mid block); the up path, which the GAN head does not use, is not run.
    """
    dtype = unet.dtype
    sample = sample.to(dtype)
    encoder_hidden_states = encoder_hidden_states.to(dtype)
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timesteps).to(dtype))
    hidden = unet.conv_in(sample)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            hidden, _ = block(hidden_states=hidden, temb=emb, encoder_hidden_states=encoder_hidden_states)
        else:
            hidden, _ = block(hidden_states=hidden, temb=emb)
    if unet.mid_block is None:
        return hidden
    if getattr(unet.mid_block, "has_cross_attention", False):
        return unet.mid_block(hidden, emb, encoder_hidden_states=encoder_hidden_states)
    return unet.mid_block(hidden, emb)


class ClassifierHead(nn.Sequential):
    """DMD2's ``cls_pred_branch`` on the mid-block feature (C channels, /8 of the latent):

    Conv4×4/2(C → C) → GN(32) → SiLU → Conv4×4/4(C → C) → GN(32) → SiLU → Conv1×1(C → 1). 52,437,761
    parameters at C = 1280 (SD-1.5); a 1×1 logit map from a 512² image, 2×2 from 1024².
    """

    def __init__(self, channels: int = 1280) -> None:
        groups = min(32, channels)
        super().__init__(
            nn.Conv2d(channels, channels, 4, 2, 1), nn.GroupNorm(groups, channels), nn.SiLU(),
            nn.Conv2d(channels, channels, 4, 4, 0), nn.GroupNorm(groups, channels), nn.SiLU(),
            nn.Conv2d(channels, 1, 1),
        )  # fmt: skip


class DMDGuidance(nn.Module):
    """The guidance model of DMD2 (tianweiy/DMD2 ``SDGuidance``): real and fake scores and the GAN head.

    Args:
        real_unet: the frozen teacher (OneDC: SD-1.5, not the DMD2 generator); kept in eval mode.
        fake_unet: the online fake score, initialised from the teacher and fully trained.
        scheduler_config: the teachers' noise schedule (only ``alphas_cumprod`` is used).
        real_guidance_scale: CFG scale of the teacher (1.75); fake_guidance_scale: the fake's (1, none).
        min_step_percent / max_step_percent: the distribution-matching timestep range (0.02 / 0.64 of T).
        gan_max_timestep: the GAN's noise levels t ~ U{0, …, gan_max_timestep − 1} (1000: "diffusion GAN").

    :meth:`guidance_parameters` are what the guidance optimiser updates (fake U-Net + head).
    """

    def __init__(
        self,
        real_unet: UNet2DConditionModel,
        fake_unet: UNet2DConditionModel,
        scheduler_config: dict,
        *,
        real_guidance_scale: float = 1.75,
        fake_guidance_scale: float = 1.0,
        min_step_percent: float = 0.02,
        max_step_percent: float = 0.64,
        gan_max_timestep: int = 1000,
    ) -> None:
        super().__init__()
        self.real_unet = real_unet.eval().requires_grad_(False)
        self.fake_unet = fake_unet.requires_grad_(True)
        channels = fake_unet.config.block_out_channels[-1]
        self.cls_pred_branch = ClassifierHead(channels)
        alphas = DDPMScheduler.from_config(dict(scheduler_config)).alphas_cumprod.to(torch.float32)
        self.register_buffer("alphas_cumprod", alphas, persistent=False)
        self.num_train_timesteps = int(alphas.shape[0])
        self.min_step = int(min_step_percent * self.num_train_timesteps)
        self.max_step = int(max_step_percent * self.num_train_timesteps)
        self.real_guidance_scale = float(real_guidance_scale)
        self.fake_guidance_scale = float(fake_guidance_scale)
        self.gan_max_timestep = int(gan_max_timestep)

    def train(self, mode: bool = True) -> DMDGuidance:
        super().train(mode)
        self.real_unet.eval()  # the teacher is always in eval mode
        return self

    def guidance_parameters(self) -> list[nn.Parameter]:
        return [*self.fake_unet.parameters(), *self.cls_pred_branch.parameters()]

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε (the scheduler's ``add_noise``)."""
        alpha = self.alphas_cumprod.to(x0.device)[timesteps].view(-1, 1, 1, 1).to(x0.dtype)
        return alpha.sqrt() * x0 + (1 - alpha).sqrt() * noise

    def _timesteps(self, batch: int, low: int, high: int, device: torch.device) -> Tensor:
        return torch.randint(low, high, (batch,), device=device, dtype=torch.long)

    # ------------------------------------------------------------------ generator losses
    def distribution_matching_loss(
        self, latents: Tensor, text_embedding: Tensor, uncond_embedding: Tensor | None = None
    ) -> Tensor:
        """L_dm = ½·MSE(x̂₀, sg(x̂₀ − ∇)), ∇ = (p_real − p_fake)/mean|p_real| per sample (NaN → 0)."""
        batch = latents.shape[0]
        with torch.no_grad():
            steps = self._timesteps(batch, self.min_step, min(self.max_step + 1, self.num_train_timesteps),
                                    latents.device)  # fmt: skip
            noisy = self.add_noise(latents, torch.randn_like(latents), steps)
            fake = predict_noise(
                self.fake_unet, noisy, text_embedding, uncond_embedding, steps, self.fake_guidance_scale
            )
            real = predict_noise(
                self.real_unet, noisy, text_embedding, uncond_embedding, steps, self.real_guidance_scale
            )
            p_real = latents - x0_from_noise(noisy, real, self.alphas_cumprod, steps)
            p_fake = latents - x0_from_noise(noisy, fake, self.alphas_cumprod, steps)
            grad = torch.nan_to_num((p_real - p_fake) / p_real.abs().mean(dim=(1, 2, 3), keepdim=True))
        return 0.5 * F.mse_loss(latents.float(), (latents - grad).detach().float())

    def realism_logits(self, latents: Tensor, text_embedding: Tensor) -> Tensor:
        """The GAN head on the fake U-Net's mid features of the latents noised at t ~ U{0, …, T_gan − 1}."""
        steps = self._timesteps(latents.shape[0], 0, self.gan_max_timestep, latents.device)
        noisy = self.add_noise(latents, torch.randn_like(latents), steps)
        features = unet_mid_features(self.fake_unet, noisy, steps, text_embedding)
        return self.cls_pred_branch(features.float()).flatten(1)

    def generator_gan_loss(self, latents: Tensor, text_embedding: Tensor) -> Tensor:
        """softplus(−D(x̂₀)) (non-saturating). Call with the guidance parameters frozen for this pass."""
        return F.softplus(-self.realism_logits(latents, text_embedding)).mean()

    # ------------------------------------------------------------------ guidance losses
    def fake_score_loss(
        self, latents: Tensor, text_embedding: Tensor, uncond_embedding: Tensor | None = None
    ) -> Tensor:
        """ε-prediction MSE of the fake U-Net on the detached generator latents, t ~ U{0, …, T − 1}."""
        latents = latents.detach()
        noise = torch.randn_like(latents)
        steps = self._timesteps(latents.shape[0], 0, self.num_train_timesteps, latents.device)
        noisy = self.add_noise(latents, noise, steps)
        pred = predict_noise(
            self.fake_unet, noisy, text_embedding, uncond_embedding, steps, self.fake_guidance_scale
        )
        return torch.mean((pred.float() - noise.float()) ** 2)

    def discriminator_loss(
        self, real_latents: Tensor, fake_latents: Tensor, text_embedding: Tensor
    ) -> Tensor:
        """softplus(D(fake)) + softplus(−D(real)), each at its own noise level."""
        fake = self.realism_logits(fake_latents.detach(), text_embedding)
        real = self.realism_logits(real_latents.detach(), text_embedding)
        return F.softplus(fake).mean() + F.softplus(-real).mean()


def expand_embedding(embedding: Tensor, batch: int) -> Tensor:
    """A (1, L, D) or (B, L, D) text embedding as (B, L, D)."""
    if embedding.dim() != 3 or embedding.shape[0] not in (1, batch):
        raise ValueError(f"text embedding must be (1|{batch}, L, D), got {tuple(embedding.shape)}")
    return embedding.expand(batch, -1, -1)
