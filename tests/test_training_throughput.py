"""Training throughput options (issue 19): bf16 mixed precision with float32 entropy models, the
``channels_last`` and ``compile`` options of every training module, on the CPU at tiny sizes."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch
from diffusers import AutoencoderKL
from recipe_utils import build_training_module, write_test_recipe
from test_small_base import shrunk
from torch import nn
from torch.utils.data import DataLoader

from diffcodec.entropy.factorized import EntropyBottleneck
from diffcodec.entropy.gaussian import GaussianConditional
from diffcodec.entropy.vq import VectorQuantize
from diffcodec.errors import UsageError
from diffcodec.nn.backbone import tiny_configs
from diffcodec.training.cli import run_argv
from diffcodec.training.init import read_lightning_checkpoint
from diffcodec.training.small_base import AutoencoderPretraining, DenoiserPretraining
from diffcodec.training.throughput import ThroughputOptions, compile_targets, to_channels_last

REPO = Path(__file__).resolve().parents[1]
ENTROPY_MODELS = (GaussianConditional, EntropyBottleneck, VectorQuantize)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------- tiny training modules, one per method
def _reference() -> L.LightningModule:
    from diffcodec.codecs.reference import LatentHyperprior
    from diffcodec.codecs.reference.training import LatentHyperpriorTraining

    return LatentHyperpriorTraining(LatentHyperprior(channels=8, latent_channels=8, hyper_channels=4))


def _oscar(stage: int) -> Callable[[], L.LightningModule]:
    def build() -> L.LightningModule:
        from diffcodec.codecs.oscar import OSCAR
        from diffcodec.codecs.oscar.training import OSCARTraining

        codec = OSCAR(hyper_channels=8, hyper_latent_channels=8, codebook_dim=4, embedding_length=4)
        return OSCARTraining(codec, stage=stage, dists_weight=0.0, edge_dists_weight=0.0)

    return build


def _stablecodec(stage: int) -> Callable[[], L.LightningModule]:
    def build() -> L.LightningModule:
        from diffcodec.codecs.stablecodec import StableCodec
        from diffcodec.codecs.stablecodec.training import StableCodecTraining

        recipe = REPO / "recipes/stablecodec/small_cpu.yaml"
        extra = {"lambdas": [8], "clip_weight": 0.0} if stage == 2 else {}
        return build_training_module(
            recipe, StableCodec, StableCodecTraining, stage=stage, lpips_weight=0.0, **extra
        )

    return build


def _cadc() -> L.LightningModule:
    from diffcodec.codecs.cadc import CADC
    from diffcodec.codecs.cadc.training import CADCTraining

    return build_training_module(REPO / "recipes/cadc/small_cpu.yaml", CADC, CADCTraining, lpips_weight=0.0)


def _onedc(stage: int) -> Callable[[], L.LightningModule]:
    def build() -> L.LightningModule:
        from diffcodec.codecs.onedc import TINY_LATENT_CODEC, OneDC
        from diffcodec.codecs.onedc.training import OneDCTraining

        return OneDCTraining(
            OneDC(lambdas=[4.6], latent_codec=TINY_LATENT_CODEC), stage=stage, lpips_weight=0.0
        )

    return build


def _autoencoder() -> L.LightningModule:
    return AutoencoderPretraining(vae_config=tiny_configs()["vae_config"], lpips_weight=0.0)


def _denoiser(tmp_path: Path) -> L.LightningModule:
    AutoencoderKL.from_config(tiny_configs()["vae_config"]).save_pretrained(tmp_path / "vae")
    return DenoiserPretraining(base_dir=str(tmp_path), output_dir=str(tmp_path / "base"))


def _ignoring_tmp(builder: Callable[[], L.LightningModule]) -> Callable[[Path], L.LightningModule]:
    return lambda tmp_path: builder()


#: name: (builder of tmp_path, image size, micro-batches to run, whether entropy models run)
METHODS = {
    "reference": (_ignoring_tmp(_reference), 128, 1, True),
    "oscar-stage1": (_ignoring_tmp(_oscar(1)), 64, 1, True),
    "oscar-stage2": (_ignoring_tmp(_oscar(2)), 64, 1, True),
    "stablecodec-stage1": (_ignoring_tmp(_stablecodec(1)), 256, 1, True),
    "stablecodec-stage2": (_ignoring_tmp(_stablecodec(2)), 256, 1, True),
    "cadc-stage1": (_ignoring_tmp(_cadc), 256, 1, True),
    "onedc-stage1": (_ignoring_tmp(_onedc(1)), 128, 1, True),
    "onedc-stage2": (_ignoring_tmp(_onedc(2)), 128, 2, True),  # two micro-batches: one generator turn
    "small-base-vae": (_ignoring_tmp(_autoencoder), 64, 1, False),
    "small-base-unet": (_denoiser, 64, 1, False),
}


def build(name: str, tmp_path: Path) -> L.LightningModule:
    torch.manual_seed(0)
    return METHODS[name][0](tmp_path)


class Losses(L.Callback):
    """Records each micro-batch's returned loss."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, *args) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.seen.append(float(loss))


