"""The λ sweep's fit, the ladder it proposes and the separation check (``recipes/bundled/ladder.py``), and
the training record / run statistics of ``recipes/bundled/finish.py``."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "recipes" / "bundled"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bundled_{name}", BUNDLED / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    sys.path.insert(0, str(BUNDLED))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BUNDLED))
    return module


ladder = _load("ladder")


def test_fit_recovers_a_power_law_and_inverts_it() -> None:
    lambdas = [0.5, 0.05, 0.005]
    rates = [0.01 * (lam / 0.5) ** -0.4 for lam in lambdas]  # R = 0.01 · (λ/0.5)^-0.4
    fit = ladder.fit_rate_curve(lambdas, rates)
    assert fit.slope == pytest.approx(-0.4)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.rate(0.5) == pytest.approx(0.01)
    assert fit.lam(0.01 * 10**0.4) == pytest.approx(0.05)


def test_fit_of_noisy_points_is_least_squares() -> None:
    fit = ladder.fit_rate_curve([1.0, 0.1, 0.01, 0.001], [0.01, 0.025, 0.05, 0.12])
    x = [math.log(v) for v in (1.0, 0.1, 0.01, 0.001)]
    y = [math.log(r) for r in (0.01, 0.025, 0.05, 0.12)]
    mx, my = sum(x) / 4, sum(y) / 4
    slope = sum((a - mx) * (b - my) for a, b in zip(x, y)) / sum((a - mx) ** 2 for a in x)
    assert fit.slope == pytest.approx(slope) and fit.intercept == pytest.approx(my - slope * mx)
    assert 0.9 < fit.r2 < 1.0


@pytest.mark.parametrize(
    ("lambdas", "rates", "match"),
    [
        ([0.5, 0.5], [0.01, 0.02], "two distinct"),
        ([0.5, 0.05], [0.01], "2 λ but 1 rates"),
        ([0.5, -0.05], [0.01, 0.02], "positive"),
        ([0.5, 0.05], [0.01, 0.0], "positive"),
        ([0.5, 0.05, 0.005], [0.008, 0.0081, 0.0082], "does not follow λ"),  # the shipped ladders' problem
    ],
)
def test_fit_refuses_sweeps_that_say_nothing(lambdas, rates, match) -> None:
    with pytest.raises(ladder.LadderError, match=match):
        ladder.fit_rate_curve(lambdas, rates)


def test_proposed_ladder_hits_the_targets_in_ascending_rate_order() -> None:
    fit = ladder.RateFit(slope=-0.5, intercept=math.log(0.01) + 0.5 * math.log(0.5), r2=1.0)  # R(0.5) = 0.01
    lambdas, notes = ladder.propose_lambdas(fit, [0.02, 0.05, 0.15], swept=[0.5, 0.05, 0.005])
    assert notes == []
    assert lambdas == sorted(lambdas, reverse=True)  # λ weights the rate: higher rate, lower λ
    assert [fit.rate(lam) for lam in lambdas] == pytest.approx([0.02, 0.05, 0.15], rel=2e-3)  # 3 digits
    assert lambdas[0] == pytest.approx(0.125, rel=1e-3)


def test_proposed_lambda_far_outside_the_sweep_is_clamped_and_noted() -> None:
    fit = ladder.RateFit(slope=-0.1, intercept=math.log(0.01), r2=0.5)  # a weak response: R(1) = 0.01
    lambdas, notes = ladder.propose_lambdas(fit, [0.005, 0.02], swept=[1.0, 0.1], max_extrapolation=16)
    assert lambdas == [16.0, 0.00625]  # the fit asks for λ 1024 and 0.00098: beyond 16× the sweep
    assert len(notes) == 2 and "clamped to 16" in notes[0]
    with pytest.raises(ladder.LadderError, match="repeats"):  # both clamped to the same λ
        ladder.propose_lambdas(fit, [0.05, 0.15], swept=[1.0, 0.1], max_extrapolation=16)


def test_targets_must_ascend() -> None:
    fit = ladder.RateFit(slope=-0.5, intercept=0.0, r2=1.0)
    with pytest.raises(ladder.LadderError, match="ascending"):
        ladder.propose_lambdas(fit, [0.05, 0.02], swept=[1.0, 0.1])


@pytest.mark.parametrize(
    ("rates", "problems"),
    [
        ([0.02, 0.05, 0.15], 0),
        ([0.01, 0.015, 0.0225], 0),  # exactly 1.5×
        ([0.0079, 0.0089, 0.0089], 2),  # stablecodec-small as shipped: 1.13×, then equal
        ([0.0052, 0.0078, 0.0056], 1),  # onedc-small as shipped: 1.5× then down
        ([0.02, 0.01, 0.05], 1),
        ([0.05], 0),
    ],
)
def test_separation_check(rates, problems) -> None:
    found = ladder.separation_problems(rates, min_ratio=1.5)
    assert len(found) == problems, found


def test_separation_messages_name_the_rungs() -> None:
    (problem,) = ladder.separation_problems([0.01, 0.012], min_ratio=1.5)
    assert "rung 1" in problem and "1.20×" in problem and "1.5×" in problem
    (problem,) = ladder.separation_problems([0.01, 0.01])
    assert "not above rung 0" in problem


def test_record_rows_old_and_new_format(tmp_path: Path) -> None:
    finish = _load("finish")
    record = tmp_path / "record.tsv"
    record.write_text("base\tbase\t151\tdiffcodec fit -c a.yaml\nsc\trungs\t60\t120\t2.50\tpython -m x fit\n")
    assert finish.read_record(str(record)) == [
        ("base", "base", "151", "—", "—", "diffcodec fit -c a.yaml"),
        ("sc", "rungs", "60", "120", "2.50", "python -m x fit"),
    ]
    assert finish.ascending([0.01, 0.009, 0.02]) == [0.01, 0.01001, 0.02]


def test_run_stats_reads_global_step_and_the_timer(tmp_path: Path) -> None:
    finish = _load("finish")
    checkpoint = tmp_path / "last.ckpt"
    state = {"state_dict": {}, "global_step": 300, "callbacks": {"Timer": {"time_elapsed": {"train": 60.0}}}}
    torch.save(state, checkpoint)
    # as train.sh calls it: "steps<TAB>steps/s" on stdout
    done = subprocess.run(
        [sys.executable, str(BUNDLED / "finish.py"), "run-stats", str(checkpoint), "90"], capture_output=True,
        text=True, check=True,
    )  # fmt: skip
    assert done.stdout == "300\t5.00\n"  # 300 steps in the Timer's 60 s (not the 90 s wall)
    del state["callbacks"]
    torch.save(state, checkpoint)
    assert finish.run_stats(str(checkpoint), 100) == (300, 3.0)  # no timer: over the wall time
    assert finish.run_stats(str(tmp_path / "none.ckpt"), 1) is None


def test_sweep_lines_and_check_lines_in_the_card(tmp_path: Path) -> None:
    finish = _load("finish")
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps({
        "points": [{"lambda": 0.5, "bpp": 0.01}, {"lambda": 0.05, "bpp": 0.03}], "targets": [0.02, 0.05],
        "fit": {"slope": -0.48, "intercept": -4.9, "r2": 1.0}, "ladder": [0.14, 0.017],
        "predicted_bpp": [0.02, 0.05], "notes": [],
    }))  # fmt: skip
    text = " ".join(finish._sweep_lines(str(sweep)))
    assert "λ 0.5: 0.01 bpp" in text and "[0.14, 0.017]" in text
    check = tmp_path / "check.json"
    check.write_text(json.dumps({"rates": [0.01, 0.011], "min_ratio": 1.5, "problems": ["rung 1 ..."]}))
    assert "DOES NOT SEPARATE" in " ".join(finish._check_lines(str(check)))
