"""Validation by real coding: bpp of actual files, PSNR, MS-SSIM and reconstruction grids.

The codec's ``validation_step`` logs its losses on the training path (noisy latents, likelihood rates).
:class:`RealCodingValidation` adds what a user will see: it compresses a few validation images to real
bitstreams at each rung, decodes them, and logs

- ``val/real_bpp_q{r}``: ``8 · len(file) / (H · W)`` of the *unpadded* image, every byte counted;
- ``val/real_psnr_q{r}``: PSNR in dB on 8-bit images (the saved PNG's values);
- ``val/real_msssim_q{r}``: MS-SSIM (torchmetrics, 5 scales; images need a short side ≥ 161 px);

and an image grid (originals, then one row per rung) to TensorBoard and as a PNG under the log folder.
It runs on rank 0 and broadcasts the numbers, so every rank logs the same values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure
from torchvision.utils import make_grid, save_image

from diffcodec.codecs.base import Codec
from diffcodec.imageio import quantize_8bit
from diffcodec.training.checkpoint import trained_codec

#: Smallest short side MS-SSIM's 5 scales accept with an 11-px window: (11 - 1) · 2⁴ + 1.
MS_SSIM_MIN_SIDE = 161


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of two [0, 1] images after rounding both to 8 bits (inf for identical images)."""
    mse = float(F.mse_loss(quantize_8bit(x), quantize_8bit(y)))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def ms_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """MS-SSIM of two (1, 3, H, W) [0, 1] images on the 8-bit grid; NaN if the image is too small."""
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return math.nan
    value = multiscale_structural_similarity_index_measure(
        quantize_8bit(y).double(), quantize_8bit(x).double(), data_range=1.0
    )
    return float(value)


def images_in_batch(batch: torch.Tensor | Sequence[torch.Tensor]) -> int:
    """Number of images in a batch (for ``ThroughputMonitor(batch_size_fn=…)`` in recipes)."""
    x = batch[0] if isinstance(batch, (list, tuple)) else batch
    return int(x.shape[0])


class RealCodingValidation(Callback):
    """Real entropy coding of ``num_images`` validation images at the end of validation.

    Args:
        num_images: how many images of the DataModule's ``val_set`` to code (the first ones).
        qualities: rungs to code; None codes every rung.
        every_n_epochs: run on validation epochs whose index is a multiple of this.
        grid: log reconstruction grids.
        grid_side: longest side of each image in the grid (thumbnails keep logs small).
    """

    def __init__(
        self,
        num_images: int = 4,
        qualities: Sequence[int] | None = None,
        every_n_epochs: int = 1,
        grid: bool = True,
        grid_side: int = 256,
    ) -> None:
        if num_images < 1 or every_n_epochs < 1:
            raise ValueError("num_images and every_n_epochs must be positive")
        self.num_images = num_images
        self.qualities = None if qualities is None else list(qualities)
        self.every_n_epochs = every_n_epochs
        self.grid = grid
        self.grid_side = grid_side

    def _images(self, trainer: L.Trainer) -> list[torch.Tensor]:
        val_set = getattr(trainer.datamodule, "val_set", None) if trainer.datamodule is not None else None
        if val_set is None or not hasattr(val_set, "load"):
            return []
        return [val_set.load(i) for i in range(min(self.num_images, len(val_set)))]

    def _measure(
        self, codec: Codec, images: list[torch.Tensor]
    ) -> tuple[dict[str, float], list[torch.Tensor]]:
        qualities = self.qualities if self.qualities is not None else list(range(codec.num_rungs))
        rung = codec.quality
        metrics: dict[str, float] = {}
        rows: list[list[torch.Tensor]] = [images]
        for q in qualities:
            bpps, psnrs, ssims, row = [], [], [], []
            for x in images:
                stream = codec.compress(x, quality=q)
                x_hat = codec.decompress(stream.to_bytes(), output="tensor")
                bpps.append(8 * len(stream.to_bytes()) / (x.shape[-2] * x.shape[-1]))
                psnrs.append(psnr(x, x_hat))
                ssims.append(ms_ssim(x, x_hat))
                row.append(x_hat)
            metrics[f"val/real_bpp_q{q}"] = sum(bpps) / len(bpps)
            metrics[f"val/real_psnr_q{q}"] = sum(psnrs) / len(psnrs)
            metrics[f"val/real_msssim_q{q}"] = sum(ssims) / len(ssims)
            rows.append(row)
        codec.set_rung(rung)
        return metrics, [x for row in rows for x in row]

    def _thumbnail(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.grid_side / max(x.shape[-2:])
        if scale < 1:
            size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        canvas = x.new_ones(1, 3, self.grid_side, self.grid_side)  # pad to a common size, white
        canvas[..., : x.shape[-2], : x.shape[-1]] = x
        return canvas[0].clamp(0, 1)

    def _log_grid(self, trainer: L.Trainer, tiles: list[torch.Tensor], columns: int) -> None:
        grid = make_grid([self._thumbnail(t) for t in tiles], nrow=columns, padding=2, pad_value=1.0)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image("val/reconstructions", grid, global_step=trainer.global_step)
        if trainer.log_dir is not None:
            folder = Path(trainer.log_dir) / "reconstructions"
            folder.mkdir(parents=True, exist_ok=True)
            save_image(grid, folder / f"step{trainer.global_step:08d}.png")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        codec = trained_codec(pl_module)
        if codec is None:
            raise TypeError(f"RealCodingValidation needs a Codec, got {type(pl_module).__name__}")
        metrics: dict[str, float] | None = None
        if trainer.is_global_zero:
            images = self._images(trainer)
            if images:
                metrics, tiles = self._measure(codec, images)
                if self.grid:
                    self._log_grid(trainer, tiles, columns=len(images))
        metrics = trainer.strategy.broadcast(metrics, src=0)
        if metrics:
            pl_module.log_dict(metrics, sync_dist=True, batch_size=1)  # equal on all ranks (broadcast)
