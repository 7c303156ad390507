"""CompressAI golden vectors (specs/golden/stablecodec/entropy_models.safetensors, compressai 1.2.8).

The file pins CompressAI's maths: an ``EntropyBottleneck(16)`` saved with the compressai ≤ 1.2.6 parameter
names (as in the official StableCodec checkpoints) and a ``GaussianConditional`` with the ELIC scale table.
Float likelihoods are compared to 3e-8 (the README's tolerance); tables, indexes and symbols exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffcodec.entropy import EntropyBottleneck, GaussianConditional, get_scale_table

LIKELIHOOD_ATOL = 3e-8


@pytest.fixture(scope="module")
def golden(golden_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(golden_dir / "stablecodec" / "entropy_models.safetensors")


@pytest.fixture(scope="module")
def bottleneck(golden: dict[str, torch.Tensor]) -> EntropyBottleneck:
    prefix = "eb.state_dict."
    state = {k[len(prefix) :]: v for k, v in golden.items() if k.startswith(prefix)}
    assert "_matrix0" in state and "_factor3" in state  # the legacy (<= 1.2.6) names
    eb = EntropyBottleneck(16)
    eb.load_state_dict(state, strict=True)
    return eb.eval()


@pytest.fixture(scope="module")
def gaussian() -> GaussianConditional:
    gc = GaussianConditional(None)
    gc.update_scale_table(get_scale_table())
    return gc.eval()


def test_bottleneck_forward(bottleneck: EntropyBottleneck, golden: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        z_hat, likelihoods = bottleneck(golden["eb.z"])
    assert torch.equal(z_hat, golden["eb.z_hat_eval"])
    torch.testing.assert_close(likelihoods, golden["eb.z_likelihoods_eval"], atol=LIKELIHOOD_ATOL, rtol=0)


def test_bottleneck_tables_are_rebuilt_exactly(
    bottleneck: EntropyBottleneck, golden: dict[str, torch.Tensor]
) -> None:
    state = dict(bottleneck.state_dict())
    for name in ("_offset", "_quantized_cdf", "_cdf_length"):  # as in the official training checkpoints
        state[name] = torch.zeros(0, dtype=torch.int32)
    eb = EntropyBottleneck(16)
    eb.load_state_dict(state, strict=True)
    assert eb.update() is True
    assert torch.equal(eb.quantized_cdf, golden["eb.quantized_cdf"])
    assert torch.equal(eb.offset, golden["eb.offset"])
    assert torch.equal(eb.cdf_length, golden["eb.cdf_length"])
    assert eb.quantized_cdf.dtype == eb.offset.dtype == eb.cdf_length.dtype == torch.int32


def test_bottleneck_coding(bottleneck: EntropyBottleneck, golden: dict[str, torch.Tensor]) -> None:
    strings = bottleneck.compress(golden["eb.z"])
    assert len(strings) == 1
    assert len(strings[0]) <= golden["eb.z_string_bytes"].numel()  # not larger than CompressAI's rANS
    assert torch.equal(bottleneck.decompress(strings, (2, 3)), golden["eb.z_decoded"])


def test_gaussian_tables(gaussian: GaussianConditional, golden: dict[str, torch.Tensor]) -> None:
    torch.testing.assert_close(gaussian.scale_table, golden["gc.scale_table"], atol=3e-8, rtol=0)
    assert torch.equal(gaussian.quantized_cdf, golden["gc.quantized_cdf"])
    assert torch.equal(gaussian.offset, golden["gc.offset"])
    assert torch.equal(gaussian.cdf_length, golden["gc.cdf_length"])


def test_gaussian_likelihoods_indexes_symbols(
    gaussian: GaussianConditional, golden: dict[str, torch.Tensor]
) -> None:
    y, scales, means = golden["gc.y"], golden["gc.scales"], golden["gc.means"]
    assert (scales < 0).any()  # the vector exercises the lower bound
    with torch.no_grad():
        _, likelihoods = gaussian(y, scales, means)
    torch.testing.assert_close(likelihoods, golden["gc.likelihoods_eval"], atol=LIKELIHOOD_ATOL, rtol=0)
    indexes = gaussian.build_indexes(scales)
    assert torch.equal(indexes, golden["gc.indexes"])
    symbols = gaussian.quantize(y, "symbols", means)
    assert torch.equal(symbols, golden["gc.symbols"])


def test_gaussian_coding(gaussian: GaussianConditional, golden: dict[str, torch.Tensor]) -> None:
    y, means, indexes = golden["gc.y"], golden["gc.means"], golden["gc.indexes"]
    strings = gaussian.compress(y, indexes, means)
    assert len(strings[0]) <= golden["gc.rans_bytes"].numel()  # not larger than CompressAI's rANS
    y_hat = gaussian.decompress(strings, indexes, means)
    assert torch.equal(y_hat, golden["gc.symbols"].float() + means)
