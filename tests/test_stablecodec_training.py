"""StableCodec training (stage 1 and stage 2) on small configs, on CPU: the recipe runs through the CLI,
the right parameters train, and the discriminator update receives no generator gradient."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from PIL import Image
from recipe_utils import build_training_module, set_model_args, write_test_recipe
from torch.utils.data import DataLoader

from diffcodec.codecs.stablecodec import StableCodec
from diffcodec.codecs.stablecodec.training import StableCodecTraining
from diffcodec.training.cli import run_argv
from diffcodec.training.init import read_lightning_checkpoint

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "stablecodec" / "small_cpu.yaml"


def _recipe(tmp_path: Path, folder: Path, name: str, **model: object) -> Path:
    recipe = yaml.safe_load(RECIPE.read_text())
    set_model_args(recipe, StableCodec, **model)
    recipe["data"]["init_args"].update(
        train_dir=str(folder), val_dir=str(folder), num_workers=0, val_max_images=1
    )
    max_steps = 2 if model.get("stage") == 2 else 1
    return write_test_recipe(recipe, tmp_path, name, max_steps=max_steps, val_check_interval=2)


@pytest.mark.heavy
def test_small_cpu_recipe_stage1_then_stage2(tmp_path: Path, photos_dir: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for index, path in enumerate(sorted(photos_dir.glob("*.png"))[:2]):
        with Image.open(path) as image:
            image.convert("RGB").resize((256, 256)).save(folder / f"{index}.png")

    # stage 1: two micro-batches accumulated into one optimizer step
    assert run_argv("fit", ["-c", str(_recipe(tmp_path, folder, "stage1", stage=1))]) == 0
    stage1 = read_lightning_checkpoint(tmp_path / "stage1/ckpt/last.ckpt")
    assert stage1["global_step"] == 1
    state = {k.removeprefix("codec."): v for k, v in stage1["state_dict"].items()}
    assert not any(k.startswith("discriminator.") for k in state)
    lora_b = [k for k in state if ".lora_B." in k]
    assert any(k.startswith("backbone.vae.") for k in lora_b) and any(
        k.startswith("backbone.unet.") for k in lora_b
    )
    assert all(
        state[k].abs().sum() > 0 for k in lora_b
    )  # B starts at zero (gaussian init): all of it trained
    metrics = next((tmp_path / "stage1").rglob("metrics.csv")).read_text()
    assert "train/bpp" in metrics and "train/lpips" in metrics and "train/clip" in metrics

    # stage 2 from stage 1: generator and discriminator (2 optimizer steps = one update)
    stage2 = _recipe(tmp_path, folder, "stage2", stage=2, lambdas=[8], lpips_weight=0.0)
    init = [
        "--init_from.checkpoint",
        str(tmp_path / "stage1/ckpt/last.ckpt"),
        "--init_from.new_modules",
        "[discriminator]",
    ]
    assert run_argv("fit", ["-c", str(stage2), *init]) == 0
    after = read_lightning_checkpoint(tmp_path / "stage2/ckpt/last.ckpt")
    assert after["global_step"] == 2
    heads = [k for k in after["state_dict"] if k.startswith("discriminator.heads.")]
    assert heads and after["state_dict"]["codec.active_rung"] == 0
    metrics = next((tmp_path / "stage2").rglob("metrics.csv")).read_text()
    assert "train/adversarial" in metrics and "train/d_real" in metrics


def test_stage2_update_trains_what_it_should(tmp_path: Path) -> None:
    """The generator's trainable parts change, the frozen ones do not; a discriminator head receives one
    gradient deposit per micro-batch (its own loss), none from the generator's adversarial term (the
    official loop leaks it, spec §8.3)."""
    module = build_training_module(
        RECIPE, StableCodec, StableCodecTraining, stage=2, lambdas=[8], lpips_weight=0.0, clip_weight=0.0
    )
    deposits: list[int] = []
    head = module.discriminator.out.parametrizations.weight.original
    head.register_hook(lambda grad: deposits.append(1))
    before = {k.removeprefix("codec."): v.clone() for k, v in module.state_dict().items()}
    before_head = head.detach().clone()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    images = DataLoader([torch.rand(3, 256, 256) for _ in range(2)], batch_size=1)
    trainer.fit(module, images)
    assert len(deposits) == 2  # two micro-batches (accumulated), discriminator loss only
    assert not torch.equal(head.detach(), before_head)
    after = {k.removeprefix("codec."): v for k, v in module.state_dict().items()}
    trained = [
        "latent_codec.context_model.entropy_parameters.g_c.block.0.blocks.1.fc1.weight",
        "latent_codec.aux.block.5.branch1.2.weight", "backbone.unet.conv_in.weight",
        *[k for k in after if ".lora_B." in k],
    ]  # fmt: skip
    for key in trained:
        assert not torch.equal(after[key], before[key]), key
    frozen = [
        "aux_encoder.analysis_transform.0.weight", "backbone.vae.decoder.conv_out.weight",
        "backbone.unet.down_blocks.0.resnets.0.conv1.base_layer.weight", "backbone.conditioning.embedding",
        "discriminator.backbone.embeddings.patch_embeddings.projection.weight",
    ]  # fmt: skip
    for key in frozen:
        assert torch.equal(after[key], before[key]), key


def test_generator_terms_and_errors() -> None:
    module = build_training_module(RECIPE, StableCodec, StableCodecTraining, lpips_weight=0.0)
    codec = module.codec
    x = torch.rand(1, 3, 256, 256)
    terms = module.generator_terms(x)
    assert {"bpp", "mse", "clip", "loss"} <= set(terms) and "adversarial" not in terms
    expected = 0.5 * terms["bpp"] + 2.0 * terms["mse"] + 0.1 * terms["clip"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    terms["loss"].backward()
    quantiles = codec.latent_codec.entropy_bottleneck.quantiles
    assert codec.latent_codec.g_a.pre2.weight.grad is not None
    assert quantiles.grad is None or quantiles.grad.abs().sum() == 0  # no auxiliary loss (spec §5.1)
    assert all(p.grad is None for p in codec.aux_encoder.parameters())
    for stage in (0, 3):  # a codec is always usable for inference; training has stages 1 and 2
        with pytest.raises(ValueError, match="stage"):
            StableCodecTraining(codec, stage=stage)
