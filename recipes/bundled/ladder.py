"""Rate ladders of the bundled per-λ models: a λ sweep's fit, the λ it proposes, the separation check.

StableCodec, CADC and OneDC train one model per λ, with loss ``λ·R + D`` (StableCodec Eq. 5–6, CADC
Eq. 9, OneDC Eq. 1), so the rate falls as λ grows. Over a decade or two it is close to a power law,
``log R = a + b·log λ`` (b < 0), which is what :func:`fit_rate_curve` fits to a short sweep (a few λ,
each trained briefly from the stage-1 checkpoint, each rate measured through real files). The ladder
:func:`propose_lambdas` reads off it puts each rung at a target rate, and :func:`separation_problems`
is the check every exported ladder must pass: rates strictly increasing, each at least
``min_ratio`` (1.5) times the previous (issue 19, deliverable 3).

Pure functions of numbers, used by ``recipes/bundled/finish.py`` (``sweep``, ``set-rates``, ``check``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: Default ladder targets (bpp on the training photos) of the per-λ bundled models.
TARGETS = (0.02, 0.05, 0.15)
#: Each rung's rate must be at least this many times the previous one's.
MIN_RATIO = 1.5
#: The smallest |slope| of log-rate vs log-λ that counts as "the rate responds to λ".
MIN_SLOPE = 0.05
#: How far (as a factor) a proposed λ may lie outside the swept range before it is clamped.
MAX_EXTRAPOLATION = 16.0


class LadderError(ValueError):
    """A sweep that cannot be fitted, or a ladder that does not separate."""


@dataclass(frozen=True)
class RateFit:
    """``log R = intercept + slope·log λ`` (natural logs), fitted by least squares."""

    slope: float
    intercept: float
    r2: float

    def rate(self, lam: float) -> float:
        """The fitted rate (bpp) at ``lam``."""
        return math.exp(self.intercept + self.slope * math.log(lam))

    def lam(self, rate: float) -> float:
        """The λ at which the fit reaches ``rate``."""
        return math.exp((math.log(rate) - self.intercept) / self.slope)


def fit_rate_curve(lambdas: Sequence[float], rates: Sequence[float]) -> RateFit:
    """Least-squares line through (log λ, log rate); :class:`LadderError` if it says nothing about λ.

    Needs at least two distinct positive λ and positive rates; fails when |slope| < :data:`MIN_SLOPE`
    (the runs were too short, or λ too close, for the rate to follow λ).
    """
    if len(lambdas) != len(rates):
        raise LadderError(f"{len(lambdas)} λ but {len(rates)} rates")
    if any(not v > 0 for v in (*lambdas, *rates)):
        raise LadderError(f"λ and rates must be positive; got λ {list(lambdas)}, rates {list(rates)}")
    if len(set(lambdas)) < 2:
        raise LadderError(f"a sweep needs at least two distinct λ; got {list(lambdas)}")
    x = [math.log(v) for v in lambdas]
    y = [math.log(r) for r in rates]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxx = sum((a - mx) ** 2 for a in x)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    slope = sxy / sxx
    intercept = my - slope * mx
    residual = sum((b - intercept - slope * a) ** 2 for a, b in zip(x, y, strict=True))
    total = sum((b - my) ** 2 for b in y)
    r2 = 1.0 - residual / total if total > 0 else 0.0
    if abs(slope) < MIN_SLOPE:
        raise LadderError(
            f"the rate does not follow λ (log-log slope {slope:.3f}, |slope| < {MIN_SLOPE}): "
            f"λ {list(lambdas)} "
            f"gave {[round(r, 5) for r in rates]} bpp; train the sweep runs longer or spread λ further"
        )
    return RateFit(slope=slope, intercept=intercept, r2=r2)


def propose_lambdas(
    fit: RateFit,
    targets: Sequence[float],
    swept: Sequence[float],
    max_extrapolation: float = MAX_EXTRAPOLATION,
) -> tuple[list[float], list[str]]:
    """The λ of each target rate (in the targets' order), to 3 significant digits, and notes.

    A λ further than ``max_extrapolation`` times outside the swept range is clamped to that bound (the
    rung then misses its target; the separation check of the exported ladder says whether that matters),
    and noted.
    """
    if list(targets) != sorted(targets) or len(set(targets)) != len(targets) or min(targets) <= 0:
        raise LadderError(f"targets must be positive and strictly ascending; got {list(targets)}")
    low, high = min(swept) / max_extrapolation, max(swept) * max_extrapolation
    lambdas, notes = [], []
    for target in targets:
        lam = fit.lam(target)
        if not low <= lam <= high:
            clamped = min(max(lam, low), high)
            notes.append(
                f"λ {lam:.3g} for {target} bpp is beyond {max_extrapolation:g}× the swept range "
                f"[{min(swept):g}, {max(swept):g}]; clamped to {clamped:.3g} "
                f"(fit: {fit.rate(clamped):.4f} bpp)"
            )
            lam = clamped
        lambdas.append(float(f"{lam:.3g}"))
    if len(set(lambdas)) != len(lambdas):
        raise LadderError(
            f"the proposed ladder repeats a λ: {lambdas} (targets {list(targets)}); see: {notes}"
        )
    return lambdas, notes


def separation_problems(rates: Sequence[float], min_ratio: float = MIN_RATIO) -> list[str]:
    """What keeps ``rates`` (one per rung, in rung order) from being a usable ladder; [] when it is.

    Each rung must be strictly above the previous one and at least ``min_ratio`` times it.
    """
    problems = []
    for k in range(1, len(rates)):
        previous, rate = rates[k - 1], rates[k]
        if not rate > previous:
            problems.append(f"rung {k} ({rate:.5f} bpp) is not above rung {k - 1} ({previous:.5f} bpp)")
        elif rate < min_ratio * previous:
            problems.append(
                f"rung {k} ({rate:.5f} bpp) is only {rate / previous:.2f}× "
                f"rung {k - 1} ({previous:.5f} bpp), "
                f"under {min_ratio:g}×"
            )
    return problems
