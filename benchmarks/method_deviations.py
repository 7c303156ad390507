"""The measured effects in the deviation tables of docs/methods/{oscar,stablecodec,onedc,cadc}.md.

On the bundled small models (trained), Kodak images, fp32, CPU, one thread: 8-bit rounding vs the official
truncation, OSCAR's float16 channel norms, tiled (``tile="always"``) vs untiled on a 1536×1024 mosaic,
OneDC padding modes, OSCAR's padding vs the official resize to multiples of 128, header bytes. About ten
minutes on a 2-core machine::

    HF_HUB_OFFLINE=1 python benchmarks/method_deviations.py
"""

from __future__ import annotations

import json
import math

import torch
from PIL import Image

import diffcodec
from diffcodec.codecs.oscar import channel_norms
from diffcodec.imageio import to_tensor

KODAK = "../shared/data/kodak"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / torch.mean((a - b) ** 2).item())


def levels(x: torch.Tensor, mode: str) -> torch.Tensor:
    v = x.clamp(0, 1) * 255
    return (v.round() if mode == "round" else v.floor()) / 255  # ToPILImage truncates (floor for v >= 0)


def main() -> None:
    torch.set_num_threads(1)
    images = [
        to_tensor(Image.open(f"{KODAK}/{n}.png").convert("RGB")) for n in ("kodim01", "kodim05", "kodim23")
    ]
    for model in ("oscar-small", "stablecodec-small", "onedc-small", "cadc-small"):
        codec = diffcodec.load(model)
        rung = codec.num_rungs // 2
        res: dict = {"rung": rung, "psnr_round": [], "psnr_trunc": [], "bpp": []}
        for x in images:
            torch.manual_seed(0)
            stream = codec.compress(x, quality=rung)
            x_hat = codec.decompress(stream.to_bytes(), output="tensor")
            res["psnr_round"].append(psnr(levels(x_hat, "round"), x))
            res["psnr_trunc"].append(psnr(levels(x_hat, "trunc"), x))
            res["bpp"].append(stream.bpp)
        big = images[0].repeat(1, 1, 2, 2)  # 1536×1024: every pass above its tile
        recon = {}
        for mode in ("never", "always"):
            codec.tile = mode
            torch.manual_seed(0)
            recon[mode] = codec.decompress(codec.compress(big, quality=rung).to_bytes(), output="tensor")
        codec.tile = "auto"
        res["tiling_psnr_never_always"] = (psnr(recon["never"], big), psnr(recon["always"], big))
        res["tiling_max_abs_diff"] = (recon["never"] - recon["always"]).abs().max().item()
        res["tiling_mean_abs_diff_8bit"] = ((recon["never"] - recon["always"]).abs().mean() * 255).item()
        if model == "oscar-small":  # float16 channel norms vs exact
            rels, diffs = [], []
            for x in images:
                with torch.no_grad():
                    torch.manual_seed(0)
                    z0 = codec.encode_latent(x)
                    z_hat = codec.hyper_encoders[rung].decode(codec.hyper_encoders[rung].encode(z0))
                    n32 = channel_norms(z0)
                    n16 = n32.half().float()
                    rels.append(((n16 - n32).abs() / n32).max().item())
                    a, b = codec.synthesize(z_hat, n32, rung)[0], codec.synthesize(z_hat, n16, rung)[0]
                    diffs.append(((a - b).abs().max().item(), abs(psnr(a, x) - psnr(b, x))))
            res["fp16_norms"] = (max(rels), max(d for d, _ in diffs), max(p for _, p in diffs))
        if model == "stablecodec-small":
            stream = codec.compress(images[2], quality=rung)
            res["header_and_side_bytes"] = len(stream.to_bytes()) - sum(len(b) for b in stream.streams)
        print(model, json.dumps(res), flush=True)

    crop = Image.open(f"{KODAK}/kodim23.png").convert("RGB").crop((0, 0, 700, 500))
    x = to_tensor(crop)
    codec = diffcodec.load("onedc-small")
    for mode in ("replicate", "reflect"):  # the λ models' padding vs the official z-only script's
        codec.pad_mode = mode
        stream = codec.compress(x, quality=1)
        x_hat = codec.decompress(stream.to_bytes(), output="tensor")
        print("onedc-small", mode, round(psnr(x_hat, x), 4), len(stream.to_bytes()), "bytes")
    codec = diffcodec.load("oscar-small")
    small = to_tensor(crop.resize((640, 384), Image.LANCZOS))  # the official test: down to multiples of 128
    for name, image in (("padded 700x500", x), ("resized 640x384", small)):
        torch.manual_seed(0)
        stream = codec.compress(image, quality=1)
        x_hat = codec.decompress(stream.to_bytes(), output="tensor")
        print("oscar-small", name, round(psnr(x_hat, image), 3), "dB", round(stream.bpp, 5), "bpp")


if __name__ == "__main__":
    main()
