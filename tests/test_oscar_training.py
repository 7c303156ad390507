"""OSCAR training: the losses, the stage-2 generator terms (paper Eq. 14-16), and the small CPU recipe run
through ``diffcodec fit`` for stage 1 and then stage 2 (from the stage-1 checkpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from recipe_utils import write_test_recipe

from diffcodec.codecs.oscar import OSCAR
from diffcodec.codecs.oscar.training import OSCARTraining
from diffcodec.training import losses
from diffcodec.training.cli import run_argv
from diffcodec.training.init import read_lightning_checkpoint

REPO = Path(__file__).resolve().parents[1]
SMALL = {"hyper_channels": 32, "hyper_latent_channels": 64, "codebook_dim": 8, "embedding_length": 8}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared, oversubscribed CPU two threads spin-wait and run ~10× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pixel_sobel_cosine_and_gan_losses() -> None:
    x = torch.zeros(1, 3, 5, 6)
    x[..., 3:] = 1.0  # a vertical edge between columns 2 and 3
    edges = losses.sobel_magnitude(x)
    assert edges.shape == (1, 1, 5, 6)
    grey = 0.2989 + 0.587 + 0.114
    torch.testing.assert_close(edges[0, 0, 2, 2], torch.tensor((16 * grey**2 + 1e-6) ** 0.5))  # |Gx| = 4·Y
    torch.testing.assert_close(edges[0, 0, 2, 0], torch.tensor(1e-6**0.5))  # flat interior
    assert losses.pixel_loss(x, torch.zeros_like(x), "l1") == 0.5
    assert losses.pixel_loss(x, torch.zeros_like(x), "mse") == 0.5
    a = torch.randn(2, 4, 3, 5)
    b = a * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)  # per-channel scaling
    torch.testing.assert_close(losses.latent_cosine_similarity(a, b, "channel"), torch.ones(2))
    assert (losses.latent_cosine_similarity(a, b, "position") < 1).all()
    logits = torch.tensor([0.0, 2.0])
    torch.testing.assert_close(losses.generator_loss(logits), torch.nn.functional.softplus(-logits).mean())
    torch.testing.assert_close(losses.discriminator_loss(logits, -logits, "hinge"), torch.tensor(0.5))
    with pytest.raises(ValueError, match="axis"):
        losses.latent_cosine_similarity(a, b, "pixel")  # type: ignore[arg-type]


def test_stage2_terms_follow_the_paper() -> None:
    torch.manual_seed(0)
    codec = OSCAR(**SMALL)
    module = OSCARTraining(codec, stage=2, dists_weight=0.0, edge_dists_weight=0.0).train()
    assert not module.automatic_optimization  # G/D alternation: manual
    assert OSCARTraining(codec, stage=2, gan_weight=0.0).automatic_optimization  # one optimiser
    x = torch.rand(2, 3, 64, 64)
    terms = module.generator_terms(x, rung=5)
    assert {"pixel", "cosine", "commit", "gan", "loss"} <= set(terms)
    assert terms["commit"] > 0  # Eq. 7-8: the commitment term is part of L_repa
    (grad,) = torch.autograd.grad(terms["gan"], terms["x0"], retain_graph=True)
    assert grad.abs().sum() > 0  # the GAN term reaches the generator (inert in the official code)
    terms["loss"].backward()
    lora = [p for n, p in codec.backbone.unet.named_parameters() if "lora_B.default_decoder" in n]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    encoder = codec.hyper_encoders[5]
    assert encoder.backbone[0].weight.grad.abs().sum() > 0  # through the VQ (rotation trick)
    assert codec.hyper_encoders[0].backbone[0].weight.grad is None  # one rung per step
    base = codec.backbone.unet.conv_in.base_layer.weight
    assert not base.requires_grad  # conv_in's base weights stay frozen; its LoRA trains


def _recipe(tmp_path: Path, folder: Path, name: str, stage: int, max_steps: int) -> Path:
    recipe = yaml.safe_load((REPO / "recipes/oscar/small_cpu.yaml").read_text())
    recipe["model"]["init_args"]["stage"] = stage  # a training setting; the codec's are under "codec"
    recipe["data"]["init_args"].update(
        train_dir=str(folder), val_dir=str(folder), crops=64, batch_size=2, num_workers=0, val_max_images=1
    )
    return write_test_recipe(recipe, tmp_path, name, max_steps=max_steps, val_check_interval=1)


def test_small_cpu_recipe_stage1_then_stage2(tmp_path: Path, photos_dir: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for index, path in enumerate(sorted(photos_dir.glob("*.png"))[:2]):
        with Image.open(path) as image:
            image.convert("RGB").resize((96, 64)).save(folder / f"{index}.png")

    assert run_argv("fit", ["-c", str(_recipe(tmp_path, folder, "stage1", 1, max_steps=2))]) == 0
    stage1 = read_lightning_checkpoint(tmp_path / "stage1/ckpt/last.ckpt")
    assert stage1["global_step"] == 2
    state = stage1["state_dict"]
    assert not any(k.startswith("discriminator.") for k in state)
    fresh = OSCAR(**SMALL).state_dict()
    assert not torch.equal(
        state["codec.hyper_encoders.0.backbone.0.weight"], fresh["hyper_encoders.0.backbone.0.weight"]
    )
    assert not torch.equal(
        state["codec.hyper_encoders.7.quantizer._codebook.cluster_size"],
        torch.ones_like(state["codec.hyper_encoders.7.quantizer._codebook.cluster_size"]),
    )  # EMA
    metrics = next((tmp_path / "stage1").rglob("metrics.csv")).read_text()
    assert "train/cosine_q0" in metrics and "val/cosine_q7" in metrics

    stage2_recipe = _recipe(tmp_path, folder, "stage2", 2, max_steps=4)
    init = [
        "--init_from.checkpoint",
        str(tmp_path / "stage1/ckpt/last.ckpt"),
        "--init_from.new_modules",
        "[discriminator]",
    ]
    assert run_argv("fit", ["-c", str(stage2_recipe), *init]) == 0
    stage2 = read_lightning_checkpoint(tmp_path / "stage2/ckpt/last.ckpt")
    assert stage2["global_step"] == 4  # two iterations of a generator and a discriminator step
    assert any(k.startswith("discriminator.cls_pred_branch.") for k in stage2["state_dict"])
    metrics = next((tmp_path / "stage2").rglob("metrics.csv")).read_text()
    for name in ("train/dists", "train/edge_dists", "train/gan", "train/discriminator", "val/mse_q0"):
        assert name in metrics
