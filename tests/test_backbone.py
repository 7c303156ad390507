"""OneStepBackbone: one-step x0, conditioning sources, loading (folder, offline hub cache), LoRA, checkpoints.

Everything runs on tiny configs of the real diffusers / transformers classes; the full-size parameter
counts of the specs are checked once on the meta device (``heavy``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from tokenizers.pre_tokenizers import ByteLevel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from diffcodec.nn.backbone import (
    DEFAULT_PROMPT,
    BaseModelNotFoundError,
    CaptionPrompt,
    ExternalTokens,
    FixedPrompt,
    LearnedEmbedding,
    OneStepBackbone,
    encode_text,
    reference_configs,
    tiny_configs,
)
from diffcodec.nn.lora import (
    ONEDC_UNET_EXCLUDE,
    ONEDC_UNET_TARGETS,
    STABLECODEC_UNET_TARGETS,
    STABLECODEC_VAE_ENCODER_TARGETS,
)

TEXT_LENGTH = 16  # tiny tokenizer max length (SD uses 77)


# ---------------------------------------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("single_thread")


def make_tokenizer() -> CLIPTokenizer:
    """A byte-level CLIP BPE tokenizer built offline: the 256 byte symbols (+ "</w>" forms) and 2 merges.

    Pads with "!" like the SD-2.x tokenizers."""
    alphabet = sorted(ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in alphabet + [a + "</w>" for a in alphabet] + ["ca", "cat</w>"]:
        vocab.setdefault(symbol, len(vocab))
    return CLIPTokenizer(
        vocab=vocab, merges=[("c", "a"), ("ca", "t</w>")], pad_token="!", model_max_length=TEXT_LENGTH
    )


def make_text_encoder(vocab_size: int) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=TEXT_LENGTH, projection_dim=32, bos_token_id=0,
        eos_token_id=1, pad_token_id=2,
    )  # fmt: skip
    torch.manual_seed(7)
    return CLIPTextModel(config).eval()


@pytest.fixture(scope="module")
def text_parts() -> tuple[CLIPTokenizer, CLIPTextModel]:
    tokenizer = make_tokenizer()
    return tokenizer, make_text_encoder(len(tokenizer))


def tiny(seed: int = 0, **kwargs) -> OneStepBackbone:
    torch.manual_seed(seed)
    prediction_type = kwargs.pop("prediction_type", "epsilon")
    return OneStepBackbone.from_config(**tiny_configs(prediction_type=prediction_type), **kwargs)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, text_parts) -> tuple[Path, OneStepBackbone]:
    """A tiny SD model saved as a diffusers folder (vae/, unet/, scheduler/, tokenizer/, text_encoder/)."""
    root = tmp_path_factory.mktemp("tiny-sd")
    backbone = tiny(3)
    tokenizer, text_encoder = text_parts
    backbone.vae.save_pretrained(root / "vae")
    backbone.unet.save_pretrained(root / "unet")
    DDPMScheduler.from_config(tiny_configs()["scheduler_config"]).save_pretrained(root / "scheduler")
    tokenizer.save_pretrained(root / "tokenizer")
    text_encoder.save_pretrained(root / "text_encoder")
    return root, backbone


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ---------------------------------------------------------------------------------------------- x0 maths
def test_schedule_is_sd_scaled_linear_float32_and_not_saved():
    backbone = tiny()
    assert backbone.alphas_cumprod.dtype == torch.float32
    assert backbone.alphas_cumprod[999].item() == pytest.approx(0.00466009508818388, abs=1e-12)  # §3 step 5
    assert backbone.alpha_bar(500).item() == pytest.approx(0.27633, abs=5e-6)  # OSCAR §5.1 table
    assert "alphas_cumprod" not in backbone.state_dict()
    assert backbone.prediction_type == "epsilon" and backbone.timestep == 999
    backbone.to(torch.bfloat16)  # casting the module must not degrade ᾱ (1/√ᾱ₉₉₉ ≈ 14.6 amplifies errors)
    assert backbone.alpha_bar(999).dtype == torch.float32
    assert backbone.alpha_bar(999).item() == pytest.approx(0.00466009508818388, abs=1e-12)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_matches_ddpm_one_step(prediction_type):
    """x0 equals diffusers' DDPMScheduler.step(...).pred_original_sample after set_timesteps(1) at t = 999."""
    config = tiny_configs(prediction_type=prediction_type)["scheduler_config"]
    scheduler = DDPMScheduler.from_config(config)
    scheduler.set_timesteps(1)
    assert scheduler.timesteps.tolist() == [999]
    backbone = tiny(prediction_type=prediction_type)
    torch.manual_seed(1)
    sample, output = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    expected = scheduler.step(output, 999, sample).pred_original_sample
    torch.testing.assert_close(backbone.x0_from_prediction(sample, output), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_inverts_diffusers_forward_process_per_sample_timesteps(prediction_type):
    """Noise x0 with diffusers (add_noise, get_velocity) at per-sample t; the backbone recovers x0."""
    scheduler = DDPMScheduler.from_config(tiny_configs()["scheduler_config"])
    backbone = tiny(prediction_type=prediction_type)
    torch.manual_seed(2)
    x0, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([150, 310, 500])  # OSCAR's pseudo-timesteps
    x_t = scheduler.add_noise(x0, noise, t)
    torch.testing.assert_close(backbone.add_noise(x0, noise, t), x_t)
    output = noise if prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, t)
    torch.testing.assert_close(backbone.x0_from_prediction(x_t, output, t), x0, rtol=1e-5, atol=1e-5)
    # the explicit OSCAR formula at one timestep: x0 = √ᾱ x_t − √(1−ᾱ) v
    if prediction_type == "v_prediction":
        alpha = scheduler.alphas_cumprod[500]
        formula = alpha.sqrt() * x_t[2:] - (1 - alpha).sqrt() * output[2:]
        torch.testing.assert_close(backbone.x0_from_prediction(x_t[2:], output[2:], 500), formula)


