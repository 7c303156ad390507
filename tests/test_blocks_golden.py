"""The shared blocks against the official unit golden vectors and checkpoint manifests.

Each unit golden (``specs/golden/{stablecodec,oscar,onedc}/*.safetensors``) holds the official
module's state dict, an input and the official output. We build our block from the constructor
recorded in the file's metadata, load the state dict with ``strict=True`` (so the key names are the
official ones) and compare outputs at atol 1e-5 (the READMEs' suggestion). Full-size key layouts are
checked against ``specs/manifests/`` on the meta device (no memory, no time).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from diffcodec.nn import blocks

ATOL = 1e-5

# Official class name (as recorded in the golden metadata) → our block, called with the official
# constructor keyword arguments.
OFFICIAL_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    # StableCodec latent codec (stablecodec.md §4.1–4.2)
    "InceptionNeXt": lambda in_ch: blocks.InceptionNeXt(in_ch),
    "GatedCNNBlock": lambda in_ch, expansion_ratio: blocks.GatedCNNBlock(in_ch, expansion_ratio),
    "BasicBlock": lambda in_ch: blocks.BasicBlock(in_ch),
    "Downsample": blocks.Downsample,
    "Upsample": blocks.Upsample,
    "Adapter": blocks.Adapter,
    "LRP": blocks.LRP,
    "HyperAnalysis": lambda M: blocks.HyperAnalysis(M),
    "HyperSynthesis": lambda M: blocks.HyperSynthesis(M),
    # ELIC / CompressAI / OSCAR
    "ResidualBottleneck": lambda N: blocks.ResidualBottleneck(N),
    "AttentionBlock": lambda N: blocks.AttentionBlock(N),
    "ResidualBottleneckBlock": lambda in_ch: blocks.ResidualBottleneckBlock(in_ch),
    "conv": lambda in_channels, out_channels, kernel_size, stride: blocks.conv(
        in_channels, out_channels, kernel_size, stride
    ),
    "deconv": lambda in_channels, out_channels, kernel_size, stride: blocks.deconv(
        in_channels, out_channels, kernel_size, stride
    ),
    # OneDC
    "DepthConvBlock4": blocks.DepthConvBlock4,
    "ResidualBlockUpsample": blocks.ResidualBlockUpsample,
    "AttnBlock": lambda in_channels: blocks.AttnBlock(in_channels),
    "ResnetBlock": lambda in_channels, out_channels=None: blocks.ResnetBlock(in_channels, out_channels),
    "reduce_resblock": blocks.ReduceResBlock,
}

UNIT_GOLDENS = [
    "stablecodec/inceptionnext_c32",
    "stablecodec/gatedcnn_c32",
    "stablecodec/basicblock_c32",
    "stablecodec/basicblock_c40",
    "stablecodec/downsample_16to32",
    "stablecodec/upsample_32to16",
    "stablecodec/adapter_32to48",
    "stablecodec/hyperanalysis_M32",
    "stablecodec/hypersynthesis_M32",
    "stablecodec/elic_residualbottleneck_c32",
    "stablecodec/elic_attentionblock_c32",
    "stablecodec/lrp_in64_out32",
    "oscar/residual_bottleneck_block",
    "oscar/attention_block",
    "oscar/stride2_conv",
    "oscar/stride2_deconv",
    "onedc/depthconvblock4_adaptor",
    "onedc/depthconvblock4_same",
    "onedc/residual_block_upsample",
    "onedc/attnblock_vqgan",
    "onedc/resnetblock_vqgan",
    "onedc/resnetblock_encoder_unet_32to64",
    "onedc/reduce_resblock_64to4",
]

# Goldens that are not unit blocks, and the work they belong to (tested there, not here).
NOT_BLOCK_GOLDENS = {
    "stablecodec/quadtree_masks": "quadtree context model",
    "stablecodec/entropy_models": "entropy models / coder",
    "stablecodec/latentcodec_e2e_regen": "StableCodec method (end to end)",
    "oscar/hyper_encoder_small_ss8": "OSCAR method (HyperEncoder + VQ)",
    "oscar/hyper_encoder_full_0p0019": "OSCAR method (HyperEncoder + VQ)",
    "onedc/four_part_masks": "quadtree context model",
    "onedc/four_part_prior_small": "OneDC four-part prior",
    "onedc/fsq_and_packing": "FSQ / index packing",
    "onedc/gaussian_cdf_table": "entropy models / coder",
    "onedc/rans_gaussian_stream": "entropy models / coder",
    "onedc/intranoar_small_e2e": "OneDC method (end to end)",
}


def _official_constructor(metadata: dict[str, str]) -> tuple[str, dict[str, int]]:
    """(official class name, constructor kwargs) from a golden's safetensors metadata."""
    if "ctor" in metadata:  # OSCAR / OneDC: JSON strings
        return json.loads(metadata["class"]).rsplit(".", 1)[-1], json.loads(metadata["ctor"])
    # StableCodec: free text starting with the constructor call, e.g. "ELIC ResidualBottleneck(N=32) (…)"
    match = re.search(r"(\w+)\(([^()]*)\)", metadata["module"])
    assert match, f"no constructor call in {metadata['module']!r}"
    kwargs = dict(item.split("=") for item in match.group(2).replace(" ", "").split(","))
    return match.group(1), {key: int(value) for key, value in kwargs.items()}


