"""Benchmark: GaussianConditional coding — size vs. the ideal information content, and throughput.

Codes ``--symbols`` (default 1,048,576) Gaussian-conditional symbols with realistic, log-normally spread
scales (σ from ~0.05 to ~50, means ~N(0, 2²), y drawn from the model itself), then reports

- coded bytes vs. the ideal ``−Σ log₂ p`` under the continuous model (and under the 16-bit integer tables);
- encode / decode throughput of diffcodec's ``GaussianConditional.compress`` / ``decompress`` (constriction
  range coder) and, if CompressAI is importable, of CompressAI's ``GaussianConditional`` + C++ rANS on the
  same symbols, indexes and (bit-identical) tables;
- the per-stream overhead on short streams (~250-byte files, the regime of the one-step diffusion codecs).

Run (a script, not a test; a few seconds to a minute)::

    HF_HUB_OFFLINE=1 python benchmarks/entropy_coding.py [--symbols N] [--threads 1]

CompressAI is optional and not a diffcodec dependency; see ``benchmarks/requirements.txt``.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from diffcodec.entropy import GaussianConditional, get_scale_table


def _best_of(repeats: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def _realistic_latent(
    n: int, seed: int, median_scale: float = 0.6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y, scales, means of shape (1, 64, n/64): log-normal scales, y drawn from N(μ, σ²)."""
    g = torch.Generator().manual_seed(seed)
    shape = (1, 64, n // 64)
    scales = torch.exp(torch.randn(shape, generator=g) * 1.1 + math.log(median_scale)).clamp(0.05, 60.0)
    means = torch.randn(shape, generator=g) * 2.0
    y = means + scales * torch.randn(shape, generator=g)
    return y, scales, means


def _try_compressai() -> Any:
    try:
        from compressai.entropy_models import GaussianConditional as CompressAIGaussian
    except Exception as err:  # not installed, or its optional imports fail
        print(f"CompressAI not importable ({type(err).__name__}: {err}); skipping the comparison")
        return None
    import compressai

    print(f"CompressAI {compressai.__version__} (coder: {compressai.get_entropy_coder()})")
    return CompressAIGaussian


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1 << 20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.symbols - args.symbols % 64
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)"
    )

    ours = GaussianConditional(None)
    seconds, _ = _best_of(1, lambda: ours.update_scale_table(get_scale_table()))
    print(f"table construction (64 CDFs, update_scale_table): {seconds:.3f} s")
    ours.eval()
    y, scales, means = _realistic_latent(n, args.seed)
    with torch.no_grad():
        _, likelihoods = ours(y, scales, means)
    indexes = ours.build_indexes(scales)
    symbols = ours.quantize(y, "symbols", means)
    ideal_bits = float(-torch.log2(likelihoods.double()).sum())
    table = ours.cdf_table()
    table_bits = table.information_bits(symbols.numpy(), indexes.numpy())
    value = symbols.numpy() - table.offset[indexes.numpy()]
    escapes = int(((value < 0) | (value >= table.cdf_length[indexes.numpy()] - 2)).sum())
    print(f"{n:,} symbols, {ideal_bits / n:.3f} bits/symbol ideal, {escapes} escapes")

    for i in range(min(64, int(indexes.max()) + 1)):  # build the row models outside the timed region
        table.model(i)
    enc_s, strings = _best_of(args.repeats, lambda: ours.compress(y, indexes, means))
    dec_s, y_hat = _best_of(args.repeats, lambda: ours.decompress(strings, indexes, means))
    assert torch.equal(y_hat, torch.round(y - means) + means)
    size = len(strings[0])
    print("\ndiffcodec (constriction range coder)")
    print(f"  size            {size:,} bytes")
    print(f"  vs ideal        {100 * (8 * size / ideal_bits - 1):+.4f} %  (continuous model −Σlog2 p)")
    print(f"  vs tables       {100 * (8 * size / table_bits - 1):+.4f} %  (16-bit integer tables)")
    print(f"  encode          {n / enc_s / 1e6:.2f} M symbols/s  ({enc_s:.3f} s)")
    print(f"  decode+verify   {n / dec_s / 1e6:.2f} M symbols/s  ({dec_s:.3f} s)")

    from diffcodec.entropy import decode_symbols

    flat_idx, flat_sym = indexes.numpy().reshape(-1), symbols.numpy().reshape(-1)
    raw_s, raw = _best_of(args.repeats, lambda: decode_symbols(strings[0], flat_idx, table, verify=False))
    assert np.array_equal(raw, flat_sym)
    print(f"  decode (no verify) {n / raw_s / 1e6:.2f} M symbols/s  ({raw_s:.3f} s)")

    compressai_gaussian = _try_compressai()
    if compressai_gaussian is not None:
        theirs = compressai_gaussian(None)
        theirs.update_scale_table(get_scale_table())
        assert torch.equal(theirs.quantized_cdf, ours.quantized_cdf), "tables differ from CompressAI's"
        enc_c, strings_c = _best_of(args.repeats, lambda: theirs.compress(y, indexes, means))
        dec_c, y_hat_c = _best_of(args.repeats, lambda: theirs.decompress(strings_c, indexes, means=means))
        assert torch.equal(y_hat_c, y_hat)
        size_c = len(strings_c[0])
        print("\nCompressAI GaussianConditional + rANS")
        print(f"  size            {size_c:,} bytes  ({100 * (8 * size_c / ideal_bits - 1):+.4f} % vs ideal)")
        print(f"  encode          {n / enc_c / 1e6:.2f} M symbols/s  ({enc_c:.3f} s)")
        print(f"  decode          {n / dec_c / 1e6:.2f} M symbols/s  ({dec_c:.3f} s)")

    # short streams: ~250-byte files
    rng_seed = args.seed + 1
    overheads, overheads_c, sizes = [], [], []
    for k in range(200):
        y_s, s_s, m_s = _realistic_latent(64 * 48, rng_seed + k, median_scale=0.2)  # low rate: small σ
        idx_s = ours.build_indexes(s_s)
        bits = table.information_bits(ours.quantize(y_s, "symbols", m_s).numpy(), idx_s.numpy())
        sizes.append(len(ours.compress(y_s, idx_s, m_s)[0]))
        overheads.append(sizes[-1] - bits / 8)
        if compressai_gaussian is not None:
            overheads_c.append(len(theirs.compress(y_s, idx_s, m_s)[0]) - bits / 8)
    print(f"\nshort streams (3,072 symbols, ~{np.mean(sizes):.0f} bytes): bytes over the table")
    print(f"  information content: diffcodec {np.mean(overheads):.2f} (max {np.max(overheads):.2f})", end="")
    if overheads_c:
        print(f", CompressAI rANS {np.mean(overheads_c):.2f} (max {np.max(overheads_c):.2f})")
    else:
        print()


if __name__ == "__main__":
    main()
