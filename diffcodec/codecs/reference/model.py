"""LatentHyperprior: the reference codec assembled from diffcodec's shared parts.

Not one of the four papers: it is the smallest *real* one-step diffusion codec that exercises every shared
component, so the foundation can be tested end to end and new methods have a worked example.

    x ─► SD VAE encoder ─► l ─► g_a ─► y ─► h_a ─► z ─► EntropyBottleneck ─► ẑ ─► h_s ─► (μ, σ)
                                         │                                            │
                                         └─ ×gain_r ─► GaussianConditional(σ, μ) ◄─────┘
                                                              │
    x̂ ◄─ SD VAE decoder ◄─ one-step x0 at t ◄─ U-Net ◄─ l_T = g_s(ŷ) ◄─ ÷gain_r ◄─ ŷ

- Transforms and the scale hyperprior follow Ballé et al. 2018 ("Variational image compression with a scale
  hyperprior"), with the mean-and-scale Gaussian of Minnen et al. 2018, applied in the SD latent space as the
  one-step codecs do (StableCodec §2–3).
- Variable rate from one model with per-rung channel gains (Cui et al. 2021, "Asymmetric gained deep image
  compression"): y is multiplied by ``gain[r]`` before quantisation and divided after, so every rung of the
  ladder is served by one set of weights (like OSCAR).
- The decoder output ``l_T`` has ``noisy_channels`` ≥ 4 channels: the first 4 are the noisy latent, the rest
  condition the U-Net through its widened ``conv_in`` (StableCodec's semantics).
- Training (:mod:`.training`): per rung r, ``λ_r · 255² · MSE(x, x̂) + bpp`` (CompressAI's rate–distortion
  loss), with an auxiliary optimiser for the EntropyBottleneck quantiles.

This package is the worked example of ``docs/contributing.md`` (how to add a method).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from diffcodec.codecs.base import BaseModelRef, Codec, CodecOutput, EncodedImage
from diffcodec.entropy import EntropyBottleneck, GaussianConditional, get_scale_table
from diffcodec.entropy.determinism import cpu_replica, parameter_mode, parameter_net, to_parameter_device
from diffcodec.nn.backbone import OneStepBackbone, tiny_configs

__all__ = ["LatentHyperprior", "tiny_backbone"]


def tiny_backbone() -> dict[str, Any]:
    """Keyword arguments of :meth:`OneStepBackbone.from_config` for a tiny random backbone (tests, demo)."""
    return {**tiny_configs(), "conditioning": "learned", "prompt_length": 4}


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5 if stride == 2 else 3, stride=stride, padding=2 if stride == 2 else 1)


def _deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class LatentHyperprior(Codec):
    """Scale-and-mean hyperprior in the SD latent space, decoded by one step of the SD U-Net.

    Args:
        name: model identifier written (as an 8-bit tag) into every file.
        rates: nominal bpp per rung, ascending (for ``bpp=`` selection and the zoo).
        lambdas: rate–distortion trade-off per rung (``λ_r``), ascending with the rates.
        channels: width ``N`` of the analysis/synthesis transforms.
        latent_channels: channels ``M`` of y.
        hyper_channels: channels of z.
        noisy_channels: channels of ``l_T`` fed to the U-Net (the first 4 are the noisy latent).
        backbone: keyword arguments of :meth:`OneStepBackbone.from_config` (default :func:`tiny_backbone`);
            a randomly initialised backbone is saved with the codec (it has no hub base to reload from).
        base_model / base_revision: a diffusers hub id or local folder for a pretrained backbone.
    """

    method = "latent-hyperprior"
    paper = "Ballé et al. 2018, Variational image compression with a scale hyperprior (reference codec)"
    paper_url = "https://arxiv.org/abs/1802.01436"
    licence = "apache-2.0"
    #: training settings this constructor took before training moved to :mod:`.training` (dropped on load)
    retired_args = frozenset(["accumulate_grad_batches", "aux_learning_rate", "learning_rate"])

    def __init__(
        self,
        *,
        name: str = "latent-hyperprior",
        rates: Sequence[float] = (0.1, 0.2, 0.4),
        lambdas: Sequence[float] = (0.0018, 0.0067, 0.025),
        channels: int = 64,
        latent_channels: int = 96,
        hyper_channels: int = 32,
        noisy_channels: int = 8,
        backbone: dict[str, Any] | None = None,
        base_model: str | None = None,
        base_revision: str | None = None,
    ) -> None:
        super().__init__()
        if len(rates) != len(lambdas) or not rates:
            raise ValueError("rates and lambdas must be non-empty and of equal length")
        if list(rates) != sorted(rates):
            raise ValueError(f"rates must ascend, got {list(rates)}")
        if noisy_channels < 4:
            raise ValueError("noisy_channels must be >= 4 (the first 4 are the noisy SD latent)")
        self._name = name
        self._rates = tuple(float(r) for r in rates)
        self.lambdas = tuple(float(v) for v in lambdas)

        if base_model is not None:
            self.backbone = OneStepBackbone.from_pretrained(
                base_model, revision=base_revision, conditioning="learned", conv_in_channels=noisy_channels
            )
        else:
            config = dict(backbone or tiny_backbone())
            self.backbone = OneStepBackbone.from_config(
                **config, conv_in_channels=noisy_channels, persist_base=True
            )
        latent = self.backbone.latent_channels
        n, m, h = channels, latent_channels, hyper_channels
        self.g_a = nn.Sequential(_conv(latent, n), nn.GELU(), _conv(n, n, 2), nn.GELU(), _conv(n, m, 2))
        self.g_s = nn.Sequential(_deconv(m, n), nn.GELU(), _deconv(n, n), nn.GELU(), _conv(n, noisy_channels))
        self.h_a = nn.Sequential(_conv(m, n), nn.GELU(), _conv(n, n, 2), nn.GELU(), _conv(n, h, 2))
        self.h_s = nn.Sequential(_deconv(h, n), nn.GELU(), _deconv(n, n), nn.GELU(), _conv(n, 2 * m))
        # per-rung channel gains (log-parameterised so they stay positive), initialised so the rates spread
        init = torch.linspace(-1.0, 1.0, len(self._rates))[:, None].expand(-1, m).clone()
        self.log_gain = nn.Parameter(init)
        self.entropy_bottleneck = EntropyBottleneck(h)
        self.gaussian_conditional = GaussianConditional(None)

    # ------------------------------------------------------------------ contract
    def base_model_ref(self) -> BaseModelRef | None:
        """The diffusers base model when built on one (its frozen weights are re-loaded, not saved)."""
        base = self.hparams.base_model
        return None if base is None else BaseModelRef(base, self.hparams.base_revision)

    @property
    def pad_multiple(self) -> int:  # type: ignore[override]
        return self.backbone.vae_scale_factor * 16

    def _gain(self, rung: int) -> torch.Tensor:
        return self.log_gain[rung].exp()[None, :, None, None]

    def _params(self, z_hat: torch.Tensor, rung: int) -> tuple[torch.Tensor, torch.Tensor]:
        """h_s(ẑ) → (scales, means) of the *gained* y: σ·g and μ·g."""
        scales, means = self.h_s(z_hat).chunk(2, dim=1)
        gain = self._gain(rung)
        return scales * gain, means * gain

    def _coding_params(self, z_hat: torch.Tensor, rung: int) -> tuple[torch.Tensor, ...]:
        """(CDF indexes, means, gain) of :meth:`_params` on the parameter path (CPU float32, one thread:
        :mod:`~diffcodec.entropy.determinism`), so that every machine derives the same indexes."""
        scales, means = parameter_net(self.h_s, z_hat).chunk(2, dim=1)
        with parameter_mode():
            log_gain = to_parameter_device(self.log_gain[rung].detach(), cpu_replica(self.h_s))
            gain = log_gain.exp()[None, :, None, None]
            return self.gaussian_conditional.build_indexes(scales * gain), means * gain, gain

    def _synthesis(self, y_hat_gained: torch.Tensor, rung: int) -> torch.Tensor:
        """ŷ → l_T → one U-Net step → x0 → VAE decoder → x̂ in [0, 1]."""
        l_t = self.g_s(y_hat_gained / self._gain(rung))
        x0 = self.backbone.denoise(l_t)
        return self.backbone.decode(x0).add(1).div(2)

    def forward(self, x: torch.Tensor, rung: int | None = None) -> CodecOutput:
        """Training path: noisy y and z (CompressAI convention), one-step decode, likelihoods."""
        rung = self.quality if rung is None else rung
        latent = self.backbone.encode(x * 2 - 1)
        y = self.g_a(latent)
        z = self.h_a(y)
        z_hat, z_likelihoods = self.entropy_bottleneck(z)
        scales, means = self._params(z_hat, rung)
        y_hat, y_likelihoods = self.gaussian_conditional(y * self._gain(rung), scales, means)
        x_hat = self._synthesis(y_hat, rung)
        return CodecOutput(x_hat=x_hat, likelihoods={"y": y_likelihoods, "z": z_likelihoods})

    # ------------------------------------------------------------------ real coding
    def _prepare_for_coding(self) -> None:
        if self.gaussian_conditional.scale_table.numel() == 0:
            self.gaussian_conditional.update_scale_table(get_scale_table())
        self.entropy_bottleneck.update(force=False)
        self.gaussian_conditional.update()

    def encode_latents(self, x: torch.Tensor, rung: int) -> tuple[list[bytes], torch.Tensor]:
        """Entropy-code a padded image; returns the streams ``[z, y]`` and the encoder's (gained) ŷ."""
        y = self.g_a(self.backbone.encode(x * 2 - 1))
        z = self.h_a(y)
        z_string = self.entropy_bottleneck.compress(z)[0]
        # the encoder conditions on the *decoded* ẑ, exactly as the decoder will
        z_hat = self.entropy_bottleneck.decompress([z_string], z.shape[-2:])
        indexes, means, gain = self._coding_params(z_hat, rung)
        y_gained = to_parameter_device(y, cpu_replica(self.h_s)) * gain
        y_string = self.gaussian_conditional.compress(y_gained, indexes, means)[0]
        y_hat = self.gaussian_conditional.quantize(y_gained, "dequantize", means)
        return [z_string, y_string], y_hat.to(y.device)

    def decode_latents(self, streams: list[bytes], padded_size: tuple[int, int], rung: int) -> torch.Tensor:
        """The decoder's (gained) ŷ from the streams ``[z, y]``."""
        if len(streams) != 2:
            raise ValueError(f"expected 2 streams (z, y), found {len(streams)}")
        z_string, y_string = streams
        stride = self.pad_multiple
        z_size = (padded_size[0] // stride, padded_size[1] // stride)
        z_hat = self.entropy_bottleneck.decompress([z_string], z_size)
        indexes, means, _ = self._coding_params(z_hat, rung)
        y_hat = self.gaussian_conditional.decompress([y_string], indexes, means)
        return y_hat.to(self.log_gain.device)

    def _compress(self, x: torch.Tensor, rung: int) -> EncodedImage:
        streams, _ = self.encode_latents(x, rung)
        return EncodedImage(streams=streams)

    def _decompress(self, encoded: EncodedImage, padded_size: tuple[int, int], rung: int) -> torch.Tensor:
        return self._synthesis(self.decode_latents(encoded.streams, padded_size, rung), rung)
