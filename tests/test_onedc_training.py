"""OneDC training: the λ warm-up, DMD2 machinery, the code predictor, and both CPU recipes end to end."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import UNet2DConditionModel

from diffcodec.codecs.onedc import TINY_LATENT_CODEC, OneDC, small_backbone_config
from diffcodec.codecs.onedc.losses import (
    CodePredictor,
    LPIPSAvgPool,
    SwinBlock,
    code_prediction_loss,
    tokenizer_input,
)
from diffcodec.codecs.onedc.training import OneDCTraining
from diffcodec.training.cli import run_argv
from diffcodec.training.dmd import ClassifierHead, DMDGuidance, unet_mid_features, x0_from_noise
from diffcodec.training.init import read_lightning_checkpoint

REPO = Path(__file__).resolve().parents[1]
SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
}


def test_rate_lambda_warms_up_quadratically_with_the_official_step_zero_quirk() -> None:
    codec = OneDCTraining(OneDC(lambdas=[4.6], latent_codec=TINY_LATENT_CODEC), rate_warmup_steps=4000)
    assert codec.rate_lambda(0) == 4.6  # `if step and …` is falsy at step 0: the final λ
    assert codec.rate_lambda(None) == 4.6  # eval
    assert codec.rate_lambda(2000) == pytest.approx(1e-4 + 0.25 * (4.6 - 1e-4))
    assert codec.rate_lambda(4000) == pytest.approx(4.6)
    assert codec.rate_lambda(10_000) == 4.6
    codec.rate_weight = 1.5  # a HyperparameterSchedule callback may drive it instead
    assert codec.rate_lambda(10) == 1.5


@pytest.fixture(scope="module")
def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel.from_config(small_backbone_config(32)["unet_config"]).eval()


def test_mid_features_are_the_mid_block_output_of_the_full_forward(tiny_unet) -> None:
    sample, steps, text = torch.randn(2, 4, 8, 8), torch.tensor([3, 700]), torch.randn(2, 5, 32)
    captured = {}
    hook = tiny_unet.mid_block.register_forward_hook(lambda module, args, output: captured.update(mid=output))
    with torch.no_grad():
        tiny_unet(sample, steps, text)
        hook.remove()
        torch.testing.assert_close(unet_mid_features(tiny_unet, sample, steps, text), captured["mid"])


def test_distribution_matching_vanishes_when_the_fake_score_equals_the_real_one(tiny_unet) -> None:
    guidance = DMDGuidance(tiny_unet, copy.deepcopy(tiny_unet), SCHEDULER, real_guidance_scale=1.0)
    latents = torch.randn(2, 4, 16, 16, requires_grad=True)  # mid block 8×8: a 1×1 logit
    text = torch.randn(2, 5, 32)
    loss = guidance.distribution_matching_loss(latents, text)
    assert loss.item() == 0.0
    # with CFG the teacher differs from the fake score: a non-zero pull on the generator's latents only
    guidance.real_guidance_scale = 1.75
    loss = guidance.distribution_matching_loss(latents, text, torch.randn(1, 5, 32).expand(2, -1, -1))
    loss.backward()
    assert loss.item() > 0 and latents.grad.abs().sum() > 0
    assert all(p.grad is None for p in guidance.fake_unet.parameters())
    assert guidance.min_step == 20 and guidance.max_step == 640
    # the fake score and discriminator losses train the guidance parameters
    total = guidance.fake_score_loss(latents, text) + guidance.discriminator_loss(
        latents, latents * 0.5, text
    )
    total.backward()
    assert guidance.cls_pred_branch[0].weight.grad is not None
    assert all(p.grad is None for p in guidance.real_unet.parameters())
    alphas = guidance.alphas_cumprod
    noise = torch.randn(2, 4, 16, 16)
    steps = torch.tensor([999, 10])
    noisy = guidance.add_noise(latents.detach().double(), noise.double(), steps)
    torch.testing.assert_close(x0_from_noise(noisy, noise, alphas, steps), latents.detach().double())


def test_full_size_heads() -> None:
    with torch.device("meta"):
        assert sum(p.numel() for p in ClassifierHead(1280).parameters()) == 52_437_761
        assert sum(p.numel() for p in CodePredictor().parameters()) == 59_922_176


def test_code_predictor_and_loss() -> None:
    torch.manual_seed(0)
    predictor = CodePredictor(32, 64, heads=2, window=4, depth=1)
    logits = predictor(torch.randn(2, 32, 2, 2))
    assert logits.shape == (2, 64, 4, 4)
    codebook, indices = torch.randn(64, 16), torch.randint(0, 64, (2, 4, 4))
    z_q = codebook[indices].permute(0, 3, 1, 2)
    terms = code_prediction_loss(logits, indices, z_q, codebook)
    assert terms["code"].item() == pytest.approx((terms["code_ce"] + 0.01 * terms["code_mse"]).item())
    with pytest.raises(ValueError, match="stride 32"):
        code_prediction_loss(logits, indices[:, :2], z_q, codebook)
    # shifted windows: pairs from different regions of the rolled map are masked out
    block = SwinBlock(32, 2, window=4, shift=2)
    x = torch.randn(1, 32, 8, 8)
    assert block._mask(8, 8, x.device).isinf().any()
    assert block(x).shape == x.shape
    with pytest.raises(ValueError, match="divisible"):
        block(torch.randn(1, 32, 6, 8))
    assert tokenizer_input(torch.rand(1, 3, 128, 96)).shape == (1, 3, 64, 64)  # (H/2, H/2), the quirk


def test_lpips_with_average_pooling_is_differentiable() -> None:
    loss = LPIPSAvgPool()
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in loss.modules())
    x = torch.rand(1, 3, 32, 32)
    x_hat = (x + 0.1 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    value = loss(x_hat, x)
    value.backward()
    assert value.item() > 0 and x_hat.grad.abs().sum() > 0
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


def _recipe(name: str, tmp_path: Path, **init_from) -> Path:
    recipe = yaml.safe_load((REPO / "recipes" / "onedc" / name).read_text())
    recipe["data"]["init_args"].update(
        train_dir=str(REPO.parent / "shared" / "data" / "photos"), val_dir=None, num_workers=0, batch_size=1
    )
    recipe["trainer"].update(
        default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[c for c in recipe["trainer"]["callbacks"] if "ModelCheckpoint" not in c["class_path"]]
        + [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {"dirpath": str(tmp_path), "save_last": True, "every_n_train_steps": 1}}],
    )  # fmt: skip
    if init_from:
        recipe["init_from"].update(init_from)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.heavy
def test_small_cpu_recipes_train_stage_one_then_stage_two(tmp_path: Path) -> None:
    stage1 = _recipe("small_cpu.yaml", tmp_path / "s1")
    assert run_argv("fit", ["-c", str(stage1), "--trainer.max_steps", "2"]) == 0
    first = read_lightning_checkpoint(tmp_path / "s1" / "last.ckpt")
    assert first["global_step"] == 2
    state1 = first["state_dict"]
    assert any(k.startswith("code_predictor.") for k in state1)

    stage2 = _recipe("small_cpu_stage2.yaml", tmp_path / "s2", checkpoint=str(tmp_path / "s1" / "last.ckpt"))
    # 2 iterations: the generator steps at iteration 0 only, the guidance at both (3 optimiser steps)
    assert run_argv("fit", ["-c", str(stage2), "--trainer.max_steps", "3"]) == 0
    second = read_lightning_checkpoint(tmp_path / "s2" / "last.ckpt")
    state2 = second["state_dict"]
    codec_keys = [k for k in state1 if k.startswith("codec.latent_codec.") and "gaussian" not in k]
    assert all(torch.equal(state1[k], state2[k]) for k in codec_keys)  # the codec is frozen in stage 2
    lora = [k for k in state1 if ".lora_B." in k]
    assert lora and any(not torch.equal(state1[k], state2[k]) for k in lora)  # the generator moved
    fake = {
        k[len("guidance.fake_unet.") :]: v for k, v in state2.items() if k.startswith("guidance.fake_unet.")
    }
    real = {
        k[len("guidance.real_unet.") :]: v for k, v in state2.items() if k.startswith("guidance.real_unet.")
    }
    assert fake.keys() == real.keys() and any(not torch.equal(fake[k], real[k]) for k in fake)
    assert "guidance.cls_pred_branch.6.weight" in state2