def fit(
    module: L.LightningModule, size: int, steps: int, precision: str = "32-true", seed: int = 0
) -> Losses:
    losses = Losses()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, precision=precision, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[losses],
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=generator) for _ in range(2)]
    torch.manual_seed(seed)
    trainer.fit(module, DataLoader(images, batch_size=1))
    return losses


# ------------------------------------------------------------------- bf16 autocast
def test_entropy_models_stay_float32_under_autocast() -> None:
    """Under CPU bf16 autocast a matmul runs in bf16; the entropy models' likelihoods, the factorized
    prior's aux loss and the VQ's choice of codes are still computed in float32 from upcast inputs, and
    equal the plain float32 results."""
    torch.manual_seed(0)
    y, scales, means = torch.randn(2, 8, 4, 4) * 3, torch.rand(2, 8, 4, 4) + 0.2, torch.randn(2, 8, 4, 4)
    gaussian, bottleneck = GaussianConditional(None).eval(), EntropyBottleneck(8).eval()
    vq = VectorQuantize(8, 16, codebook_dim=4).eval()
    tokens = torch.randn(2, 5, 8)
    expected = (gaussian(y, scales, means)[1], bottleneck(y)[1], bottleneck.loss(), vq(tokens).indices)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.matmul(y, y).dtype == torch.bfloat16  # autocast is on
        low = [t.bfloat16().float() for t in (y, scales, means)]  # what bf16 layers hand over
        got = (
            gaussian(*(t.bfloat16() for t in (y, scales, means)))[1],
            bottleneck(y.bfloat16())[1],
            bottleneck.loss(),
            vq(tokens.bfloat16()).indices,
        )
    for value in got[:3]:
        assert value.dtype == torch.float32
    torch.testing.assert_close(got[0], gaussian(*low)[1])
    torch.testing.assert_close(got[1], bottleneck(low[0])[1])
    torch.testing.assert_close(got[2], expected[2])
    assert torch.equal(got[3], vq(tokens.bfloat16().float()).indices)
    assert torch.equal(expected[3], vq(tokens).indices)


@pytest.mark.parametrize("name", list(METHODS))
def test_a_bf16_mixed_step_of_every_training_module(name: str, tmp_path: Path) -> None:
    """One optimiser step with ``precision="bf16-mixed"`` (torch.autocast on the CPU): convolutions run in
    bf16, every entropy-model output (ŷ, likelihoods, VQ codes) is float32, the loss is finite and the
    weights move."""
    module = build(name, tmp_path)
    _, size, steps, has_rate = METHODS[name]
    dtypes: dict[str, set[torch.dtype]] = {"conv": set(), "entropy": set()}

    def record(kind: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: tuple, output: object) -> None:
            values = output if isinstance(output, tuple) else getattr(output, "__dict__", {}).values()
            dtypes[kind] |= {v.dtype for v in values if isinstance(v, torch.Tensor) and v.is_floating_point()}
            if isinstance(output, torch.Tensor):
                dtypes[kind].add(output.dtype)

        return hook

    for mod in module.modules():
        if isinstance(mod, nn.Conv2d):
            mod.register_forward_hook(record("conv"))
        elif isinstance(mod, ENTROPY_MODELS):
            mod.register_forward_hook(record("entropy"))
    before = {k: v.detach().clone() for k, v in module.named_parameters() if v.requires_grad}
    losses = fit(module, size, steps, precision="bf16-mixed")
    assert losses.seen and all(math.isfinite(loss) for loss in losses.seen)
    assert torch.bfloat16 in dtypes["conv"]
    assert dtypes["entropy"] == ({torch.float32} if has_rate else set())
    moved = [k for k, v in module.named_parameters() if k in before and not torch.equal(v, before[k])]
    assert moved and all(p.dtype == torch.float32 for p in module.parameters())  # fp32 master weights


