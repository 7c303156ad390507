"""The small base model under the bundled codecs (recipes/base → diffcodec.training.small_base): both
stages run through ``diffcodec fit`` and write a diffusers folder that a codec takes as ``backbone``, and a
codec saved from such a folder records the architecture, not the path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from diffusers import AutoencoderKL
from recipe_utils import write_test_recipe

import diffcodec
from diffcodec.cli import main as cli_main
from diffcodec.codecs.stablecodec import SMALL_ELIC, SMALL_LATENT_CODEC, StableCodec
from diffcodec.nn.backbone import small_backbone, tiny_configs
from diffcodec.training.small_base import AutoencoderPretraining

REPO = Path(__file__).resolve().parents[1]


def shrunk(recipe: str, photos_dir: Path, **model: object) -> dict:
    config = yaml.safe_load((REPO / "recipes" / "base" / recipe).read_text())
    config["model"]["init_args"].update(model)
    config["data"]["init_args"].update(train_dir=str(photos_dir), val_dir=str(photos_dir), batch_size=2,
                                        crops=64, num_workers=0, val_max_images=1)  # fmt: skip
    return config


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory: pytest.TempPathFactory, photos_dir: Path) -> Path:
    """Both stages, 3 steps each, with tiny_configs' VAE (the shipped recipe's is wider)."""
    root = tmp_path_factory.mktemp("base")
    vae = shrunk("vae.yaml", photos_dir, output_dir=str(root / "stage1"),
                 vae_config=tiny_configs()["vae_config"])  # fmt: skip
    path = write_test_recipe(vae, root, "vae", max_steps=3, val_check_interval=3)
    assert cli_main(["fit", "-c", str(path)]) == 0
    unet = shrunk("unet_eps.yaml", photos_dir, base_dir=str(root / "stage1"), output_dir=str(root / "base"))
    path = write_test_recipe(unet, root, "unet", max_steps=3, val_check_interval=3)
    assert cli_main(["fit", "-c", str(path)]) == 0
    return root / "base"


def test_stages_write_a_diffusers_base_folder(base_folder: Path) -> None:
    assert {p.name for p in base_folder.iterdir()} >= {"vae", "unet", "scheduler", "backbone.json"}
    windows = json.loads((base_folder / "backbone.json").read_text())  # the linear-cost design
    assert windows == {"unet_attention_window": 16, "vae_attention_window": 16}
    vae = AutoencoderKL.from_pretrained(base_folder / "vae")
    assert list(vae.config.block_out_channels) == list(tiny_configs()["vae_config"]["block_out_channels"])
    # LDM App. G: latents rescaled to unit variance, so the factor is not SD's 0.18215 default
    assert vae.config.scaling_factor != pytest.approx(0.18215)
    scheduler = json.loads((base_folder / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "epsilon"


def test_latent_scaling_factor_is_one_over_the_latent_std() -> None:
    module = AutoencoderPretraining(vae_config=tiny_configs()["vae_config"], lpips_weight=0.0)
    with pytest.raises(RuntimeError, match="no training batch"):
        module.latent_std()
    z = torch.randn(10_000, dtype=torch.float64) * 3 + 1
    module.latent_moments += torch.stack([z.new_tensor(z.numel()), z.sum(), z.square().sum()])
    assert module.latent_std() == pytest.approx(float(z.std()), rel=1e-3)


def test_small_backbone_loads_the_trained_weights(base_folder: Path) -> None:
    backbone = small_backbone(str(base_folder), tiny_configs())
    trained = AutoencoderKL.from_pretrained(base_folder / "vae")
    for key, value in trained.state_dict().items():
        assert torch.equal(backbone.vae.state_dict()[key], value), key
    with pytest.raises(ValueError, match="need"):
        small_backbone({"vae_config": {}}, tiny_configs())


def test_a_codec_on_the_base_saves_the_architecture_not_the_path(base_folder: Path, tmp_path: Path) -> None:
    local = tmp_path / "base"
    shutil.copytree(base_folder, local)
    torch.manual_seed(0)
    codec = StableCodec(lambdas=[1.0], latent_codec=SMALL_LATENT_CODEC, elic=SMALL_ELIC, backbone=str(local))
    codec.eval().save_pretrained(tmp_path / "codec")
    shutil.rmtree(local)  # the saved codec must not need the folder any more
    config = json.loads((tmp_path / "codec" / "config.json").read_text())
    assert isinstance(config["init_args"]["backbone"], dict)
    assert config["init_args"]["backbone"]["unet_attention_window"] == 16  # from the base's backbone.json
    again = diffcodec.load(str(tmp_path / "codec"))
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    assert again.compress(x).to_bytes() == codec.compress(x).to_bytes()
    with torch.no_grad():
        assert torch.equal(
            again.backbone.vae.decoder.conv_out.weight, codec.backbone.vae.decoder.conv_out.weight
        )
