"""FSQ (Mentzer et al. 2024) and its fixed-length index packing, against the golden ``fsq_and_packing``."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from diffcodec.bitstream import DecodeError
from diffcodec.entropy.fsq import FSQ


@pytest.fixture(scope="module")
def golden(golden_dir):
    return load_file(str(golden_dir / "onedc" / "fsq_and_packing.safetensors"))


def test_fsq_reproduces_the_official_codes_indices_and_14_bit_packing(golden) -> None:
    fsq = FSQ([4] * 7)
    codes, indices = fsq(golden["input.z"])
    assert torch.equal(codes, golden["output.codes"])
    assert torch.equal(indices, golden["output.indices"])
    assert torch.equal(fsq.indices_to_codes(indices), golden["output.codes_from_indices"])
    packed = fsq.pack(indices[0])
    assert packed == bytes(golden["output.packed_bytes"].numpy())
    assert fsq.index_bits == 14 and fsq.packed_size(15) == 27 == len(packed)
    assert torch.equal(fsq.unpack(packed, (1, 3, 5)), indices)


def test_fsq_codes_levels_and_round_trip_for_mixed_odd_and_even_levels() -> None:
    fsq = FSQ([3, 5, 4, 2])
    z = torch.randn(2, 4, 6, 5) * 3
    codes, indices = fsq(z)
    assert fsq.codebook_size == 120 and indices.shape == (2, 6, 5)
    assert indices.min() >= 0 and indices.max() < 120
    # every channel takes at most L_i values, symmetric for odd L and offset by one for even L
    for channel, levels in enumerate(fsq.levels):
        values = torch.unique(codes[:, channel])
        assert len(values) <= levels
        assert values.min() >= -1 and values.max() <= 1
    assert torch.equal(fsq.indices_to_codes(indices), codes)
    every = torch.arange(120).view(1, 10, 12)
    assert torch.equal(fsq.codes_to_indices(fsq.indices_to_codes(every)), every)


def test_fsq_is_straight_through_in_training_and_keeps_the_dtype() -> None:
    fsq = FSQ([4] * 7)
    z = torch.randn(1, 7, 2, 2, requires_grad=True)
    codes, _ = fsq(z)
    codes.sum().backward()
    assert z.grad is not None and torch.all(z.grad > 0)  # d tanh > 0 through the identity rounding
    assert fsq(z.detach().to(torch.bfloat16))[0].dtype == torch.bfloat16
    assert not fsq.state_dict()  # no persistent state: the official checkpoint has no FSQ keys


def test_fsq_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="levels"):
        FSQ([4, 1])
    fsq = FSQ([4] * 7)
    with pytest.raises(ValueError, match=r"\(B, 7"):
        fsq(torch.zeros(1, 6, 2, 2))
    with pytest.raises(ValueError, match="lie in"):
        fsq.indices_to_codes(torch.tensor([[[16384]]]))
    with pytest.raises(TypeError):
        fsq.indices_to_codes(torch.zeros(1, 1, 1))
    packed = fsq.pack(torch.tensor([1, 2, 3]))
    with pytest.raises(DecodeError):
        fsq.unpack(packed[:-1], (3,))
    with pytest.raises(DecodeError, match="padding"):
        fsq.unpack(bytes([0xFF]) + packed[1:], (3,))
