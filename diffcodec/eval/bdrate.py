"""Bjøntegaard delta rate and delta metric, for any metric and either direction of "better".

BD-rate (Bjøntegaard, VCEG-M33, 2001) is the average bit-rate difference between two R-D curves at
equal quality: express log-rate as a function of the metric for each curve, integrate both over the
metric range the curves share, and turn the mean log difference into a percentage,

    BD-rate = exp( ∫ (ln R_test(D) − ln R_anchor(D)) dD / (D_max − D_min) ) − 1.

Negative means the test codec needs fewer bits than the anchor for the same quality. The integral is
over the metric axis, so the formula is the same for higher-is-better metrics (PSNR) and
lower-is-better ones (LPIPS, DISTS, FID); the direction only decides which curves are valid (quality
must improve as the rate grows) and the sign convention of BD-metric.

Two interpolations: ``"pchip"`` (default; piecewise cubic Hermite, as in VCEG-AL22 and the JVET
common-test-conditions sheet: it never overshoots between points) and ``"cubic"`` (the original
least-squares cubic polynomial, which needs 4 points per curve).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.interpolate import PchipInterpolator

__all__ = ["bd_metric", "bd_rate"]

Method = Literal["pchip", "cubic"]


def _curve(rate: Sequence[float], metric: Sequence[float], higher_is_better: bool, name: str):
    r = np.asarray(rate, dtype=np.float64).ravel()
    d = np.asarray(metric, dtype=np.float64).ravel()
    if r.shape != d.shape:
        raise ValueError(f"{name} curve: {r.size} rates but {d.size} metric values")
    if r.size < 2:
        raise ValueError(f"{name} curve needs at least 2 points, got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(d))):
        raise ValueError(f"{name} curve contains NaN or infinite values")
    if np.any(r <= 0):
        raise ValueError(f"{name} curve: rates must be positive (they are log-transformed)")
    order = np.argsort(r)
    r, d = r[order], d[order]
    if np.any(np.diff(r) == 0):
        raise ValueError(f"{name} curve has two points at the same rate")
    steps = np.diff(d) if higher_is_better else -np.diff(d)
    if np.any(steps <= 0):
        better = "increase" if higher_is_better else "decrease"
        raise ValueError(
            f"{name} curve is not monotonic: the metric must {better} strictly with the rate "
            f"(rates {np.round(r, 5).tolist()}, metric {np.round(d, 5).tolist()})"
        )
    return np.log(r), d


def _integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float, method: Method) -> float:
    """∫_lo^hi f, where f interpolates the points (x, y) (x sorted ascending)."""
    if method == "pchip":
        return float(PchipInterpolator(x, y).integrate(lo, hi))
    if method == "cubic":
        if x.size < 4:
            raise ValueError(f"the cubic Bjøntegaard fit needs at least 4 points per curve, got {x.size}")
        antiderivative = np.polyint(np.polyfit(x, y, 3))
        return float(np.polyval(antiderivative, hi) - np.polyval(antiderivative, lo))
    raise ValueError(f"method must be 'pchip' or 'cubic', got {method!r}")


def _overlap(a: np.ndarray, b: np.ndarray, what: str) -> tuple[float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    if not lo < hi:
        raise ValueError(
            f"the two curves do not overlap in {what}: "
            f"[{a.min():.4g}, {a.max():.4g}] vs [{b.min():.4g}, {b.max():.4g}]"
        )
    return lo, hi


def bd_rate(
    anchor_rate: Sequence[float],
    anchor_metric: Sequence[float],
    test_rate: Sequence[float],
    test_metric: Sequence[float],
    *,
    higher_is_better: bool = True,
    method: Method = "pchip",
) -> float:
    """BD-rate of the test curve against the anchor curve, in percent (negative = test saves bits)."""
    log_ra, da = _curve(anchor_rate, anchor_metric, higher_is_better, "anchor")
    log_rt, dt = _curve(test_rate, test_metric, higher_is_better, "test")
    lo, hi = _overlap(da, dt, "metric")
    # log-rate as a function of the metric: sort by metric so the interpolation abscissa ascends
    ia, it = np.argsort(da), np.argsort(dt)
    mean_diff = (
        _integral(dt[it], log_rt[it], lo, hi, method) - _integral(da[ia], log_ra[ia], lo, hi, method)
    ) / (hi - lo)
    return float((np.exp(mean_diff) - 1.0) * 100.0)


def bd_metric(
    anchor_rate: Sequence[float],
    anchor_metric: Sequence[float],
    test_rate: Sequence[float],
    test_metric: Sequence[float],
    *,
    higher_is_better: bool = True,
    method: Method = "pchip",
) -> float:
    """Average metric difference (test − anchor) at equal rate, over the shared log-rate range.

    For PSNR this is BD-PSNR in dB (positive = test better); for a lower-is-better metric a negative
    value means the test codec is better.
    """
    log_ra, da = _curve(anchor_rate, anchor_metric, higher_is_better, "anchor")
    log_rt, dt = _curve(test_rate, test_metric, higher_is_better, "test")
    lo, hi = _overlap(log_ra, log_rt, "log-rate")
    return (_integral(log_rt, dt, lo, hi, method) - _integral(log_ra, da, lo, hi, method)) / (hi - lo)
