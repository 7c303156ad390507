"""Entropy models and the stream coder: CompressAI semantics, lossless coding, errors, determinism."""

from __future__ import annotations

import copy
import functools
import math
import pickle
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from diffcodec.bitstream import DecodeError
from diffcodec.entropy import (
    CdfTable,
    EntropyBottleneck,
    GaussianConditional,
    LowerBound,
    SymbolDecoder,
    SymbolEncoder,
    decode_symbols,
    encode_symbols,
    get_scale_table,
    pmf_to_quantized_cdf,
    ste_round,
)

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


@pytest.fixture(scope="module")
def gaussian() -> GaussianConditional:
    gc = GaussianConditional(None)
    gc.update_scale_table(get_scale_table())
    return gc.eval()


@pytest.fixture(scope="module")
def gc_table(gaussian: GaussianConditional) -> CdfTable:
    return gaussian.cdf_table()


def _bottleneck(channels: int = 6, seed: int = 0) -> EntropyBottleneck:
    torch.manual_seed(seed)
    eb = EntropyBottleneck(channels)
    with torch.no_grad():  # move away from the symmetric init so channels differ
        for p in (*eb.matrices, *eb.biases, *eb.factors):
            p.add_(0.2 * torch.randn_like(p))
        eb.quantiles.add_(torch.randn_like(eb.quantiles))
    eb.update(force=True)
    return eb.eval()


@functools.cache
def _small_table() -> CdfTable:
    gc = GaussianConditional(get_scale_table(max=20.0, levels=8))
    gc.update()
    return gc.cdf_table()


def _gaussian_symbols(rng: np.random.Generator, gaussian: GaussianConditional, n: int):
    scales = torch.from_numpy(np.exp(rng.normal(-0.3, 1.2, n)).astype(np.float32))
    indexes = gaussian.build_indexes(scales).numpy()
    symbols = np.round(rng.normal(size=n) * scales.numpy()).astype(np.int32)
    return symbols, indexes


# ---------------------------------------------------------------------------------------------- tables
def test_pmf_to_quantized_cdf_matches_compressai_algorithm_by_hand() -> None:
    one = 1 << 16
    # rescaling plus a zero-frequency tail that steals from the lower, least frequent symbol
    assert pmf_to_quantized_cdf([0.75, 0.25, 0.0]).tolist() == [0, 49152, 65535, 65536]
    # a zero-frequency head steals forward
    assert pmf_to_quantized_cdf([0.0, 0.75, 0.25]).tolist() == [0, 1, 49153, 65536]
    # std::round rounds half away from zero (numpy's round-half-even would give [0, 2, 4, 65536])
    assert pmf_to_quantized_cdf([1.5 / one, 2.5 / one, 1 - 4 / one]).tolist() == [0, 1, 3, 65536]
    # the pmf is read as float32, like the C++ std::vector<float>
    p64 = np.array([0.3 + 1e-12, 0.7 - 1e-12])
    assert np.array_equal(pmf_to_quantized_cdf(p64), pmf_to_quantized_cdf(p64.astype(np.float32)))


@PROPERTY
@given(hnp.arrays(np.float64, st.integers(1, 300), elements=st.floats(0, 1)))
def test_pmf_to_quantized_cdf_is_a_valid_cdf(pmf: np.ndarray) -> None:
    if np.round(pmf.astype(np.float32) * 65536).sum() == 0 or pmf.size > 60000:
        return
    cdf = pmf_to_quantized_cdf(pmf)
    assert cdf.dtype == np.int32 and cdf.shape == (pmf.size + 1,)
    assert cdf[0] == 0 and cdf[-1] == 1 << 16
    assert np.all(np.diff(cdf) > 0)


