"""``diffcodec demo``: compress a bundled sample image to a real file and back, offline.

Until the bundled trained small models exist (see the zoo), the demo runs the reference codec
(:class:`~diffcodec.codecs.latent_hyperprior.LatentHyperprior`) at its tiny size with a fixed seed: the file,
the bits and the round trip are real, the reconstruction quality is that of an untrained model.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from importlib import resources
from pathlib import Path

import torch

SAMPLE = "astronaut.png"


def sample_image_path() -> Path:
    """Path of the bundled sample image (public domain, see ``diffcodec/assets/SOURCES.md``)."""
    return Path(str(resources.files("diffcodec") / "assets" / SAMPLE))


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """PSNR in dB of two [0, 1] tensors after rounding both to 8 bits."""
    mse = float(((x * 255).round() - (y * 255).round()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", type=Path, default=None, help="image instead of the bundled sample")
    parser.add_argument("--out-dir", type=Path, default=Path("diffcodec-demo"), help="output folder")
    parser.add_argument("-q", "--quality", type=int, default=None, help="rung (default: middle)")


def run(args: argparse.Namespace) -> int:
    from diffcodec.bitstream import Bitstream
    from diffcodec.codecs.latent_hyperprior import LatentHyperprior
    from diffcodec.imageio import to_pil, to_tensor

    image_path = args.image or sample_image_path()
    torch.manual_seed(0)
    codec = LatentHyperprior(name="latent-hyperprior-demo").eval()
    quality = codec.num_rungs // 2 if args.quality is None else args.quality
    x = to_tensor(image_path)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(image_path).stem

    start = time.perf_counter()
    stream = codec.compress(x, quality=quality)
    encode_s = time.perf_counter() - start
    stream_path = args.out_dir / f"{stem}.dcb"
    stream.to_file(stream_path)

    start = time.perf_counter()
    x_hat = codec.decompress(Bitstream.from_file(stream_path), output="tensor")
    decode_s = time.perf_counter() - start
    recon_path = args.out_dir / f"{stem}.recon.png"
    to_pil(x_hat).save(recon_path)

    size = stream_path.stat().st_size
    height, width = x.shape[-2:]
    print(f"model      {codec.model_id} (untrained reference codec, quality {quality})", file=sys.stderr)
    print(f"image      {image_path} ({width}x{height})")
    print(f"file       {stream_path} ({size} bytes)")
    print(f"bpp        {8 * size / (height * width):.4f}")
    print(f"PSNR       {psnr(x, x_hat):.2f} dB")
    print(f"encode     {encode_s:.2f} s")
    print(f"decode     {decode_s:.2f} s")
    print(f"recon      {recon_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffcodec demo", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