def _load_golden(path: Path) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Our block built from the golden's constructor with the official state dict loaded strictly."""
    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    name, kwargs = _official_constructor(metadata)
    module = OFFICIAL_BUILDERS[name](**kwargs).eval()
    prefix = "state_dict." if "state_dict." in " ".join(tensors) else "state."
    state = {key[len(prefix) :]: value.float() for key, value in tensors.items() if key.startswith(prefix)}
    module.load_state_dict(state, strict=True)
    return module, tensors


def _io(tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if "lrp_raw" in tensors:  # the LRP golden stores its two inputs separately
        return torch.cat((tensors["y_hat_k"], tensors["base"]), dim=1), tensors["lrp_raw"]
    if "input" in tensors:  # StableCodec layout
        return tensors["input"], tensors["output"]
    return tensors["input.x"], tensors["output.y"]  # OSCAR / OneDC layout


@pytest.mark.parametrize("name", UNIT_GOLDENS)
def test_block_matches_golden(golden_dir: Path, name: str) -> None:
    module, tensors = _load_golden(golden_dir / f"{name}.safetensors")
    x, expected = _io(tensors)
    with torch.no_grad():
        out = module(x)
    assert out.shape == expected.shape
    max_diff = (out - expected).abs().max().item()
    assert max_diff <= ATOL, f"{name}: max abs diff {max_diff:.3g} > {ATOL}"


def test_lrp_application_formula(golden_dir: Path) -> None:
    """ŷ'_k = ŷ_k + 0.5·tanh(M_k ⊙ LRP(concat[ŷ_k, B_k])) (stablecodec.md §5.4 step 3)."""
    lrp, t = _load_golden(golden_dir / "stablecodec/lrp_in64_out32.safetensors")
    with torch.no_grad():
        term = lrp.residual(t["y_hat_k"], t["base"], t["mask_k"])
    torch.testing.assert_close(term, t["lrp_term"], atol=ATOL, rtol=0)
    torch.testing.assert_close(t["y_hat_k"] + term, t["y_hat_k_plus_lrp"], atol=ATOL, rtol=0)
    assert (term[t["mask_k"] == 0] == 0).all()  # off-mask positions are left untouched
    with pytest.raises(ValueError, match="same shape"):
        lrp.residual(t["y_hat_k"], t["base"][:, :16], t["mask_k"])


def test_every_golden_is_accounted_for(golden_dir: Path) -> None:
    """A new golden file must be either tested here or assigned to other work above."""
    present = set()
    for method in ("stablecodec", "oscar", "onedc"):
        present |= {f"{method}/{path.stem}" for path in (golden_dir / method).glob("*.safetensors")}
    assert present == set(UNIT_GOLDENS) | set(NOT_BLOCK_GOLDENS)


# --------------------------------------------------------------------------------------------------
# Full-size key layouts against the official checkpoint manifests (built on the meta device)
# --------------------------------------------------------------------------------------------------

STABLECODEC_LAYOUT = {  # prefix in state_dict_codec → our block
    "g_a.pre1.": lambda: blocks.Downsample(4, 128),
    "g_a.analysis_transform.3.": lambda: blocks.Downsample(256, 320),
    "g_s.synthesis_transform.1.": lambda: blocks.Upsample(320, 320),
    "aux.block.5.": lambda: blocks.Upsample(192, 4),
    "h_a.": lambda: blocks.HyperAnalysis(320),
    "h_s.": lambda: blocks.HyperSynthesis(320),
    "adapter_in.0.": lambda: blocks.Adapter(320, 960),
    "g_c.block.0.": lambda: blocks.BasicBlock(960),
    "adapter_out.3.": lambda: blocks.Adapter(960, 640),
    "LRP.2.": lambda: blocks.LRP(640, 320),
}
ONEDC_LAYOUT = {  # (file, prefix) → our block
    ("model_1.safetensors", "enc.trans_coding.0."): lambda: blocks.ResnetBlock(512),
    ("model_1.safetensors", "enc.trans_coding.1."): lambda: blocks.AttnBlock(512),
    ("model_1.safetensors", "enc.trans_coding.3."): lambda: blocks.DepthConvBlock4(512, 512),
    ("model_1.safetensors", "enc.trans_coding.4."): lambda: blocks.DepthConvBlock4(512, 128),
    ("model_1.safetensors", "enc.unet.conv_in.0."): lambda: blocks.ResnetBlock(320, 512),
    ("model_1.safetensors", "hyper_dec.to_entropy.1."): lambda: blocks.ResidualBlockUpsample(128, 128),
    ("model.safetensors", "vae_reduction."): lambda: blocks.ReduceResBlock(320, 4),
}
OSCAR_LAYOUT = {  # prefix in hyper_encoders (rate 0: cfg_ss 8, three stride-2 stages) → our block
    "0.backbone.0.": lambda: blocks.conv(4, 192),
    "0.backbone.1.": lambda: blocks.ResidualBottleneckBlock(192),
    "0.backbone.8.": lambda: blocks.AttentionBlock(192),
    "0.backbone.14.": lambda: blocks.AttentionBlock(320),
    "0.proj.0.": lambda: blocks.deconv(320, 320),
}


def _layout(build: Callable[[], nn.Module]) -> dict[str, list[int]]:
    with torch.device("meta"):
        module = build()
    return {key: list(value.shape) for key, value in module.state_dict().items()}


def _manifest_subset(manifest: dict[str, list[int]], prefix: str) -> dict[str, list[int]]:
    return {key[len(prefix) :]: shape for key, shape in manifest.items() if key.startswith(prefix)}


@pytest.fixture(scope="module")
def manifests(shared_dir: Path) -> dict[str, dict]:
    folder = shared_dir / "specs" / "manifests"
    names = ("stablecodec", "onedc", "oscar")
    return {name: json.loads((folder / f"{name}_ckpt.json").read_text()) for name in names}


@pytest.mark.parametrize("prefix", STABLECODEC_LAYOUT)
def test_stablecodec_layout(manifests: dict[str, dict], prefix: str) -> None:
    expected = _manifest_subset(manifests["stablecodec"]["state_dict_codec"], prefix)
    assert _layout(STABLECODEC_LAYOUT[prefix]) == expected


@pytest.mark.parametrize("where", ONEDC_LAYOUT, ids=lambda w: w[1].rstrip("."))
def test_onedc_layout(manifests: dict[str, dict], where: tuple[str, str]) -> None:
    file, prefix = where
    assert _layout(ONEDC_LAYOUT[where]) == _manifest_subset(manifests["onedc"][file], prefix)


@pytest.mark.parametrize("prefix", OSCAR_LAYOUT)
def test_oscar_layout(manifests: dict[str, dict], prefix: str) -> None:
    expected = _manifest_subset(manifests["oscar"]["hyper_encoders"], prefix)
    assert _layout(OSCAR_LAYOUT[prefix]) == expected


def _num_params(build: Callable[[], nn.Module]) -> int:
    with torch.device("meta"):
        return sum(parameter.numel() for parameter in build().parameters())


@settings(max_examples=25, deadline=None)
@given(a=st.integers(8, 400), b=st.integers(1, 400))
def test_parameter_count_formulas(a: int, b: int) -> None:
    """Closed forms of stablecodec.md §4.1: BasicBlock, Downsample, Upsample."""
    assert _num_params(lambda: blocks.BasicBlock(a)) == 10 * a * a + 30 * a + 34 * (a // 8)
    assert _num_params(lambda: blocks.Downsample(a, b)) == 2 * a * b + 9 * b * b + 29 * b
    assert _num_params(lambda: blocks.Upsample(a, b)) == 9 * a * a + 27 * a + 8 * a * b + 8 * b


def test_published_parameter_counts() -> None:
    """Counts listed in stablecodec.md §4.2 and cadc.md §3.2 (CADC's h_a / h_s keep 320 channels)."""
    assert _num_params(lambda: blocks.HyperAnalysis(320)) == 953_000
    assert _num_params(lambda: blocks.HyperSynthesis(320)) == 570_600
    assert _num_params(lambda: blocks.HyperAnalysis(320, 320)) == 2_878_800
    assert _num_params(lambda: blocks.HyperSynthesis(320, 320)) == 1_856_720
    assert _num_params(lambda: blocks.LRP(640, 320)) == 1_435_520
    assert _num_params(lambda: blocks.Adapter(320, 960)) == 1_145_600
    assert _num_params(lambda: blocks.BasicBlock(960)) == 9_248_880
    assert blocks.StarBlock is blocks.BasicBlock


# --------------------------------------------------------------------------------------------------
# Shapes and bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(7, 10), (8, 8), (1, 3)])
def test_resampling_shapes(height: int, width: int) -> None:
    x = torch.randn(1, 16, height, width)
    half = (1, 24, -(-height // 2), -(-width // 2))
    assert blocks.Downsample(16, 24)(x).shape == half
    assert blocks.conv(16, 24)(x).shape == half
    assert blocks.deconv(16, 24)(x).shape == (1, 24, 2 * height, 2 * width)
    assert blocks.Upsample(16, 24)(x).shape == (1, 24, 2 * height, 2 * width)
    assert blocks.ResidualBlockUpsample(16, 24)(x).shape == (1, 24, 2 * height, 2 * width)


def test_resnet_block_shortcut_quirk() -> None:
    """in ≠ out: the 1×1 shortcut acts on the block output h (out = h + W h), so x enters only via h."""
    block = blocks.ResnetBlock(32, 64).eval()
    x = torch.randn(1, 32, 5, 5)
    with torch.no_grad():
        h = block.conv1(F.silu(block.norm1(x)))
        h = block.conv2(F.silu(block.norm2(h)))  # dropout is the identity in eval mode
        torch.testing.assert_close(block(x), h + block.nin_shortcut(h))
    assert "nin_shortcut.weight" not in blocks.ResnetBlock(64).state_dict()


def test_normalisation_eps() -> None:
    """The unit goldens cannot tell eps 1e-6 from 1e-5 at atol 1e-5 (≤ 5e-6 apart), so pin it here."""
    norms = [
        blocks.GatedCNNBlock(32).norm,
        blocks.AttnBlock(32).norm,
        *(blocks.ResnetBlock(32, 64).get_submodule(name) for name in ("norm1", "norm2")),
        *(m for m in blocks.ReduceResBlock(32, 4).modules() if isinstance(m, nn.GroupNorm)),
    ]
    assert len(norms) == 6
    assert all(norm.eps == 1e-6 for norm in norms)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: blocks.InceptionNeXt(4), "at least 8 channels"),
        (lambda: blocks.Downsample(0, 8), "in_ch must be a positive integer"),
        (lambda: blocks.Adapter(8, 2.5), "out_ch must be a positive integer"),
        (lambda: blocks.AttnBlock(48), "divisible by 32"),
        (lambda: blocks.ResnetBlock(32, 40), "divisible by 32"),
        (lambda: blocks.ResidualBottleneck(1), "at least 2 channels"),
        (lambda: blocks.conv(3, 8, stride=0), "stride must be a positive integer"),
    ],
)
def test_bad_widths_raise(build: Callable[[], nn.Module], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_attention_block_uses_the_memory_efficient_kernel_on_the_cpu() -> None:
    """Strided q/k/v send CPU SDPA to its math kernel, whose (H·W)² matrix took OneDC's analysis transform
    to 22 GB at 4096×3072; the flash kernel's memory is linear in H·W."""
    from torch.profiler import ProfilerActivity, profile

    block = blocks.AttnBlock(32).eval()
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        block(torch.randn(1, 32, 16, 24))
    names = {event.key for event in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names
    assert "aten::_softmax" not in names and "aten::bmm" not in names  # no materialised attention matrix
