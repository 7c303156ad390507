"""Helpers of the converter round-trip tests (tests/test_convert_roundtrip.py).

Small base models saved as diffusers folders (the full-size SD ones are too slow on a CPU), every rung
coded in this process or in a fresh one, the ``diffcodec`` command run as users run it, and the check that
a checkpoint holds every tensor that differs from its base model.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file

from diffcodec.nn.backbone import OneStepBackbone

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

#: Loads a converted folder with ``diffcodec.load`` and codes every rung (argv: folder, image, output).
FRESH_PROCESS = f"""
import sys
import torch
sys.path.insert(0, {str(TESTS)!r})
torch.set_num_threads(1)
import diffcodec
from convert_utils import code_every_rung
from safetensors.torch import save_file
save_file(code_every_rung(diffcodec.load(sys.argv[1]), sys.argv[2]), sys.argv[3])
"""


def write_small_base(folder: Path, configs: Mapping[str, Any], *, seed: int, text: bool = False) -> Path:
    """A random-init base model as a diffusers folder: vae/, unet/, scheduler/ (and with ``text``:
    tokenizer/, text_encoder/)."""
    torch.manual_seed(seed)
    parts = OneStepBackbone.from_config(**configs)
    parts.vae.save_pretrained(folder / "vae")
    parts.unet.save_pretrained(folder / "unet")
    DDPMScheduler.from_config(configs["scheduler_config"]).save_pretrained(folder / "scheduler")
    if text:
        from test_backbone import make_text_encoder, make_tokenizer

        tokenizer = make_tokenizer()
        tokenizer.save_pretrained(folder / "tokenizer")
        make_text_encoder(len(tokenizer)).save_pretrained(folder / "text_encoder")
    return folder


def base_states(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The base model's tensors by the codec prefix they live under."""
    return {
        "backbone.unet.": UNet2DConditionModel.from_pretrained(folder / "unet").state_dict(),
        "backbone.vae.": AutoencoderKL.from_pretrained(folder / "vae").state_dict(),
    }


_BASE_LAYER = re.compile(r"\.base_layer(?=\.)")


def keys_differing_from_base(
    state: Mapping[str, torch.Tensor], bases: Mapping[str, Mapping[str, torch.Tensor]]
) -> set[str]:
    """Entries of ``state`` that are not bit-identical to the base model's tensor of the same name (peft's
    ``.base_layer`` wrapper removed); entries the base model does not have differ by definition."""
    differing = set()
    for key, value in state.items():
        prefix = next((p for p in bases if key.startswith(p)), None)
        if prefix is not None:
            reference = bases[prefix].get(_BASE_LAYER.sub("", key[len(prefix) :]))
            if reference is not None and reference.dtype == value.dtype and torch.equal(reference, value):
                continue
        differing.add(key)
    return differing


def code_every_rung(codec: Any, image: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """``{r}.file`` (the bytes) and ``{r}.x_hat`` (the decoded image) of ``image`` at every rung.

    The global RNG is seeded per rung: OSCAR encodes a VAE posterior *sample* (as the official code does).
    """
    outputs = {}
    for rung in range(codec.num_rungs):
        torch.manual_seed(rung)
        data = codec.compress(str(image), quality=rung).to_bytes()
        outputs[f"{rung}.file"] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        outputs[f"{rung}.x_hat"] = codec.decompress(data, output="tensor").contiguous()
    return outputs


def run_python(*args: str, timeout: int = 900) -> str:
    """``python *args`` with this tree first on the path, offline, one thread; its stdout."""
    env = {
        **os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )
    if result.returncode:
        raise AssertionError(
            f"python {' '.join(args[:4])} … exited {result.returncode}:\n{result.stderr[-4000:]}"
        )
    return result.stdout


def convert_cli(*args: str) -> str:
    """``diffcodec convert *args`` in a subprocess (the command users run)."""
    return run_python("-m", "diffcodec.cli", "convert", *args)


def outputs_in_fresh_process(folder: Path, image: Path, scratch: Path) -> dict[str, torch.Tensor]:
    """:func:`code_every_rung` of ``diffcodec.load(folder)`` in a new Python process."""
    output = scratch / "fresh-outputs.safetensors"
    run_python("-c", FRESH_PROCESS, str(folder), str(image), str(output))
    return load_file(str(output))


def max_float_difference(fresh: Mapping[str, torch.Tensor], memory: Mapping[str, torch.Tensor]) -> float:
    """Assert identical files at every rung; return the largest decoded-image difference."""
    assert fresh.keys() == memory.keys()
    worst = 0.0
    for key, value in memory.items():
        if key.endswith(".file"):
            assert torch.equal(fresh[key], value), f"rung {key.split('.')[0]}: the files differ"
        else:
            worst = max(worst, (fresh[key] - value).abs().max().item())
    return worst


def check_saved_weights(folder: Path, full_state: Mapping[str, torch.Tensor], base: Path) -> set[str]:
    """Assert that ``model.safetensors`` holds every tensor that differs from the base model, bit for bit,
    and none that the base model re-creates; returns the saved keys."""
    saved = load_file(str(folder / "model.safetensors"))
    differing = keys_differing_from_base(full_state, base_states(base))
    absent = sorted(differing - set(saved))
    assert not absent, f"{len(absent)} tensors differ from the base but are not saved, e.g. {absent[:5]}"
    redundant = sorted(set(saved) - differing)
    assert not redundant, f"{len(redundant)} saved tensors equal the base model's, e.g. {redundant[:5]}"
    for key, value in saved.items():
        assert torch.equal(value, full_state[key].to(value.dtype)), key
    return set(saved)
