"""Training the reference codec: :class:`LatentHyperpriorTraining` wraps a :class:`LatentHyperprior`.

Per step one rung r is drawn at random and the loss is CompressAI's rate–distortion loss
``λ_r · 255² · MSE(x, x̂) + bpp`` (Ballé et al. 2018, Eq. 2 with the distortion scaled as in CompressAI's
``RateDistortionLoss``); the EntropyBottleneck's quantile (aux) loss is added in the same backward pass and
stepped by its own Adam (CompressAI's ``aux_optimizer``).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from diffcodec.codecs.reference.model import LatentHyperprior
from diffcodec.training.module import CodecTraining

__all__ = ["LatentHyperpriorTraining"]


class LatentHyperpriorTraining(CodecTraining):
    """One-stage rate–distortion training of a :class:`LatentHyperprior` (all rungs, one model).

    Args:
        codec: the codec to train. learning_rate, gradient_clip, accumulate_grad_batches, channels_last,
            compile: see
            :class:`~diffcodec.training.module.CodecTraining`.
        aux_learning_rate: the quantile (aux) optimiser's learning rate.
    """

    stages = (1,)

    def __init__(
        self,
        codec: LatentHyperprior,
        *,
        stage: int = 1,
        learning_rate: float = 1e-4,
        aux_learning_rate: float = 1e-3,
        gradient_clip: float | None = None,
        accumulate_grad_batches: int = 1,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__(
            codec, stage=stage, learning_rate=learning_rate, gradient_clip=gradient_clip,
            accumulate_grad_batches=accumulate_grad_batches,
            channels_last=channels_last, compile=compile,
        )  # fmt: skip

    def steps_several_optimizers(self) -> bool:
        """The main and the quantile (aux) optimiser step together: manual optimisation."""
        return True

    def rd_loss(self, x: torch.Tensor, rung: int) -> dict[str, torch.Tensor]:
        """``λ_r · 255² · MSE + bpp`` (CompressAI's RateDistortionLoss)."""
        out = self.codec(x, rung=rung)
        mse = F.mse_loss(out.x_hat, x)
        bpp = out.bpp(x.shape[-2] * x.shape[-1]).mean()
        loss = self.codec.lambdas[rung] * 255**2 * mse + bpp
        return {"loss": loss, "mse": mse, "bpp": bpp}

    def training_step(self, batch: torch.Tensor | Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One rung drawn at random per step; the EntropyBottleneck's quantile (aux) loss is added to the
        main loss in one backward pass — it reaches only the quantiles, which the main optimiser excludes,
        and a single backward keeps DDP's unused-parameter check satisfied."""
        x = self.images(batch)
        optimizer, aux_optimizer = self.optimizers()
        rung = random.randrange(self.codec.num_rungs)
        terms = self.rd_loss(x, rung)
        aux_loss = self.codec.entropy_bottleneck.loss()
        self.update(optimizer, terms["loss"] + aux_loss, batch_idx)
        self.accumulation.step(self, aux_optimizer, batch_idx)
        self.log_terms({**terms, "aux": aux_loss})
        return terms["loss"].detach()

    def validation_step(self, batch: torch.Tensor | Sequence[torch.Tensor], batch_idx: int) -> None:
        x = self.images(batch)
        for rung in range(self.codec.num_rungs):
            terms = self.rd_loss(x, rung)
            self.log_terms({f"{k}_q{rung}": v for k, v in terms.items()}, prefix="val/", sync_dist=True)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        named = list(self.codec.named_parameters())
        main = [p for n, p in named if p.requires_grad and not n.endswith("quantiles")]
        aux = [p for n, p in named if n.endswith("quantiles")]
        return [
            torch.optim.Adam(main, lr=self.hparams.learning_rate),
            torch.optim.Adam(aux, lr=self.hparams.aux_learning_rate),
        ]