def test_pmf_to_quantized_cdf_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="NaN"):
        pmf_to_quantized_cdf([0.5, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        pmf_to_quantized_cdf([])
    with pytest.raises(ValueError, match="no mass"):
        pmf_to_quantized_cdf([1e-9, 1e-9])


def test_cdf_table_validation(gaussian: GaussianConditional) -> None:
    cdf = gaussian.quantized_cdf
    with pytest.raises(ValueError, match="one entry per"):
        CdfTable(cdf, gaussian.cdf_length[:-1], gaussian.offset)
    broken = cdf.clone()
    broken[0, 2] = broken[0, 1]
    with pytest.raises(ValueError, match="strictly increasing"):
        CdfTable(broken, gaussian.cdf_length, gaussian.offset)
    with pytest.raises(TypeError, match="integer"):
        CdfTable(cdf.float(), gaussian.cdf_length, gaussian.offset)
    with pytest.raises(RuntimeError, match="update"):
        GaussianConditional(None).cdf_table()
    with pytest.raises(RuntimeError, match="update"):
        EntropyBottleneck(3).cdf_table()


# ---------------------------------------------------------------------------------------------- ops
def test_lower_bound_gradient_rule() -> None:
    bound = LowerBound(0.5)
    x = torch.tensor([0.2, 0.2, 0.8], requires_grad=True)
    y = bound(x)
    assert y.tolist() == [0.5, 0.5, pytest.approx(0.8)]
    # below the bound the gradient passes only if it would increase x (negative incoming gradient)
    (y * torch.tensor([1.0, -1.0, 1.0])).sum().backward()
    assert x.grad.tolist() == [0.0, -1.0, 1.0]


def test_ste_round_value_and_gradient() -> None:
    x = torch.tensor([0.5, 1.5, -0.5, 2.4999, -3.7], requires_grad=True)
    y = ste_round(x)
    assert torch.equal(y, torch.round(x.detach()))  # half to even, bit-exact
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(5))


# ---------------------------------------------------------------------------------------------- bottleneck
def test_bottleneck_names_and_init_follow_compressai() -> None:
    eb = EntropyBottleneck(5)
    keys = set(eb.state_dict())
    expected = {f"matrices.{i}" for i in range(5)} | {f"biases.{i}" for i in range(5)}
    expected |= {f"factors.{i}" for i in range(4)}
    expected |= {
        "quantiles",
        "target",
        "likelihood_lower_bound.bound",
        "_offset",
        "_quantized_cdf",
        "_cdf_length",
    }
    assert keys == expected
    scale = 10 ** (1 / 5)
    assert torch.allclose(eb.matrices[0], torch.full((5, 3, 1), math.log(math.expm1(1 / scale / 3))))
    assert torch.allclose(eb.matrices[4], torch.full((5, 1, 3), math.log(math.expm1(1 / scale))))
    assert eb.biases[4].shape == (5, 1, 1) and eb.biases[0].abs().max() <= 0.5
    assert torch.equal(eb.factors[3], torch.zeros(5, 3, 1))
    assert eb.quantiles[:, 0].tolist() == [[-10.0, 0.0, 10.0]] * 5
    t = math.log(2 / 1e-9 - 1)
    assert eb.target.tolist() == pytest.approx([-t, 0.0, t])


def test_bottleneck_loads_legacy_names_and_empty_tables_strictly() -> None:
    source = _bottleneck(channels=4, seed=3)
    legacy = {}
    for key, value in source.state_dict().items():
        for new, old in (("matrices.", "_matrix"), ("biases.", "_bias"), ("factors.", "_factor")):
            if key.startswith(new):
                key = old + key[len(new) :]
        legacy[key] = value
    legacy["_offset"] = legacy["_quantized_cdf"] = legacy["_cdf_length"] = torch.zeros(0, dtype=torch.int32)
    assert "_matrix0" in legacy and "matrices.0" not in legacy

    target = _bottleneck(channels=4, seed=9)  # has filled tables of another shape
    target.load_state_dict(legacy, strict=True)
    assert not target.is_updated
    with pytest.raises(RuntimeError, match="update"):
        target.compress(torch.zeros(1, 4, 2, 2))
    for a, b in zip(target.parameters(), source.parameters()):
        assert torch.equal(a, b)
    assert target.update() is True and target.update() is False
    assert torch.equal(target.quantized_cdf, source.quantized_cdf)
    # filled tables in the checkpoint load as they are (no update needed)
    fresh = EntropyBottleneck(4)
    fresh.load_state_dict(source.state_dict(), strict=True)
    assert fresh.is_updated and torch.equal(fresh.offset, source.offset)


def test_bottleneck_forward_modes() -> None:
    eb = _bottleneck()
    z = 3 * torch.randn(2, 6, 5, 4)
    eb.train()
    z_noisy, lik = eb(z)
    assert z_noisy.shape == z.shape and lik.shape == z.shape
    assert (z_noisy - z).abs().max() <= 0.5 and not torch.equal(z_noisy, z)
    assert lik.min() >= 1e-9 and lik.max() <= 1

    eb.eval()
    z = z.requires_grad_()
    z_hat, lik = eb(z)
    med = eb.medians.detach()[None, :, None, None]
    assert torch.equal(z_hat.detach(), torch.round(z.detach() - med) + med)
    (z_hat.sum() + lik.log().sum()).backward()  # straight-through: gradients reach z and the density
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert eb.matrices[0].grad is not None
    with pytest.raises(ValueError, match="expected a tensor"):
        eb(torch.zeros(1, 5, 2, 2))


def test_bottleneck_aux_loss_fits_the_quantiles() -> None:
    eb = _bottleneck()
    before = eb.loss()
    before.backward()
    assert eb.quantiles.grad.abs().sum() > 0 and eb.matrices[0].grad is None  # only the quantiles learn
    eb._update_quantiles()
    assert eb.loss() < 0.1 * before.detach()


def test_bottleneck_round_trip_with_escapes_and_batches() -> None:
    eb = _bottleneck()
    torch.manual_seed(1)
    z = 2 * torch.randn(3, 6, 4, 5)
    z[0, 1, 0, 0] = 1e6  # far outside the tabulated range: escape-coded
    z[2, 3, 1, 2] = -2.5e4
    strings = eb.compress(z)
    assert len(strings) == 3 and all(isinstance(s, bytes) for s in strings)
    z_hat = eb.decompress(strings, (4, 5))
    med = eb.medians.detach()[None, :, None, None]
    assert torch.equal(z_hat, torch.round(z - med) + med)
    # every batch item's stream is independent of the batch it was coded in
    assert [eb.compress(z[i : i + 1])[0] for i in range(3)] == strings
    with pytest.raises(ValueError, match="invalid spatial size"):
        eb.decompress(strings, (0, 5))


def test_tables_built_under_inference_mode_code_and_follow_updates() -> None:
    z = 2 * torch.randn(2, 6, 4, 5)
    reference = _bottleneck()
    reference.update(force=True)
    eb = _bottleneck()
    with torch.inference_mode():  # a user's `with torch.inference_mode(): codec.compress(...)`
        eb.update(force=True)  # the tables are inference tensors: no version counter to key the cache
        assert eb.compress(z) == reference.compress(z)
        eb.update(force=True)  # new tables: the cache must not serve the old ones
        assert eb.decompress(eb.compress(z), (4, 5)).shape == z.shape


# ---------------------------------------------------------------------------------------------- gaussian
def test_scale_table_and_cdf_layout(gaussian: GaussianConditional) -> None:
    table = get_scale_table()
    assert table.dtype == torch.float32 and table.shape == (64,)
    assert table[0].item() == pytest.approx(0.11) and table[-1].item() == pytest.approx(256.0)
    assert gaussian.quantized_cdf.shape == (64, 3133)
    assert gaussian.offset[[0, -1]].tolist() == [-1, -1565]
    assert gaussian.cdf_length[[0, -1]].tolist() == [5, 3133]
    assert set(gaussian.state_dict()) == {
        "scale_table", "scale_bound", "lower_bound_scale.bound", "likelihood_lower_bound.bound",
        "_offset", "_quantized_cdf", "_cdf_length",
    }  # fmt: skip


def test_build_indexes_matches_the_compressai_loop(gaussian: GaussianConditional) -> None:
    torch.manual_seed(0)
    table = gaussian.scale_table
    scales = torch.cat(
        [torch.randn(500) * 30, torch.exp(torch.randn(500) * 2), table, -table, table * 1.0000001]
    )
    scales = torch.cat([scales, torch.tensor([0.0, float("inf"), float("-inf")])])
    bounded = torch.max(scales, torch.tensor(0.11))
    reference = torch.full(scales.shape, len(table) - 1, dtype=torch.int32)
    for s in table[:-1]:
        reference -= (bounded <= s).int()
    assert torch.equal(gaussian.build_indexes(scales), reference)
    assert gaussian.build_indexes(scales.double()).tolist() == reference.tolist()
    with pytest.raises(ValueError, match="NaN"):
        gaussian.build_indexes(torch.tensor([1.0, float("nan")]))


def test_gaussian_forward_and_quantize_modes(gaussian: GaussianConditional) -> None:
    torch.manual_seed(0)
    y, scales, means = torch.randn(2, 4, 3, 3) * 4, torch.rand(2, 4, 3, 3) * 3, torch.randn(2, 4, 3, 3)
    y_hat, lik = gaussian(y, scales, means, training=False)
    assert torch.equal(y_hat, torch.round(y - means) + means)
    v, s = (y_hat - means).abs(), scales.clamp_min(0.11)
    normal = torch.distributions.Normal(0.0, 1.0)
    expected = (normal.cdf((0.5 - v) / s) - normal.cdf((-0.5 - v) / s)).clamp_min(1e-9)
    assert torch.allclose(lik, expected, atol=1e-6)
    y_noisy, _ = gaussian(y, scales, means, training=True)
    assert (y_noisy - y).abs().max() <= 0.5
    y_req = y.clone().requires_grad_()
    gaussian.quantize(y_req, "ste", means).sum().backward()
    assert torch.equal(y_req.grad, torch.ones_like(y))
    assert gaussian.quantize(y, "symbols", means).dtype == torch.int32
    with pytest.raises(ValueError, match="quantization mode"):
        gaussian.quantize(y, "round")
    with pytest.raises(ValueError, match="non-finite"):
        gaussian.quantize(torch.tensor([[float("nan")]]), "symbols")
    with pytest.raises(ValueError, match="int32"):
        gaussian.quantize(torch.tensor([[3e9]]), "symbols")


def test_gaussian_round_trip_with_broadcast_means(gaussian: GaussianConditional) -> None:
    torch.manual_seed(2)
    y = torch.randn(2, 8, 5, 6) * 10
    y[1, 2, 3, 4] = 1e7  # escape
    scales = torch.rand(2, 8, 5, 6) * 4 - 1  # includes negatives: index 0
    means = torch.randn(2, 8, 1, 1)
    indexes = gaussian.build_indexes(scales)
    strings = gaussian.compress(y, indexes, means)
    y_hat = gaussian.decompress(strings, indexes, means)
    assert torch.equal(y_hat, torch.round(y - means) + means)
    plain = gaussian.decompress(gaussian.compress(y, indexes), indexes)
    assert torch.equal(plain, torch.round(y))
    with pytest.raises(ValueError, match="same shape"):
        gaussian.compress(y, indexes[:, :4])
    with pytest.raises(ValueError, match="one item per string"):
        gaussian.decompress(strings[:1], indexes)
    with pytest.raises(TypeError, match="list of bytes"):
        gaussian.decompress(["abc", "def"], indexes)


def test_gaussian_checkpoint_with_empty_tables_loads_strictly(gaussian: GaussianConditional) -> None:
    empty = GaussianConditional(None).state_dict()  # what the official checkpoints hold
    gc = GaussianConditional(get_scale_table())
    gc.update()
    gc.load_state_dict(empty, strict=True)
    assert not gc.is_updated and gc.scale_table.numel() == 0
    with pytest.raises(RuntimeError, match="update_scale_table"):
        gc.update()
    assert gc.update_scale_table(get_scale_table()) is True
    assert gc.update_scale_table(get_scale_table()) is False
    assert torch.equal(gc.quantized_cdf, gaussian.quantized_cdf)
    with pytest.raises(ValueError, match="increasing"):
        GaussianConditional([1.0, 0.5])


# ---------------------------------------------------------------------------------------------- coder
def test_modules_deepcopy_and_pickle_after_coding(gaussian: GaussianConditional) -> None:
    eb = _bottleneck()
    z = torch.randn(1, 6, 3, 3) * 4
    strings = eb.compress(z)  # caches the constriction models
    for clone in (copy.deepcopy(eb), pickle.loads(pickle.dumps(eb))):
        assert clone.compress(z) == strings
        assert torch.equal(clone.decompress(strings, (3, 3)), eb.decompress(strings, (3, 3)))


def test_multi_call_stream_decodes_step_by_step(gaussian: GaussianConditional, gc_table: CdfTable) -> None:
    rng = np.random.default_rng(0)
    eb = _bottleneck()
    eb_table = eb.cdf_table()
    steps = []
    for step in range(4):
        if step == 2:
            symbols = rng.integers(-12, 12, size=(6, 7)).astype(np.int32)
            indexes = np.repeat(np.arange(6), 7).reshape(6, 7)
            steps.append((symbols, indexes, eb_table))
        else:
            symbols, indexes = _gaussian_symbols(rng, gaussian, 300)
            steps.append((symbols.reshape(10, 30), indexes.reshape(10, 30), gc_table))
    steps.append((np.zeros(0, np.int32), np.zeros(0, np.int64), gc_table))  # an empty step is fine
    encoder = SymbolEncoder()
    for symbols, indexes, table in steps:
        encoder.encode(symbols, indexes, table)
    data = encoder.finish()
    assert encoder.finish() == data
    with pytest.raises(RuntimeError, match="finished"):
        encoder.encode(steps[0][0], steps[0][1], gc_table)

    decoder = SymbolDecoder(data)
    for symbols, indexes, table in steps:
        decoded = decoder.decode(indexes, table)
        assert decoded.dtype == np.int32 and np.array_equal(decoded, symbols)
    decoder.finish()


@PROPERTY
@given(
    hnp.arrays(
        np.int64,
        st.integers(0, 60),
        elements=st.one_of(st.integers(-40, 40), st.integers(INT32_MIN, INT32_MAX)),
    ),
    st.integers(0, 2**32 - 1),
)
def test_round_trip_is_lossless_for_any_int32(symbols: np.ndarray, seed: int) -> None:
    table = _small_table()
    indexes = np.random.default_rng(seed).integers(0, len(table), size=symbols.shape)
    data = encode_symbols(symbols.astype(np.int32), indexes, table)
    assert np.array_equal(decode_symbols(data, indexes, table), symbols)


def test_stream_size_is_close_to_the_information_content(
    gaussian: GaussianConditional, gc_table: CdfTable
) -> None:
    rng = np.random.default_rng(5)
    for n in (40, 2_000, 50_000):
        symbols, indexes = _gaussian_symbols(rng, gaussian, n)
        ideal_bytes = gc_table.information_bits(symbols, indexes) / 8
        size = len(encode_symbols(symbols, indexes, gc_table))
        assert 0.995 * ideal_bytes - 1 <= size <= 1.002 * ideal_bytes + 4, (n, size, ideal_bytes)
    assert encode_symbols(np.zeros(0, np.int32), np.zeros(0, np.int32), gc_table) == b""


def test_corrupted_streams_raise_decode_error(gaussian: GaussianConditional, gc_table: CdfTable) -> None:
    rng = np.random.default_rng(11)
    symbols, indexes = _gaussian_symbols(rng, gaussian, 1500)
    symbols[::97] = rng.integers(-(10**6), 10**6, size=symbols[::97].size)  # some escapes
    data = encode_symbols(symbols, indexes, gc_table)
    bad = [data[: len(data) // 2], data[:-1], data + b"\x01", data + bytes(4), b"\xff" * len(data)]
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x10
    bad.append(bytes(flipped))
    for stream in bad:
        with pytest.raises(DecodeError):
            decode_symbols(stream, indexes, gc_table)
    # random damage: always DecodeError or (rarely, undetectable) other symbols — never another exception
    detected = 0
    for trial in range(60):
        damaged = bytearray(data)
        if trial % 2:
            damaged = damaged[: int(rng.integers(0, len(data)))]
        else:
            damaged[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        try:
            assert not np.array_equal(decode_symbols(bytes(damaged), indexes, gc_table), symbols)
        except DecodeError:
            detected += 1
    assert detected >= 50
    # the wrong tables (or indexes) for a stream are caught the same way
    with pytest.raises(DecodeError):
        decode_symbols(data, np.minimum(indexes + 5, 63), gc_table)


def test_coder_rejects_bad_arguments(gc_table: CdfTable) -> None:
    encoder = SymbolEncoder()
    with pytest.raises(ValueError, match="same shape"):
        encoder.encode(np.zeros(3, np.int32), np.zeros(4, np.int32), gc_table)
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        encoder.encode(np.zeros(3, np.int32), np.full(3, 64), gc_table)
    with pytest.raises(TypeError, match="integers"):
        encoder.encode(np.zeros(3, np.float32), np.zeros(3, np.int32), gc_table)
    with pytest.raises(ValueError, match="int32"):
        encoder.encode(np.array([2**40]), np.zeros(1, np.int32), gc_table)
    with pytest.raises(TypeError, match="CdfTable"):
        encoder.encode(np.zeros(3, np.int32), np.zeros(3, np.int32), "table")
    with pytest.raises(TypeError, match="bytes"):
        SymbolDecoder("not bytes")
    decoder = SymbolDecoder(b"")
    decoder.finish()
    with pytest.raises(RuntimeError, match="finished"):
        decoder.decode(np.zeros(1, np.int32), gc_table)


def test_coding_is_vectorised(gaussian: GaussianConditional, gc_table: CdfTable) -> None:
    symbols, indexes = _gaussian_symbols(np.random.default_rng(3), gaussian, 1_000_000)
    gc_table.model(0)  # model construction is a one-off per table row, not part of the per-symbol cost
    start = time.perf_counter()
    data = encode_symbols(symbols, indexes, gc_table)
    middle = time.perf_counter()
    decoded = decode_symbols(data, indexes, gc_table)
    end = time.perf_counter()
    assert np.array_equal(decoded, symbols)
    assert middle - start < 5.0 and end - middle < 8.0, (middle - start, end - middle)


# ---------------------------------------------------------------------------------------------- determinism
def test_codes_do_not_depend_on_threads_or_batch(gaussian: GaussianConditional) -> None:
    """A small hyper-synthesis predicts the scales; the streams must not change with threads or batch."""
    torch.manual_seed(0)
    h_s = torch.nn.Sequential(
        torch.nn.ConvTranspose2d(6, 16, 5, stride=2, padding=2, output_padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1),
    ).eval()
    eb = _bottleneck()
    z = torch.randn(3, 6, 4, 4) * 3
    y = torch.randn(3, 8, 8, 8) * 5

    def encode(z: torch.Tensor, y: torch.Tensor) -> list[tuple[bytes, bytes]]:
        with torch.no_grad():
            z_strings = eb.compress(z)
            z_hat = eb.decompress(z_strings, z.shape[-2:])
            scales, means = h_s(z_hat).chunk(2, dim=1)
            indexes = gaussian.build_indexes(scales)
            y_strings = gaussian.compress(y, indexes, means)
            assert torch.equal(gaussian.decompress(y_strings, indexes, means), torch.round(y - means) + means)
        return list(zip(z_strings, y_strings))

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single_thread = encode(z, y)
        torch.set_num_threads(2)
        two_threads = encode(z, y)
    finally:
        torch.set_num_threads(threads)
    assert single_thread == two_threads
    assert [encode(z[i : i + 1], y[i : i + 1])[0] for i in range(3)] == two_threads


def test_tables_do_not_depend_on_threads() -> None:
    def tables() -> list[torch.Tensor]:
        eb = _bottleneck(channels=24, seed=4)
        gc = GaussianConditional(get_scale_table())
        gc.update()
        return [eb.quantized_cdf, eb.offset, eb.cdf_length, gc.quantized_cdf]

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single_thread = tables()
        torch.set_num_threads(2)
        two_threads = tables()
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(single_thread, two_threads))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_modules_code_the_same_bytes_as_cpu(gaussian: GaussianConditional) -> None:
    eb_cpu = _bottleneck()
    eb_cuda = _bottleneck().cuda()
    eb_cuda.update(force=True)  # rebuilt from CUDA parameters: tables are computed on the CPU
    assert torch.equal(eb_cuda.quantized_cdf.cpu(), eb_cpu.quantized_cdf)
    gc_cuda = GaussianConditional(get_scale_table()).cuda()
    gc_cuda.update()
    assert torch.equal(gc_cuda.quantized_cdf.cpu(), gaussian.quantized_cdf)
    torch.manual_seed(0)
    z, y = torch.randn(2, 6, 4, 4) * 3, torch.randn(2, 8, 5, 5) * 4
    scales, means = torch.rand(2, 8, 5, 5) * 5, torch.randn(2, 8, 5, 5)
    assert eb_cuda.compress(z.cuda()) == eb_cpu.compress(z)
    indexes = gaussian.build_indexes(scales)
    assert torch.equal(gc_cuda.build_indexes(scales.cuda()).cpu(), indexes)
    strings = gaussian.compress(y, indexes, means)
    assert gc_cuda.compress(y.cuda(), indexes.cuda(), means.cuda()) == strings
    y_hat = gc_cuda.decompress(strings, indexes.cuda(), means.cuda())
    assert y_hat.is_cuda and torch.equal(y_hat.cpu(), gaussian.decompress(strings, indexes, means))