# ------------------------------------------------------------------- channels_last
def test_to_channels_last_converts_only_4d_float_tensors() -> None:
    images, labels, flat = torch.rand(2, 3, 8, 8), torch.zeros(2, 3, 8, 8, dtype=torch.long), torch.rand(3, 8)
    out = to_channels_last(images)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert not images.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, images)
    assert to_channels_last(labels) is labels and to_channels_last(flat) is flat


@pytest.mark.parametrize("name", ["oscar-stage1", "small-base-vae"])
def test_channels_last_changes_the_layout_not_the_loss(name: str, tmp_path: Path) -> None:
    """The conv weights and the batch are channels_last; over two steps the losses match the default
    layout's to float rounding (the second one after an AdamW update), and the state-dict keys are the same.
    (Weights are not compared: Adam's first step is ≈ lr·sign(g), and the sign of a near-zero gradient
    depends on the summation order.)"""
    plain = build(name, tmp_path)
    fast = copy.deepcopy(plain)
    fast.hparams["channels_last"] = True  # as the constructor argument sets it
    size = METHODS[name][1]
    seen: list[torch.Tensor] = []
    conv_in = next(m for n, m in fast.named_modules() if n.endswith("vae.encoder.conv_in"))
    conv_in.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))  # sees the batch's images
    a, b = fit(plain, size, 2), fit(fast, size, 2)
    convs = [m.weight for m in fast.modules() if isinstance(m, nn.Conv2d) and m.weight.shape[-1] > 1]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)
    assert seen and seen[0].is_contiguous(memory_format=torch.channels_last)
    assert len(a.seen) == 2 and a.seen == pytest.approx(b.seen, rel=1e-3)
    assert a.seen[0] == pytest.approx(b.seen[0], rel=1e-5)
    assert list(plain.state_dict()) == list(fast.state_dict())


# ------------------------------------------------------------------- compile
@pytest.mark.parametrize("name", ["oscar-stage2", "onedc-stage2", "small-base-vae", "small-base-unet"])
def test_compile_compiles_the_heavy_networks_in_place(name: str, tmp_path: Path) -> None:
    """compile=True: configure_model calls ``nn.Module.compile`` on every U-Net and VAE encoder/decoder
    (also training-only ones), the state-dict keys do not change (checkpoints and export stay compatible).
    The compilation itself happens at the first forward (see the heavy test below)."""
    module = build(name, tmp_path)
    keys = list(module.state_dict())
    targets = compile_targets(module)
    assert targets and all(net._compiled_call_impl is None for _, net in targets)
    module.hparams["compile"] = True
    module.configure_model()
    assert all(net._compiled_call_impl is not None for _, net in targets)
    assert list(module.state_dict()) == keys
    names = {n for n, _ in targets}
    if name == "oscar-stage2":
        assert {"codec.backbone.unet", "codec.backbone.vae.decoder", "discriminator.unet"} <= names
    if name == "onedc-stage2":
        assert {"guidance.real_unet", "guidance.fake_unet"} <= names
    if name == "small-base-unet":
        assert {"unet", "vae.encoder"} <= names


