"""Evaluate and compare codecs: one metric protocol, one runner, anchors, BD-rate, R-D plots, papers' curves.

    from diffcodec.eval import compare, plot_crops, plot_rd, load_published
    result = compare(["oscar-small", "jpeg", "webp"], "kodak/")     # a table of per-rung means
    plot_rd([*result.curves, *load_published("onedc/C")])
    plot_crops(result, "kodim23.png")

Modules: :mod:`~diffcodec.eval.metrics` (PSNR, MS-SSIM, LPIPS, DISTS), :mod:`~diffcodec.eval.patch_fid`
(FID/KID on 256-px patches), :mod:`~diffcodec.eval.runner`, :mod:`~diffcodec.eval.anchors`,
:mod:`~diffcodec.eval.bdrate`, :mod:`~diffcodec.eval.plots`, :mod:`~diffcodec.eval.paper_curves`.
Attributes are imported on first use, so ``import diffcodec.eval`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CodecLike": "protocol",
    "Comparison": "comparison",
    "Curve": "curves",
    "DISTS": "metrics",
    "EvalConfig": "runner",
    "EvalResults": "runner",
    "ImageMetrics": "metrics",
    "LPIPS": "metrics",
    "METRICS": "metrics",
    "ModelRun": "runner",
    "PatchFeatures": "patch_fid",
    "PillowAnchor": "anchors",
    "bd_metric": "bdrate",
    "bd_rate": "bdrate",
    "bd_rate_table": "curves",
    "compare": "comparison",
    "evaluate": "runner",
    "fid_kid": "patch_fid",
    "list_published": "paper_curves",
    "load_curves": "curves",
    "load_published": "paper_curves",
    "ms_ssim": "metrics",
    "patch_count": "patch_fid",
    "plot_crops": "plots",
    "plot_rd": "plots",
    "psnr": "metrics",
    "save_figure": "plots",
    "Table": "comparison",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"diffcodec.eval.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'diffcodec.eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