def test_denoise_uses_first_four_channels_of_widened_input():
    backbone = tiny(conditioning="learned", conv_in_channels=8)
    conv = backbone.unet.conv_in
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (8, 32, (3, 3), (1, 1))
    assert backbone.unet.config.in_channels == 4  # StableCodec §6.1: the config is unchanged
    torch.manual_seed(3)
    l_t = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        eps = backbone.predict(l_t)
        assert eps.shape == (2, 4, 16, 16)
        torch.testing.assert_close(backbone.denoise(l_t), backbone.x0_from_prediction(l_t[:, :4], eps))
        noisy = torch.randn(2, 4, 16, 16)  # OneDC: x_t = vae_reduction(c)
        expected = backbone.x0_from_prediction(noisy, eps)
        torch.testing.assert_close(backbone.denoise(l_t, noisy=noisy), expected)
        # a per-call timestep changes both the U-Net input embedding and ᾱ
        assert not torch.allclose(backbone.denoise(l_t, 500), backbone.denoise(l_t))


def test_bad_inputs_raise_clear_errors():
    backbone = tiny(conditioning="learned")
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        backbone.predict(torch.randn(1, 5, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        backbone.predict(torch.randn(1, 4, 8, 8), 1000)
    with pytest.raises(ValueError, match="integer"):
        backbone.predict(torch.randn(1, 4, 8, 8), torch.tensor(0.5))
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        backbone.predict(torch.randn(1, 4, 8, 8), encoder_hidden_states=torch.randn(1, 7, 16))
    with pytest.raises(ValueError, match="shape"):
        backbone.x0_from_prediction(torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 9))
    with pytest.raises(ValueError, match="multiples of 8"):
        backbone.encode(torch.zeros(1, 3, 60, 64))
    with pytest.raises(ValueError, match="prediction_type"):
        tiny(prediction_type="sample")
    with pytest.raises(TypeError, match="AutoencoderKL"):
        OneStepBackbone(backbone.unet, backbone.unet, tiny_configs()["scheduler_config"])


def test_vae_round_trip_shapes_and_scaling():
    backbone = tiny()
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        posterior = backbone.latent_distribution(x)
        latent = backbone.encode(x)
        torch.testing.assert_close(latent, posterior.mode() * 0.18215)
        generator = torch.Generator().manual_seed(0)
        sampled = backbone.encode(x, sample=True, generator=generator)
        assert not torch.equal(sampled, latent)
        image = backbone.decode(latent)
    assert latent.shape == (1, 4, 4, 6) and image.shape == (1, 3, 32, 48)
    assert image.min() >= -1 and image.max() <= 1


# ---------------------------------------------------------------------------------------------- conditioning
def test_learned_embedding_is_trainable_and_broadcast():
    backbone = tiny(conditioning="learned")
    e = backbone.encoder_hidden_states(3)
    assert e.shape == (3, 77, 32)
    assert isinstance(backbone.conditioning, LearnedEmbedding)
    assert backbone.conditioning.embedding.requires_grad
    assert 0.015 < backbone.conditioning.embedding.std().item() < 0.025  # N(0, 0.02²)
    assert list(backbone.trainable_state_dict()) == ["conditioning.embedding"]
    with pytest.raises(ValueError, match="cond must be None"):
        backbone.encoder_hidden_states(1, "a caption")


def test_fixed_prompt_is_encoded_once_and_kept_as_a_buffer(text_parts):
    tokenizer, text_encoder = text_parts
    backbone = tiny(conditioning="prompt", tokenizer=tokenizer, text_encoder=text_encoder)
    assert isinstance(backbone.conditioning, FixedPrompt)
    # the text encoder is not kept: no module, no parameter
    assert not any(isinstance(m, CLIPTextModel) for m in backbone.modules())
    assert not any("text_encoder" in name for name, _ in backbone.named_parameters())
    expected = encode_text(tokenizer, text_encoder, [DEFAULT_PROMPT])
    assert expected.shape == (1, TEXT_LENGTH, 32)
    torch.testing.assert_close(backbone.encoder_hidden_states(2), expected.expand(2, -1, -1))
    # the buffer goes into checkpoints; a placeholder backbone gets it from there
    state = backbone.trainable_state_dict()
    assert list(state) == ["conditioning.embedding"]
    placeholder = FixedPrompt.placeholder(DEFAULT_PROMPT, TEXT_LENGTH, 32)
    schedule = tiny_configs()["scheduler_config"]
    restored = OneStepBackbone(backbone.vae, backbone.unet, schedule, conditioning=placeholder)
    with pytest.raises(RuntimeError, match="never computed"):
        restored.encoder_hidden_states(1)
    restored.load_trainable_state_dict(state)
    torch.testing.assert_close(restored.encoder_hidden_states(1), expected)


def test_caption_prompt_encodes_caption_and_prompt_deterministically(text_parts):
    tokenizer, text_encoder = text_parts
    backbone = tiny(conditioning="caption", tokenizer=tokenizer, text_encoder=text_encoder)
    source = backbone.conditioning
    assert isinstance(source, CaptionPrompt)
    assert source.compose("a cat") == f"a cat, {DEFAULT_PROMPT}"
    backbone.train()
    assert not source.text_encoder.training  # frozen text encoder stays in eval mode
    first = backbone.encoder_hidden_states(2, ["a cat", "a dog"])
    torch.testing.assert_close(first, backbone.encoder_hidden_states(2, ["a cat", "a dog"]))
    assert not torch.allclose(first[0], first[1])
    expected = encode_text(tokenizer, text_encoder, [f"a cat, {DEFAULT_PROMPT}"])
    torch.testing.assert_close(first[:1], expected)
    # no caption → the prompt alone; the text encoder is base (not trainable, not checkpointed)
    torch.testing.assert_close(
        backbone.encoder_hidden_states(1, None), encode_text(tokenizer, text_encoder, [DEFAULT_PROMPT])
    )
    assert backbone.trainable_state_dict() == {}
    assert not any(p.requires_grad for p in source.text_encoder.parameters())
    with pytest.raises(ValueError, match="3 captions"):
        backbone.encoder_hidden_states(2, ["a", "b", "c"])


def test_external_tokens_pass_through_and_are_validated():
    backbone = tiny(conditioning="tokens")
    assert isinstance(backbone.conditioning, ExternalTokens)
    tokens = torch.randn(2, 6, 32)  # e.g. (h/64·w/64) tokens
    assert torch.equal(backbone.encoder_hidden_states(2, tokens), tokens)
    with torch.no_grad():
        out = backbone.predict(torch.randn(2, 4, 8, 8), cond=tokens)
    assert out.shape == (2, 4, 8, 8)
    with pytest.raises(ValueError, match="tokens must be"):
        backbone.encoder_hidden_states(2, torch.randn(2, 6, 31))
    with pytest.raises(ValueError, match="needs cond"):
        backbone.encoder_hidden_states(2)


# ---------------------------------------------------------------------------------------------- loading
def test_from_pretrained_local_diffusers_folder(saved_model, text_parts):
    root, original = saved_model
    loaded = OneStepBackbone.from_pretrained(root, conditioning="prompt", prompt="a cat")
    assert_same_weights(loaded.vae, original.vae)
    assert_same_weights(loaded.unet, original.unet)
    torch.testing.assert_close(loaded.alphas_cumprod, original.alphas_cumprod)
    tokenizer, text_encoder = text_parts
    torch.testing.assert_close(
        loaded.conditioning.embedding, encode_text(tokenizer, text_encoder, ["a cat"]), rtol=0, atol=0
    )
    # encode_prompt=False needs neither tokenizer nor text encoder
    shutil.copytree(root, root.parent / "no-text", ignore=shutil.ignore_patterns("tokenizer", "text_encoder"))
    placeholder = OneStepBackbone.from_pretrained(
        root.parent / "no-text", conditioning="prompt", encode_prompt=False
    )
    assert torch.isnan(placeholder.conditioning.embedding).all()


def test_from_pretrained_offline_hub_cache(saved_model, tmp_path):
    """The hub cache layout (models--org--name/snapshots/<rev>/…, refs/main) with HF_HUB_OFFLINE=1."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    root, original = saved_model
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "models--tiny-org--tiny-sd"
    shutil.copytree(root, repo_dir / "snapshots" / revision)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    for rev in (None, revision):
        loaded = OneStepBackbone.from_pretrained("tiny-org/tiny-sd", revision=rev, cache_dir=tmp_path)
        assert_same_weights(loaded.unet, original.unet)
        assert_same_weights(loaded.vae, original.vae)
    with pytest.raises(BaseModelNotFoundError, match="revision 1111"):
        OneStepBackbone.from_pretrained("tiny-org/tiny-sd", revision="1111" * 10, cache_dir=tmp_path)


def test_missing_model_error_says_how_to_get_it(tmp_path):
    with pytest.raises(BaseModelNotFoundError) as info:
        OneStepBackbone.from_pretrained("stabilityai/sd-turbo", revision="abc123", cache_dir=tmp_path)
    message = str(info.value)
    assert "stabilityai/sd-turbo" in message and "revision abc123" in message
    assert "hf download stabilityai/sd-turbo --revision abc123" in message
    assert "huggingface-cli download" in message and "'vae/*'" in message
    assert "from_pretrained('/path/to/sd-turbo')" in message
    with pytest.raises(BaseModelNotFoundError, match="does not exist"):
        OneStepBackbone.from_pretrained(tmp_path / "nowhere")


# ---------------------------------------------------------------------------------------------- LoRA
def suffix_matches(model: nn.Module, targets, exclude: str | None = None) -> list[str]:
    """Independent count of peft's list rule: name == target or name ends with '.' + target."""
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
        and any(name == t or name.endswith("." + t) for t in targets)
        and not (exclude and re.fullmatch(exclude, name))
    ]


