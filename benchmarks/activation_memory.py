"""Peak activation memory of one untiled pass of the full-size SD-2.1 U-Net or VAE decoder (random weights,
fp32, CPU, one thread): growth of the process's peak RSS during the pass. The numbers behind the estimates
in diffcodec/nn/memory.py (docs/backbone.md, "Tiling and memory"). One process per measurement::

    python benchmarks/activation_memory.py unet 32      # latent 32×32
    python benchmarks/activation_memory.py vae 64       # latent 64×64 → 512×512 px
"""

from __future__ import annotations

import gc
import resource
import sys
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from diffcodec.nn.backbone import reference_configs


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main(what: str, size: int) -> None:
    torch.set_num_threads(1)
    configs = reference_configs("sd-2.1")
    if what == "unet":
        model = UNet2DConditionModel.from_config(configs["unet_config"]).eval()
        sample, context = torch.randn(1, 4, size, size), torch.randn(1, 77, 1024)

        def run() -> torch.Tensor:
            return model(sample, 999, encoder_hidden_states=context).sample
    else:
        model = AutoencoderKL.from_config(configs["vae_config"]).eval()
        latent = torch.randn(1, 4, size, size)

        def run() -> torch.Tensor:
            return model.decode(latent).sample

    gc.collect()
    before, start = peak_rss(), time.time()
    with torch.inference_mode():
        run()
    grown, seconds = (peak_rss() - before) / 2**20, time.time() - start
    print(f"{what} latent {size}²: peak activation {grown:.0f} MiB, {seconds:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
