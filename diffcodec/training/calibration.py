"""Bit-rate → pseudo-timestep calibration, OSCAR paper Eq. 9–13.

After stage 1 the quantised latent z̃ = Q(z₀; r) of each rung is read as a diffusion state
z̃ = √ᾱ_t·z₀ + √(1−ᾱ_t)·ε with ε ⟂ z₀ (Eq. 11), whose expected cosine similarity to z₀ is
G(t) ≈ √ᾱ_t (Eq. 12). So each rung gets

- F(r) = mean over images and latent vectors of sim(z₀⁽ⁿ⁾, z̃⁽ⁿ⁾)            (Eq. 9–10)
- t̂(r) = argmin_t |√ᾱ_t − F(r)|                                           (Eq. 13)

Choices the paper leaves open (paper Eq. 9–13), with the defaults used here:

- *vectors*: one 4-vector per spatial position (``axis="position"``), as in Eq. 6; ``"channel"`` takes
  one vector per channel over all positions (the official stage-2 loss);
- *which* z̃: the U-Net input, i.e. after the per-channel norm rescale (``rescaled=True``), since that is
  the state the timestep is paired with; ``rescaled=False`` uses the raw proj output;
- t ranges over the scheduler's indices 0…T−1 (the timesteps the U-Net accepts; the paper writes 1…T);
- F(r) averages per-image means (Eq. 10 with each image's own N).

The official code ships a hand-set table (:data:`~diffcodec.codecs.oscar.OFFICIAL_TIMESTEPS`), which stays
the default; this procedure produces a table for a retrained model::

    python -m diffcodec.training.calibration -m runs/oscar-stage1/export images/ --output calibrated/

``--output`` writes the model with the new table in its config.json (``OSCAR.set_timesteps``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from diffcodec.training.losses import CosineAxis, latent_cosine_similarity

if TYPE_CHECKING:
    from diffcodec.codecs.oscar import OSCAR

__all__ = [
    "Calibration",
    "calibrate",
    "folder_images",
    "implied_similarity",
    "measure_similarities",
    "timestep_for_similarity",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def implied_similarity(alphas_cumprod: torch.Tensor, timestep: int) -> float:
    """G(t) = √ᾱ_t (Eq. 12)."""
    return float(alphas_cumprod[timestep].double().sqrt())


def timestep_for_similarity(alphas_cumprod: torch.Tensor, similarity: float) -> int:
    """t̂ = argmin over t ∈ [0, T) of |√ᾱ_t − similarity| (Eq. 13); the smallest t on a tie."""
    if not -1.0 <= similarity <= 1.0:
        raise ValueError(f"a cosine similarity lies in [-1, 1], got {similarity}")
    gap = (alphas_cumprod.double().sqrt() - similarity).abs()
    return int(torch.argmin(gap))


@dataclass(frozen=True)
class Calibration:
    """F(r) per rung, the timesteps t̂(r) derived from them, and how they were measured."""

    similarities: tuple[float, ...]
    timesteps: tuple[int, ...]
    images: int
    axis: str
    rescaled: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@torch.no_grad()
def measure_similarities(
    codec: OSCAR, images: Iterable[torch.Tensor], *, axis: CosineAxis = "position", rescaled: bool = True
) -> tuple[list[float], int]:
    """F(r) for every rung (Eq. 10) over ``images`` ((1|B, 3, H, W) in [0, 1], sides multiples of the
    coarsest rung's grid stride), and the number of images used."""
    from diffcodec.codecs.oscar import channel_norms, rescale_to_norms

    totals = [0.0] * codec.num_rungs
    count = 0
    was_training = codec.training
    codec.eval()
    try:
        for batch in images:
            batch = batch.to(codec.device)
            z0 = codec.encode_latent(batch)
            for rung, encoder in enumerate(codec.hyper_encoders):
                z_tilde = encoder.decode(encoder.encode(z0))
                if rescaled:
                    z_tilde = rescale_to_norms(z_tilde, channel_norms(z0))
                totals[rung] += float(latent_cosine_similarity(z0, z_tilde, axis).sum())
            count += batch.shape[0]
    finally:
        codec.train(was_training)
    if count == 0:
        raise ValueError("calibration needs at least one image")
    return [total / count for total in totals], count


def calibrate(
    codec: OSCAR, images: Iterable[torch.Tensor], *, axis: CosineAxis = "position", rescaled: bool = True
) -> Calibration:
    """Measure F(r) over ``images`` and map each rung to t̂(r) (Eq. 9–13). The codec is not modified;
    apply the result with ``codec.set_timesteps(result.timesteps)``."""
    similarities, count = measure_similarities(codec, images, axis=axis, rescaled=rescaled)
    alphas = codec.backbone.alphas_cumprod.cpu()
    timesteps = tuple(timestep_for_similarity(alphas, s) for s in similarities)
    return Calibration(tuple(similarities), timesteps, count, axis, rescaled)


def folder_images(folder: str | Path, multiple: int, *, crop: int | None = 512,
                  max_images: int | None = None) -> Iterator[torch.Tensor]:  # fmt: skip
    """Images of ``folder`` (sorted, recursive) as (1, 3, H, W) tensors, centre-cropped to at most
    ``crop``×``crop`` and down to multiples of ``multiple``; images smaller than ``multiple`` are skipped."""
    from diffcodec.imageio import to_tensor

    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    used = 0
    for path in paths:
        if max_images is not None and used >= max_images:
            return
        x = to_tensor(path)
        height, width = x.shape[-2:]
        h = min(height, crop or height) // multiple * multiple
        w = min(width, crop or width) // multiple * multiple
        if h == 0 or w == 0:
            continue
        top, left = (height - h) // 2, (width - w) // 2
        used += 1
        yield x[..., top : top + h, left : left + w]


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m", "--model", required=True, help="OSCAR model: zoo name, folder or hf-hub:org/name"
    )
    parser.add_argument("images", help="folder of calibration images (the training set, paper Eq. 10)")
    parser.add_argument("--max-images", type=int, default=None, help="use at most this many images")
    parser.add_argument("--crop", type=int, default=512, help="centre crop to at most this side (0: none)")
    parser.add_argument("--axis", choices=("position", "channel"), default="position",
                        help="vectors of the similarity: per position (Eq. 6) or per channel")  # fmt: skip
    parser.add_argument(
        "--no-rescale", action="store_true", help="use the proj output before the norm rescale"
    )
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument(
        "--output", default=None, help="write the model with the new timesteps to this folder"
    )


def run(args: argparse.Namespace) -> int:
    import diffcodec
    from diffcodec.codecs.oscar import OSCAR

    codec = diffcodec.load(args.model, device=args.device)
    if not isinstance(codec, OSCAR):
        raise TypeError(f"{args.model} is a {codec.method} codec; calibration applies to OSCAR")
    multiple = codec.backbone.vae_scale_factor * max(rung.latent_stride for rung in codec.rung_table)
    images = folder_images(args.images, multiple, crop=args.crop or None, max_images=args.max_images)
    result = calibrate(codec, images, axis=args.axis, rescaled=not args.no_rescale)
    print(result.to_json())
    for rung, (sim, t, old) in enumerate(zip(result.similarities, result.timesteps, codec.timesteps)):
        print(f"rung {rung}: F = {sim:.4f} -> t = {t} (was {old})", file=sys.stderr)
    if args.output:
        codec.set_timesteps(result.timesteps)
        codec.save_pretrained(args.output)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diffcodec.training.calibration", description=__doc__.split("\n")[0]
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