def test_unet_lora_targets_init_and_trainability():
    backbone = tiny(conditioning="learned", conv_in_channels=8)
    expected = suffix_matches(backbone.unet, STABLECODEC_UNET_TARGETS)
    names = backbone.add_lora("default", STABLECODEC_UNET_TARGETS, rank=4, alpha=8)
    assert sorted(names) == sorted(expected) and len(names) > 20
    assert "conv_in" not in names and not any("time_emb_proj" in n for n in names)
    layer = backbone.unet.get_submodule(names[0])
    assert layer.scaling["default"] == 2.0  # alpha / r
    a_weights = torch.cat([p.flatten() for n, p in backbone.unet.named_parameters() if "lora_A" in n])
    assert abs(a_weights.std().item() - 1 / 4) < 0.02  # peft gaussian: A ~ N(0, 1/r²), B = 0
    assert all(p.abs().sum() == 0 for n, p in backbone.unet.named_parameters() if "lora_B" in n)
    # peft freezes everything but the adapter; conv_in and the embedding must stay trainable
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert {"unet.conv_in.weight", "unet.conv_in.bias", "conditioning.embedding"} <= trainable
    assert all(".lora_" in n or n.startswith(("unet.conv_in.", "conditioning.")) for n in trainable)


def test_lora_changes_output_and_round_trips_through_safetensors(tmp_path):
    backbone = tiny(conditioning="learned")
    l_t = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        before = backbone.predict(l_t)
        backbone.add_lora("default", STABLECODEC_UNET_TARGETS, rank=4)
        torch.testing.assert_close(backbone.predict(l_t), before)  # B = 0 at init
        for name, p in backbone.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        after = backbone.predict(l_t)
    assert (after - before).abs().max() > 1e-3
    weights = backbone.lora_state_dict("default")
    assert all(".lora_A.weight" in k or ".lora_B.weight" in k for k in weights)  # peft keys, no adapter name
    path = tmp_path / "default.safetensors"
    backbone.save_lora("default", path)
    fresh = tiny(conditioning="learned")
    fresh.conditioning.load_state_dict(backbone.conditioning.state_dict())
    assert fresh.load_lora(path) == "default"  # created from the file's metadata, then loaded
    assert fresh.lora_adapters == backbone.lora_adapters
    with torch.no_grad():
        torch.testing.assert_close(fresh.predict(l_t), after)
    with pytest.raises(ValueError, match="missing"):
        fresh.load_lora_state_dict("default", dict(list(weights.items())[1:]))


