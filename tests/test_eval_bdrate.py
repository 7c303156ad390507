"""BD-rate and BD-metric against hand-computed cases; plots; the published tables."""

from __future__ import annotations

import csv
import math
import re
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from diffcodec.eval.bdrate import bd_metric, bd_rate
from diffcodec.eval.curves import Curve, bd_rate_table
from diffcodec.eval.paper_curves import list_published, load_published
from diffcodec.eval.plots import plot_rd, save_figure

# Anchor: ln R = D at D = 1..4. Test: ln R = D + 0.1 (D − 1): it needs e^{0.1 (D−1)} times the bits.
# BD-rate = exp( ∫_1^4 0.1 (D − 1) dD / 3 ) − 1 = exp(0.1 · 4.5 / 3) − 1 = e^{0.15} − 1 = 16.1834 %.
D = np.array([1.0, 2.0, 3.0, 4.0])
ANCHOR_RATE = np.exp(D)
TEST_RATE = np.exp(D + 0.1 * (D - 1))
EXPECTED = (math.exp(0.15) - 1) * 100


@pytest.mark.parametrize("method", ["pchip", "cubic"])
def test_bd_rate_hand_computed(method: str) -> None:
    assert bd_rate(ANCHOR_RATE, D, TEST_RATE, D, method=method) == pytest.approx(EXPECTED, abs=1e-9)
    # a codec that needs exactly half the bits everywhere: −50 %, whatever the curve's shape
    psnr = np.array([28.0, 30.5, 32.0, 35.0])
    rate = np.array([0.05, 0.1, 0.2, 0.4])
    assert bd_rate(rate, psnr, rate / 2, psnr, method=method) == pytest.approx(-50.0, abs=1e-9)
    # swapping anchor and test inverts the ratio
    assert bd_rate(TEST_RATE, D, ANCHOR_RATE, D, method=method) == pytest.approx((math.exp(-0.15) - 1) * 100)


def test_bd_rate_lower_is_better_metric() -> None:
    # the same curves with the metric mirrored (LPIPS-like: falls as the rate rises): same BD-rate
    lpips = 1.0 - D / 10
    assert bd_rate(ANCHOR_RATE, lpips, TEST_RATE, lpips, higher_is_better=False) == pytest.approx(EXPECTED)
    with pytest.raises(ValueError, match="must decrease"):
        bd_rate(ANCHOR_RATE, D, TEST_RATE, D, higher_is_better=False)
    # only the shared quality range counts: a test curve covering D in [2, 4] integrates over [2, 4]
    part = slice(1, 4)
    expected = (math.exp(0.2) - 1) * 100  # ∫_2^4 0.1 (D − 1) dD / 2 = 0.1 · (9/2 − 1/2) / 2 = 0.2
    assert bd_rate(ANCHOR_RATE, D, TEST_RATE[part], D[part]) == pytest.approx(expected)


def test_bd_metric_hand_computed() -> None:
    # test curve is the anchor shifted up by 0.5 dB at every rate: BD-PSNR = +0.5
    rate = np.array([0.05, 0.1, 0.2, 0.4])
    psnr = np.array([28.0, 30.5, 32.0, 35.0])
    assert bd_metric(rate, psnr, rate, psnr + 0.5) == pytest.approx(0.5)
    assert bd_metric(rate, 1 / psnr, rate, 1 / psnr - 0.01, higher_is_better=False) == pytest.approx(-0.01)


def test_bd_rate_errors() -> None:
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate(ANCHOR_RATE, D, TEST_RATE, D + 10)
    with pytest.raises(ValueError, match="not monotonic"):
        bd_rate(ANCHOR_RATE, [1, 3, 2, 4], TEST_RATE, D)
    with pytest.raises(ValueError, match="at least 4 points"):
        bd_rate(ANCHOR_RATE[:3], D[:3], TEST_RATE[:3], D[:3], method="cubic")
    with pytest.raises(ValueError, match="at least 2 points"):
        bd_rate([1.0], [1.0], TEST_RATE, D)
    with pytest.raises(ValueError, match="positive"):
        bd_rate([0.0, 1.0], [1.0, 2.0], TEST_RATE, D)
    with pytest.raises(ValueError, match="NaN"):
        bd_rate(ANCHOR_RATE, [1, 2, np.nan, 4], TEST_RATE, D)


def test_bd_rate_table_and_plot(tmp_path: Path) -> None:
    anchor = Curve("jpeg", ANCHOR_RATE, {"psnr": D, "lpips": 1 - D / 10})
    test = Curve("ours", TEST_RATE, {"psnr": D, "lpips": np.array([0.9, 0.85, 0.87, 0.6])})  # non-monotonic
    rows = bd_rate_table([anchor, test], "jpeg", ["psnr", "lpips"])
    assert rows[0]["model"] == "ours" and rows[0]["psnr"] == pytest.approx(EXPECTED)
    assert math.isnan(rows[0]["lpips"]) and "not monotonic" in rows[0]["notes"]
    with pytest.raises(ValueError, match="anchor"):
        bd_rate_table([anchor, test], "webp", ["psnr"])
    figure = plot_rd([anchor, test, *load_published("onedc/C", ["OneDC"])], ["psnr", "lpips", "dists"])
    assert len([ax for ax in figure.axes if ax.axison]) == 3
    written = save_figure(figure, tmp_path / "rd")
    assert [p.suffix for p in written] == [".png", ".svg"] and all(p.stat().st_size > 1000 for p in written)


def test_published_tables_match_the_paper(shared_dir: Path) -> None:
    """Every number in onedc_appendix.csv appears, in order, in the appendix's Table C–H text."""
    text = (shared_dir / "papers" / "onedc-appendix.md").read_text()
    with (files("diffcodec.eval") / "published" / "onedc_appendix.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 166
    for table in "CDEFGH":
        start = text.index(f"Table {table}: Compression")
        block = text[start : text.index("Table", start + 10) if table != "H" else len(text)]
        printed = [line.split() for line in block.splitlines()]
        values = [" ".join(v for v in line if re.fullmatch(r"\d+(\.\d+)?", v)) for line in printed]
        ours = [
            " ".join(r[k] for k in ("bpp", "psnr", "ms_ssim", "lpips", "dists", "fid") if r[k])
            for r in rows
            if r["table"] == table
        ]
        found = [v for v in values if v in ours]
        assert found == ours, table
    curves = {c.label: c for c in load_published("onedc/C")}
    onedc = curves["OneDC [onedc/C]"]
    assert onedc.source == "published" and "Kodak" in onedc.protocol
    assert (
        onedc.bpp[0] == 0.0034 and onedc.metrics["psnr"][0] == 17.141 and onedc.metrics["dists"][-1] == 0.057
    )
    assert "fid" not in onedc.metrics  # Table C reports no FID
    fid_d = load_published("onedc/D", ["MS-ILLM"])[0].metrics["fid"]
    assert fid_d[0] == 44.954 and len(fid_d) == 7
    ids = {t.id for t in list_published()}
    assert {f"onedc/{t}" for t in "CDEFGH"} | {"stablecodec/kodak-rates"} == ids
    stable = load_published("stablecodec/kodak-rates")
    assert sorted(c.bpp[0] for c in stable) == [0.00579, 0.03413]
    with pytest.raises(ValueError, match="unknown published table"):
        load_published("onedc/Z")
