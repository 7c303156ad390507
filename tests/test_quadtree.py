"""The shared 4-step quadtree context model (diffcodec/entropy/quadtree.py).

Masks against the official goldens (StableCodec and OneDC use the same partition), the partition's
invariants, and the one contract forward / compress / decompress on small heads: decoder ŷ equals
encoder ŷ exactly, the eval forward gives the same ŷ, streams are per image, and bad input raises.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file
from torch import Tensor

from diffcodec.bitstream import DecodeError
from diffcodec.entropy.gaussian import GaussianConditional, get_scale_table
from diffcodec.entropy.quadtree import (
    NUM_STEPS,
    QuadtreeContextModel,
    QuadtreeParameters,
    SharedContextParameters,
    quadtree_masks,
    squeeze_groups,
    strict_fp32,
    unsqueeze_groups,
)
from diffcodec.nn.blocks import LRP


# ---------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("size", [(8, 5, 7), (8, 4, 4), (320, 8, 12)])
def test_masks_match_stablecodec_golden(golden_dir: Path, size: tuple[int, int, int]) -> None:
    golden = load_file(golden_dir / "stablecodec" / "quadtree_masks.safetensors")
    c, h, w = size
    masks = quadtree_masks(c, h, w)
    for step in range(NUM_STEPS):
        expected = golden[f"mask{step}_C{c}_H{h}_W{w}"][0].float()
        assert torch.equal(masks[step], expected), f"step {step}, size {size}"


def test_masks_match_onedc_golden(golden_dir: Path) -> None:
    golden = load_file(golden_dir / "onedc" / "four_part_masks.safetensors")
    masks = quadtree_masks(8, 5, 7)
    for step in range(NUM_STEPS):
        assert torch.equal(masks[step], golden[f"output.mask_{step}"][0])


@settings(max_examples=25, deadline=None)
@given(groups=st.integers(1, 6), height=st.integers(1, 9), width=st.integers(1, 9))
def test_partition_covers_everything_once(groups: int, height: int, width: int) -> None:
    channels = NUM_STEPS * groups
    masks = quadtree_masks(channels, height, width)
    assert masks.shape == (NUM_STEPS, channels, height, width)
    assert torch.equal(masks.sum(0), torch.ones(channels, height, width))  # each (c, h, w) coded once
    per_group = masks.reshape(NUM_STEPS, NUM_STEPS, groups, height, width)
    # at every step and position exactly one group is coded, with all its channels
    assert torch.equal(per_group.sum(1), torch.ones(NUM_STEPS, groups, height, width))


def test_squeeze_unsqueeze_round_trip() -> None:
    masks = quadtree_masks(12, 3, 5)
    values = torch.randint(-50, 50, (2, 12, 3, 5), dtype=torch.int32)
    for mask in masks:
        squeezed = squeeze_groups(values, mask)
        assert squeezed.shape == (2, 3, 3, 5) and squeezed.dtype == torch.int32
        assert torch.equal(unsqueeze_groups(squeezed, mask), values * mask.int())


@pytest.mark.parametrize("bad", [(6, 4, 4), (0, 4, 4), (8, 0, 3)])
def test_masks_reject_bad_sizes(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError):
        quadtree_masks(*bad)


# ---------------------------------------------------------------------------------------------- model
class ZeroMeanHead(QuadtreeParameters):
    """A scale-only head: σ from the context, no means (zero-mean Gaussian)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, step: int, params: Tensor, context: Tensor, y_hat: Tensor) -> tuple[None, Tensor]:
        return None, self.conv(context).abs() + 0.5 * step


def _model(
    channels: int = 8, lrp: bool = True, head: QuadtreeParameters | None = None
) -> QuadtreeContextModel:
    torch.manual_seed(0)
    head = head or SharedContextParameters(channels, width=2 * channels, depth=1)
    layers = [LRP(2 * channels, channels) for _ in range(NUM_STEPS)] if lrp else None
    model = QuadtreeContextModel(head, lrp=layers, gaussian_conditional=GaussianConditional(None)).eval()
    model.gaussian_conditional.update_scale_table(get_scale_table())
    return model


def _inputs(batch: int = 1, channels: int = 8, height: int = 5, width: int = 6) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    y = 4 * torch.randn(batch, channels, height, width, generator=generator)
    params = torch.randn(batch, channels, height, width, generator=generator)
    return y, params


@pytest.mark.parametrize("lrp", [True, False])
def test_round_trip_is_exact_and_matches_forward(lrp: bool) -> None:
    model = _model(lrp=lrp)
    y, params = _inputs()
    with torch.no_grad():
        encoded = model.compress(y, params)
        decoded = model.decompress(encoded["strings"], encoded["shape"], params)
        forward = model(y, params)
    assert torch.equal(decoded["y_hat"], encoded["y_hat"])  # the decoder rebuilds the encoder's ŷ bit for bit
    assert torch.equal(forward["y_hat"], encoded["y_hat"])  # eval forward = real coding
    assert (encoded["y_hat"] - y).abs().max() < 0.5 + 0.5 * lrp + 1e-5  # rounding (+ tanh-bounded LRP)
    assert forward["likelihoods"]["y"].shape == y.shape and (forward["likelihoods"]["y"] <= 1).all()