def test_several_adapters_stay_active():
    """OSCAR trains three adapters at once (exact module-name targets)."""
    backbone = tiny(conditioning="learned")
    down = [n for n in suffix_matches(backbone.unet, ["to_q", "to_k"]) if n.startswith("down_blocks")]
    up = [n for n in suffix_matches(backbone.unet, ["to_q", "to_k"]) if n.startswith("up_blocks")]
    assert backbone.add_lora("default_encoder", down, rank=2) == down
    assert backbone.add_lora("default_decoder", up, rank=2) == up
    assert backbone.unet.active_adapters() == ["default_encoder", "default_decoder"]
    l_t = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        before = backbone.predict(l_t)
        for name, p in backbone.unet.named_parameters():
            if "lora_B.default_encoder" in name:
                p.fill_(0.1)
        assert not torch.allclose(backbone.predict(l_t), before)
    with pytest.raises(ValueError, match="already exists"):
        backbone.add_lora("default_encoder", down, rank=2)


def test_vae_encoder_lora_by_regex_gets_gradients():
    backbone = tiny()
    expected = [
        name
        for name, module in backbone.vae.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d)) and re.fullmatch(STABLECODEC_VAE_ENCODER_TARGETS, name)
    ]
    names = backbone.add_lora("vae_skip", STABLECODEC_VAE_ENCODER_TARGETS, rank=4, alpha=8, on="vae")
    assert sorted(names) == sorted(expected)
    assert all(n.startswith("encoder.") for n in names) and "encoder.conv_out" in names
    for name, p in backbone.vae.named_parameters():  # make the adapter non-zero so that A gets gradients too
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.01)
    backbone.encode(torch.rand(1, 3, 32, 32) * 2 - 1).square().mean().backward()
    with_grad = {n for n, p in backbone.named_parameters() if p.grad is not None}
    assert with_grad and all(".lora_" in n and n.startswith("vae.encoder.") for n in with_grad)
    assert set(backbone.lora_state_dict("vae_skip")) == {
        k.removeprefix("vae.").replace(".vae_skip", "") for k in backbone.trainable_state_dict()
    }