class _ConvOnly(ThroughputOptions, L.LightningModule):
    def __init__(self, channels_last: bool = False, compile: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.conv = nn.Conv2d(3, 3, 3)


def test_compile_without_a_network_to_compile_is_a_clear_error() -> None:
    """The mixin on a module with no U-Net or VAE: compile=True is refused, channels_last still applies."""
    with pytest.raises(UsageError, match="no U-Net or VAE"):
        _ConvOnly(compile=True).configure_model()
    module = _ConvOnly(channels_last=True)
    module.configure_model()
    assert module.conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = module.images((torch.rand(1, 3, 8, 8), torch.zeros(1)))
    assert x.shape == (1, 3, 8, 8) and x.is_contiguous(memory_format=torch.channels_last)
    assert not _ConvOnly().images(torch.rand(1, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)


#: A one-level VAE without attention: the smallest graph for a real compilation.
ONE_LEVEL_VAE = {
    "down_block_types": ["DownEncoderBlock2D"], "up_block_types": ["UpDecoderBlock2D"],
    "block_out_channels": [8], "layers_per_block": 1, "latent_channels": 4, "norm_num_groups": 4,
    "mid_block_add_attention": False,
}  # fmt: skip


@pytest.mark.heavy
def test_a_compiled_training_step_on_the_cpu(tmp_path: Path) -> None:
    """A real torch.compile (inductor, C++ on the CPU) of a one-level VAE's encoder and decoder, forward
    and backward: the step's loss equals the eager one's to float rounding and the keys are unchanged."""
    torch.manual_seed(0)
    eager = AutoencoderPretraining(vae_config=ONE_LEVEL_VAE, lpips_weight=0.0)
    compiled = copy.deepcopy(eager)
    compiled.hparams["compile"] = True
    a, b = fit(eager, 64, 1), fit(compiled, 64, 1)
    assert compiled.vae.encoder._compiled_call_impl is not None
    assert a.seen == pytest.approx(b.seen, rel=1e-4)
    assert list(eager.state_dict()) == list(compiled.state_dict())


# ------------------------------------------------------------------- recipes
def test_recipe_flags_reach_the_module_and_checkpoints_stay_contiguous(
    tmp_path: Path, photos_dir: Path
) -> None:
    """``--model.init_args.channels_last true`` through ``diffcodec fit`` (the small-base VAE recipe, tiny
    VAE, bf16-mixed): the checkpoint records the option, holds contiguous tensors with the usual keys, and
    the written VAE folder loads back."""
    recipe = shrunk(
        "vae.yaml", photos_dir, output_dir=str(tmp_path / "out"), vae_config=tiny_configs()["vae_config"],
        lpips_weight=0.0,
    )  # fmt: skip
    path = write_test_recipe(recipe, tmp_path, "vae", max_steps=2, val_check_interval=2)
    flags = ["--model.init_args.channels_last", "true", "--trainer.precision", "bf16-mixed"]
    assert run_argv("fit", ["-c", str(path), *flags]) == 0
    checkpoint = read_lightning_checkpoint(tmp_path / "vae/ckpt/last.ckpt")
    assert checkpoint["hyper_parameters"]["channels_last"] is True
    assert checkpoint["hyper_parameters"]["compile"] is False
    state = checkpoint["state_dict"]
    assert list(state) == list(_autoencoder().state_dict())
    assert all(v.is_contiguous() for v in state.values())
    vae = AutoencoderKL.from_pretrained(tmp_path / "out" / "vae")
    assert vae.encoder.conv_in.weight.is_contiguous()


# ------------------------------------------------------------------- the benchmark script
def test_training_speed_benchmark_runs_old_and_new_pipelines(tmp_path: Path, photos_dir: Path) -> None:
    """``benchmarks/training_speed.py`` in a fresh process on the U-Net phase (its base folder does not
    exist here: a random-init stand-in is built): both pipelines run, with the settings they claim."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "speed.json"
    command = [
        sys.executable, str(REPO / "benchmarks/training_speed.py"), "--root", str(photos_dir.parent),
        "--accelerator", "cpu", "--recipe", "recipes/base/unet_eps.yaml", "--steps", "2", "--warmup", "1",
        "--crop", "64", "--batch-size", "1", "--json", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    old, new = json.loads(out.read_text())["results"]
    assert (old["pipeline"], old["data"], old["precision"]) == ("old", "ImageFolderDataModule", "32-true")
    assert not old["channels_last"] and not old["compile"]
    assert (new["pipeline"], new["data"], new["channels_last"]) == ("new", "CropBankDataModule", True)
    assert new["precision"] == "32-true"  # auto on the CPU
    assert old["steps_per_s"] > 0 and new["steps_per_s"] > 0
    assert new["speedup"] == pytest.approx(new["steps_per_s"] / old["steps_per_s"], rel=0.01)
    assert old["crops"] == [{"size": 64}, {"size": 64, "downscale_from": 128}] and old["batch_size"] == 1
    assert "steps/s" in run.stdout and not (tmp_path / "runs").exists()  # nothing written beside it