def test_lrp_changes_the_reconstruction_not_the_symbols() -> None:
    y, params = _inputs()
    with torch.no_grad():
        with_lrp = _model(lrp=True).compress(y, params)
        without = _model(lrp=False).compress(y, params)
    assert not torch.equal(with_lrp["y_hat"], without["y_hat"])


def test_zero_mean_head() -> None:
    model = _model(lrp=False, head=ZeroMeanHead(8))
    y, params = _inputs()
    with torch.no_grad():
        encoded = model.compress(y, params)
        decoded = model.decompress(encoded["strings"], encoded["shape"], params)
        forward = model(y, params)
    assert torch.equal(decoded["y_hat"], torch.round(y))  # no means: plain rounding
    assert forward["means"] is None and torch.equal(forward["y_hat"], decoded["y_hat"])


def test_batch_codes_one_stream_per_image() -> None:
    model = _model()
    y, params = _inputs(batch=2)
    with torch.no_grad():
        both = model.compress(y, params)
        second = model.compress(y[1:], params[1:])
        decoded = model.decompress(both["strings"], both["shape"], params)
    assert len(both["strings"][0]) == 2
    assert both["strings"][0][1] == second["strings"][0][0]
    assert torch.equal(decoded["y_hat"], both["y_hat"])


def test_one_stream_holds_four_steps_in_order() -> None:
    """Decoding the stream with another context (other params) desynchronises it: the steps depend on
    each other, and a wrong context is detected or gives another ŷ, never silently the same one."""
    model = _model()
    y, params = _inputs()
    with torch.no_grad():
        encoded = model.compress(y, params)
        try:
            wrong = model.decompress(encoded["strings"], encoded["shape"], params + 1.0)["y_hat"]
        except DecodeError:
            return
    assert not torch.equal(wrong, encoded["y_hat"])


def test_training_forward_is_differentiable_and_noisy() -> None:
    model = _model().train()
    y, params = _inputs()
    y.requires_grad_(True)
    out = model(y, params)
    bits = -torch.log2(out["likelihoods"]["y"]).sum()
    (bits + out["y_hat"].square().sum()).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    head_grads = [p.grad for p in model.entropy_parameters.parameters()]
    assert all(g is not None for g in head_grads)
    # the likelihood uses the noise proxy in training: two calls differ
    again = model(y, params)["likelihoods"]["y"]
    assert not torch.equal(again, out["likelihoods"]["y"])


def test_corrupted_stream_raises_decode_error() -> None:
    model = _model()
    y, params = _inputs()
    with torch.no_grad():
        encoded = model.compress(y, params)
        data = encoded["strings"][0][0]
        with pytest.raises(DecodeError):
            model.decompress([[data[: len(data) // 3]]], encoded["shape"], params)
        with pytest.raises(DecodeError):
            model.decompress([[data + bytes(16)]], encoded["shape"], params)


def test_bad_inputs_raise() -> None:
    model = _model()
    y, params = _inputs()
    with pytest.raises(ValueError, match="same shape"):
        model(y, params[:, :, :4])
    with pytest.raises(ValueError, match="divisible"):
        QuadtreeContextModel(ZeroMeanHead(6))(torch.zeros(1, 6, 2, 2), torch.zeros(1, 6, 2, 2))
    with pytest.raises(ValueError, match="one module per step"):
        QuadtreeContextModel(ZeroMeanHead(8), lrp=[LRP(16, 8)])
    with torch.no_grad():
        encoded = model.compress(y, params)
    with pytest.raises(ValueError, match="params"):
        model.decompress(encoded["strings"], (4, 4), params)
    with pytest.raises(RuntimeError, match="update"):
        QuadtreeContextModel(ZeroMeanHead(8)).compress(y, params)


def test_symbols_are_written_squeezed_in_row_major_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step writes C/4 × H × W symbols: at (c, h, w) the symbol of the group coded there (spec §5.6)."""
    from diffcodec.entropy import quadtree

    calls: list[np.ndarray] = []
    original = quadtree.SymbolEncoder.encode

    def recording(self, symbols, indexes, table):  # type: ignore[no-untyped-def]
        calls.append(np.array(symbols))
        return original(self, symbols, indexes, table)

    monkeypatch.setattr(quadtree.SymbolEncoder, "encode", recording)
    model = _model(lrp=False, head=ZeroMeanHead(8))
    y, params = _inputs()
    with torch.no_grad():
        model.compress(y, params)
    symbols = torch.round(y)[0].int()
    masks = quadtree_masks(8, 5, 6)
    assert len(calls) == NUM_STEPS
    for step, written in enumerate(calls):
        assert written.shape == (2, 5, 6)
        for c, h, w in [(0, 0, 0), (1, 0, 1), (0, 1, 0), (1, 1, 1), (0, 4, 5)]:
            group = int(torch.nonzero(masks[step, :, h, w])[0]) // 2  # 2 channels per group
            assert written[c, h, w] == symbols[2 * group + c, h, w]


def test_strict_fp32_sets_and_restores_the_flags() -> None:
    before = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    with strict_fp32():
        assert not torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.deterministic
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    after = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    assert after == before