# ---------------------------------------------------------------------------------------------- checkpoints
def test_state_dict_holds_only_the_trainable_part_and_loads_strictly():
    backbone = tiny(conditioning="learned", conv_in_channels=8)
    backbone.add_lora("default", ["to_q", "conv1"], rank=2)
    trainable = backbone.trainable_state_dict()
    assert set(backbone.state_dict()) == set(trainable)
    assert {k for k in trainable if ".lora_" not in k} == {
        "unet.conv_in.weight", "unet.conv_in.bias", "conditioning.embedding"
    }  # fmt: skip
    assert backbone.is_base_key("unet.down_blocks.0.resnets.0.conv1.base_layer.weight")
    assert backbone.is_base_key("vae.decoder.conv_out.weight")
    # nested in a parent module (a LightningModule in practice): no base keys, strict loading works
    parent = nn.ModuleDict({"backbone": backbone})
    saved = {k: v.clone() for k, v in parent.state_dict().items()}
    assert all(k.startswith("backbone.") for k in saved) and len(saved) == len(trainable)
    other = tiny(seed=1, conditioning="learned", conv_in_channels=8)
    other.add_lora("default", ["to_q", "conv1"], rank=2)
    base_before = other.unet.conv_out.weight.clone()
    nn.ModuleDict({"backbone": other}).load_state_dict(saved, strict=True)
    for key, value in other.trainable_state_dict().items():
        assert torch.equal(value, saved["backbone." + key])
    assert torch.equal(other.unet.conv_out.weight, base_before)  # base untouched
    with pytest.raises(RuntimeError, match="Unexpected"):
        nn.ModuleDict({"backbone": other}).load_state_dict({**saved, "backbone.bogus": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing"):
        other.load_trainable_state_dict({})


def test_persist_base_keeps_full_state_dict():
    backbone = tiny(conditioning="learned", persist_base=True)
    keys = set(backbone.state_dict())
    assert "unet.conv_in.weight" in keys and "vae.decoder.conv_out.weight" in keys
    assert set(backbone.trainable_state_dict()) == {"conditioning.embedding"}


# ---------------------------------------------------------------------------------------------- full size
@pytest.mark.heavy
def test_full_size_parameter_counts_match_the_specs():
    """SD-2.1-base / SD-2.1 / SD-1.5 from config on the meta device: base and LoRA counts of the specs."""

    def lora_params(model: nn.Module, name: str) -> int:
        return sum(p.numel() for n, p in model.named_parameters() if f".{name}." in n and ".lora_" in n)

    with torch.device("meta"):
        turbo = OneStepBackbone.from_config(**reference_configs("sd-turbo"), latent_tiling=None)
        assert sum(p.numel() for p in turbo.unet.parameters()) == 865_910_724
        assert sum(p.numel() for p in turbo.vae.parameters()) == 83_653_863
        # StableCodec §6.1 / §9: 257 U-Net modules, r 32; conv_in 320 → 320
        assert len(turbo.add_lora("default", STABLECODEC_UNET_TARGETS, rank=32)) == 257
        assert lora_params(turbo.unet, "default") == 32_434_304
        turbo.widen_conv_in(320)
        assert sum(p.numel() for p in turbo.unet.conv_in.parameters()) == 921_920
        # §6.4: 31 VAE-encoder modules, r 16
        assert len(turbo.add_lora("vae_skip", STABLECODEC_VAE_ENCODER_TARGETS, rank=16, on="vae")) == 31
        assert lora_params(turbo.vae, "vae_skip") == 1_477_168
        trainable = sum(v.numel() for v in turbo.trainable_state_dict().values())
        assert trainable == 32_434_304 + 921_920 + 1_477_168

        # OneDC §4.1: SD-1.5, r 64, alpha 8, default init, conv_in excluded: 278 modules
        onedc = OneStepBackbone.from_config(**reference_configs("sd-1.5"), conv_in_channels=320)
        names = onedc.add_lora(
            "default", ONEDC_UNET_TARGETS, rank=64, init=True, exclude_modules=ONEDC_UNET_EXCLUDE
        )
        assert len(names) == 278 and lora_params(onedc.unet, "default") == 67_252_224
        base = sum(p.numel() for n, p in onedc.unet.named_parameters() if ".lora_" not in n)
        assert base - 921_920 == 859_509_124  # DMD2 base without its conv_in

        # OSCAR §5: SD-2.1 768-v, same base size, v prediction, 1024-wide learned embedding
        oscar = OneStepBackbone.from_config(**reference_configs("sd-2.1"), conditioning="learned")
        assert oscar.prediction_type == "v_prediction"
        assert sum(p.numel() for p in oscar.unet.parameters()) == 865_910_724
        assert oscar.conditioning.embedding.numel() == 78_848
