"""The evaluation runner: every image through a real file, every metric the same way, resumable.

For each model, rung and image::

    original ──compress──► Bitstream / JPEG … ──to_bytes──► OUT/<model>/qNN/<image>.<ext>
                                                                   │ read back
    metrics(original, x̂) ◄── x̂ ◄──────────decompress(bytes)◄──────┘
      PSNR, MS-SSIM, LPIPS, DISTS (per image)   bpp = 8 · file size / (H · W)
      Inception features of the patches (cached, for FID / KID per rung)

One JSON line per finished image goes to ``OUT/per_image.jsonl`` (flushed and fsynced), which is the
resume log: a rerun of the same command skips what is there and redoes an image only if it was cut
short. At the end the runner writes ``per_image.csv``, ``per_rung.json`` / ``per_rung.csv`` (means
over images, FID/KID over all patches, timings, memory) for every model in OUT that covers the
current image set, so several invocations can fill one folder.

Measured per image: encode and decode seconds (wall clock, CUDA synchronised), peak memory of each
(CUDA allocator peak on a GPU; otherwise the process's peak resident set during the call, from
Linux's ``VmHWM`` reset before the call), metric seconds, and the runner's own overhead (reading the
image, writing and reading the file, saving the reconstruction PNG, bookkeeping).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import resource
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from diffcodec.eval.anchors import ANCHORS, PillowAnchor
from diffcodec.eval.curves import Curve, curves_from_rungs
from diffcodec.eval.metrics import DEFAULT_METRICS, METRICS, MS_SSIM_MIN_SIDE, ImageMetrics
from diffcodec.eval.patch_fid import DEFAULT_MIN_SAMPLES, PatchFeatures, fid_kid, patch_count
from diffcodec.eval.protocol import CodecLike, file_suffix, rung_label
from diffcodec.imageio import to_pil, to_tensor

__all__ = [
    "EvalConfig",
    "EvalResults",
    "ModelRun",
    "PeakMemory",
    "default_metrics",
    "evaluate",
    "list_images",
    "parse_model_spec",
    "resolve_model",
]

PROTOCOL_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
_SET_METRICS = ("fid", "kid")


# --------------------------------------------------------------------------- models
@dataclass
class ModelRun:
    """A codec to evaluate, the name its results are filed under, and the rungs to run."""

    label: str
    codec: CodecLike
    rungs: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.label or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", self.label):
            raise ValueError(
                f"model label {self.label!r}: use letters, digits and . _ + = - (it names a folder)"
            )
        count = int(self.codec.num_rungs)
        rungs = tuple(range(count)) if self.rungs is None else tuple(self.rungs)
        if not rungs:
            raise ValueError(f"{self.label}: no rungs to evaluate")
        bad = [r for r in rungs if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < count]
        if bad:
            raise ValueError(f"{self.label} has rungs 0..{count - 1}; got {bad}")
        self.rungs = tuple(dict.fromkeys(rungs))


def parse_model_spec(spec: str) -> tuple[str, tuple[int, ...] | None]:
    """``"NAME[:Q1,Q2,…]"`` → (NAME, qualities). NAME may itself contain ':' (``hf-hub:org/repo``)."""
    spec = spec.strip()
    name, sep, tail = spec.rpartition(":")
    if sep and re.fullmatch(r"\d+(,\d+)*", tail):
        if not name:
            raise ValueError(f"model spec {spec!r} has qualities but no model name")
        return name, tuple(int(q) for q in tail.split(","))
    if not spec:
        raise ValueError("empty model spec")
    return spec, None


def _safe_label(name: str) -> str:
    label = re.sub(r"[^A-Za-z0-9._+=-]+", "_", name).strip("_")
    return label or "model"


def resolve_model(spec: str, device: str = "cpu") -> ModelRun:
    """Turn a command-line model spec into a :class:`ModelRun`.

    ``jpeg``, ``webp`` and ``avif`` are the Pillow anchors, whose qualities are encoder quality
    settings (``jpeg:10,30,50``); any other name goes to :func:`diffcodec.load` (zoo name, local
    folder or ``hf-hub:`` id) and its qualities are rung indices (default: every rung).
    """
    name, qualities = parse_model_spec(spec)
    if name.lower() in ANCHORS:
        anchor = PillowAnchor(name.lower(), qualities)
        return ModelRun(anchor.model_id, anchor)
    import diffcodec

    codec = diffcodec.load(name)
    if hasattr(codec, "to"):
        codec = codec.to(device)
    return ModelRun(_safe_label(str(codec.model_id)), codec, qualities)


# --------------------------------------------------------------------------- measuring
class PeakMemory:
    """Peak memory (MiB) of the block: CUDA allocator peak on a GPU, else the process's peak RSS.

    On Linux the RSS high-water mark is reset before the block (``/proc/self/clear_refs``), so the value
    is the peak during the block (it includes everything already resident: weights, data). Elsewhere
    it is the process's lifetime peak (``getrusage``), and ``kind`` says so.
    """

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.peak_mib = math.nan
        self.kind = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
        elif _reset_rss_peak():
            self.kind = "process_peak_rss"
        else:
            self.kind = "process_lifetime_peak_rss"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self.peak_mib = _rss_peak_mib()


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _rss_peak_mib() -> float:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _timed(fn: Callable[[], object], device: torch.device) -> tuple[object, float, PeakMemory]:
    with PeakMemory(device) as memory:
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return result, seconds, memory


# --------------------------------------------------------------------------- data set
def list_images(data_dir: str | Path, limit: int | None = None) -> list[Path]:
    """Image files directly in ``data_dir``, sorted by name (first ``limit`` if given)."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"--data {folder} is not a folder")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        raise ValueError(f"{folder} has images that differ only in extension; their outputs would collide")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        images = images[:limit]
    return images


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- config / results
@dataclass
class EvalConfig:
    """How to measure. ``metrics`` mixes per-image metrics and the set-level ``fid`` / ``kid``.

    ``metrics=None`` (the default) means every metric that applies to the data: MS-SSIM only when every
    image is at least 161 pixels on each side, FID / KID only when the images give ``min_fid_samples``
    patches (:func:`default_metrics`). ``feature_network`` replaces the FID Inception for FID/KID (see
    :class:`PatchFeatures`); features are cached per network name, so runs with different networks do not
    mix. ``cache_reference_features`` keeps each original's LPIPS / DISTS features across the rungs and
    models evaluated on it (identical values, about half the metric time); off only to measure that.
    """

    metrics: tuple[str, ...] | None = None
    device: str = "cpu"
    patch_size: int = 256
    min_fid_samples: int = DEFAULT_MIN_SAMPLES
    save_reconstructions: bool = True
    progress: bool = True
    feature_network: torch.nn.Module | None = None
    cache_reference_features: bool = True
    log: Callable[[str], None] = field(default=lambda message: print(message, file=sys.stderr))

    def __post_init__(self) -> None:
        if self.metrics is None:
            return  # resolved from the data by the Evaluator (default_metrics)
        self.metrics = tuple(dict.fromkeys(self.metrics))
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(METRICS)}")

    @property
    def image_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics or () if METRICS[m].per_image)

    @property
    def set_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics or () if not METRICS[m].per_image)


def default_metrics(
    sizes: Iterable[tuple[int, int]], patch_size: int, min_fid_samples: int
) -> tuple[str, ...]:
    """The metrics of :data:`~diffcodec.eval.metrics.DEFAULT_METRICS` that apply to images of ``sizes``.

    ``sizes`` are (height, width). MS-SSIM needs 161 pixels per side (5 scales of an 11-pixel window);
    FID / KID need ``min_fid_samples`` patches of ``patch_size`` over the set (below that the estimate is
    meaningless, and they would be skipped after costing an Inception pass per patch).
    """
    sizes = list(sizes)
    patches = sum(patch_count(height, width, patch_size) for height, width in sizes)
    small = any(min(height, width) < MS_SSIM_MIN_SIDE for height, width in sizes)
    keep = {
        "ms_ssim": not small,
        "fid": patches >= max(min_fid_samples, 2),
        "kid": patches >= max(min_fid_samples, 2),
    }
    return tuple(m for m in DEFAULT_METRICS if keep.get(m, True))


@dataclass
class EvalResults:
    """What a run produced: per-image records, per-rung aggregates, and where they are on disk."""

    out_dir: Path
    per_image: list[dict]
    per_rung: list[dict]

    def curves(self) -> list[Curve]:
        return curves_from_rungs(self.per_rung)


# --------------------------------------------------------------------------- the runner
class _Store:
    """The output folder: resume log, cached features, tables."""

    def __init__(self, out_dir: Path) -> None:
        self.root = out_dir
        self.log_path = out_dir / "per_image.jsonl"
        self.records: dict[tuple[str, int, str], dict] = {}
        if self.log_path.is_file():
            for line in self.log_path.read_text().splitlines():
                try:
                    record = json.loads(line)
                    key = (record["model"], int(record["rung"]), record["image"])
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interruption: that image is redone
                self.records[key] = record

    def rung_dir(self, label: str, rung: int) -> Path:
        return self.root / label / f"q{rung:02d}"

    def feature_path(self, network: str, label: str | None, rung: int, stem: str) -> Path:
        if label is None:
            return self.root / "features" / network / f"{stem}.safetensors"
        return self.rung_dir(label, rung) / "features" / network / f"{stem}.safetensors"

    def append(self, record: dict) -> None:
        line = (json.dumps(_json_safe(record), sort_keys=True) + "\n").encode()
        with open(self.log_path, "a+b") as handle:
            if handle.tell() > 0:  # a line cut short by an interruption must stay on its own
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    line = b"\n" + line
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.records[(record["model"], int(record["rung"]), record["image"])] = record


class Evaluator:
    """Runs :class:`ModelRun` s over a folder of images into an output folder (see module docstring)."""

    def __init__(
        self,
        data_dir: str | Path | None,
        out_dir: str | Path,
        config: EvalConfig | None = None,
        limit: int | None = None,
    ) -> None:
        self.config = config or EvalConfig()
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(self.config.device)
        self.store = _Store(self.out_dir)
        self.images = self._dataset(data_dir, limit)
        self._image_metrics: ImageMetrics | None = None
        self._features: PatchFeatures | None = None

    # ---------------------------------------------------------------- dataset bookkeeping
    def _dataset(self, data_dir: str | Path | None, limit: int | None) -> list[dict]:
        manifest_path = self.out_dir / "run.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        if manifest and manifest.get("protocol_version") != PROTOCOL_VERSION:
            raise ValueError(f"{self.out_dir} was written by another version of the evaluation protocol")
        if manifest and manifest.get("patch_size") != self.config.patch_size:
            raise ValueError(
                f"{self.out_dir} was evaluated with {manifest.get('patch_size')}-pixel FID patches, "
                f"not {self.config.patch_size}; use another --out"
            )
        if data_dir is None:
            if not manifest:
                raise ValueError(f"{self.out_dir} holds no evaluation yet; give --data")
            self._resolve_metrics(manifest["images"])
            return manifest["images"]
        known = {item["name"]: item for item in manifest.get("known_images", [])}
        images = []
        for path in list_images(data_dir, limit):
            digest = _sha1(path)
            if path.name in known and known[path.name]["sha1"] != digest:
                raise ValueError(
                    f"{path.name} differs from the image of that name already evaluated in {self.out_dir}; "
                    "use another --out"
                )
            with Image.open(path) as opened:
                width, height = opened.size
            images.append(
                {
                    "name": path.name,
                    "path": str(path.resolve()),
                    "sha1": digest,
                    "height": height,
                    "width": width,
                }
            )
            known[path.name] = {"name": path.name, "sha1": digest}
        self._resolve_metrics(images)
        manifest = {
            "protocol_version": PROTOCOL_VERSION,
            "patch_size": self.config.patch_size,
            "data_dir": str(Path(data_dir).resolve()),
            "images": images,
            "known_images": sorted(known.values(), key=lambda item: item["name"]),
            "protocol": _protocol_description(self.config),
            "versions": _versions(),
        }
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        return images

    def _resolve_metrics(self, images: list[dict]) -> None:
        if self.config.metrics is None:
            sizes = [(image["height"], image["width"]) for image in images]
            self.config.metrics = default_metrics(sizes, self.config.patch_size, self.config.min_fid_samples)
            left_out = [m for m in DEFAULT_METRICS if m not in self.config.metrics]
            if left_out:
                self.config.log(
                    f"metrics: {', '.join(self.config.metrics)} ({', '.join(left_out)} do not apply to "
                    f"{len(images)} images of this size; name them with --metrics to force them)"
                )

    # ---------------------------------------------------------------- lazily built measurers
    @property
    def image_metrics(self) -> ImageMetrics:
        if self._image_metrics is None:
            self._image_metrics = ImageMetrics(self.config.image_metrics, device=self.config.device)
        return self._image_metrics

    @property
    def features(self) -> PatchFeatures:
        if self._features is None:
            self._features = PatchFeatures(
                self.config.patch_size, device=self.config.device, network=self.config.feature_network
            )
        return self._features

    @property
    def set_metrics_skip_note(self) -> str | None:
        """Why FID / KID are skipped for the current images (too few patches), or None."""
        if not self.config.set_metrics:
            return None
        patches = sum(patch_count(i["height"], i["width"], self.config.patch_size) for i in self.images)
        if patches >= max(self.config.min_fid_samples, 2):
            return None
        return (
            f"{'/'.join(m.upper() for m in self.config.set_metrics)} skipped: {len(self.images)} images give "
            f"{patches} patches of {self.config.patch_size} px, fewer than the {self.config.min_fid_samples} "
            "a meaningful estimate needs (as the papers do on Kodak)"
        )

    @property
    def _needs_features(self) -> bool:
        return bool(self.config.set_metrics) and self.set_metrics_skip_note is None

    # ---------------------------------------------------------------- main loop
    def _is_done(self, model: ModelRun, rung: int, image: dict) -> bool:
        label = model.label
        record = self.store.records.get((label, rung, image["name"]))
        if record is None or record.get("sha1") != image["sha1"]:
            return False
        # the same label and rung index with other settings (jpeg:5,10 then jpeg:20,30) is not done
        if record.get("model_id") != str(model.codec.model_id) or record.get("rung_label") != rung_label(
            model.codec, rung
        ):
            return False
        if any(m not in record for m in self.config.image_metrics):
            return False
        stem = Path(image["name"]).stem
        return (
            not self._needs_features
            or self.store.feature_path(self.features.name, label, rung, stem).is_file()
        )

    def run(self, models: Sequence[ModelRun]) -> EvalResults:
        labels = [m.label for m in models]
        if len(set(labels)) != len(labels):
            raise ValueError(f"two models would be filed under the same name: {labels}")
        if self.set_metrics_skip_note:
            self.config.log(self.set_metrics_skip_note)
        # image by image: each original's reference features (LPIPS, DISTS) serve all its rungs and models
        jobs = [(m, rung, image) for image in self.images for m in models for rung in m.rungs]  # type: ignore[union-attr]
        pending = [job for job in jobs if not self._is_done(*job)]
        if jobs and len(pending) < len(jobs):
            self.config.log(
                f"resuming: {len(jobs) - len(pending)} of {len(jobs)} image evaluations "
                f"already in {self.out_dir}"
            )
        if pending:  # build the metric networks first, so per-image timings are steady-state
            if self.config.image_metrics:
                self.image_metrics.build()
            if self._needs_features:
                _ = self.features.network
        with tqdm(
            total=len(pending), desc="eval", unit="img", disable=not self.config.progress, dynamic_ncols=True
        ) as bar:
            for model, rung, image in pending:
                bar.set_postfix_str(f"{model.label} q{rung} {image['name']}")
                self.store.append(self._evaluate_one(model, rung, image))
                bar.update(1)
        return self.summarize()

    def _evaluate_one(self, model: ModelRun, rung: int, image: dict) -> dict:
        start = time.perf_counter()
        codec, stem = model.codec, Path(image["name"]).stem
        original = to_tensor(image["path"])
        height, width = original.shape[-2:]

        stream, encode_s, encode_mem = _timed(lambda: codec.compress(original, quality=rung), self.device)
        rung_dir = self.store.rung_dir(model.label, rung)
        rung_dir.mkdir(parents=True, exist_ok=True)
        file_path = rung_dir / f"{stem}{file_suffix(codec)}"
        file_path.write_bytes(stream.to_bytes())  # type: ignore[union-attr]
        data = file_path.read_bytes()

        decoded, decode_s, decode_mem = _timed(lambda: codec.decompress(data, output="tensor"), self.device)
        reconstruction = decoded.detach().float().cpu()  # type: ignore[union-attr]
        if reconstruction.dim() == 3:
            reconstruction = reconstruction[None]
        if tuple(reconstruction.shape) != (1, 3, height, width):
            raise ValueError(
                f"{model.label} q{rung} returned a {tuple(reconstruction.shape)} reconstruction of "
                f"{image['name']} ({height}x{width}); codecs must return the original size"
            )
        if self.config.save_reconstructions:
            recon_dir = rung_dir / "recon"
            recon_dir.mkdir(exist_ok=True)
            to_pil(reconstruction).save(recon_dir / f"{stem}.png", compress_level=1)

        metric_start = time.perf_counter()
        key = image["sha1"] if self.config.cache_reference_features else None
        values = self.image_metrics(original, reconstruction, key) if self.config.image_metrics else {}
        metric_timings = dict(self.image_metrics.timings) if self.config.image_metrics else {}
        if self._needs_features:
            feature_start = time.perf_counter()
            self._cache_features(None, 0, stem, original, reuse=True)  # shared by all models and rungs
            self._cache_features(model.label, rung, stem, reconstruction, reuse=False)
            metric_timings["patch_features"] = time.perf_counter() - feature_start
        metrics_s = time.perf_counter() - metric_start

        num_bytes = len(data)
        record = {
            "model": model.label,
            "model_id": str(codec.model_id),
            "rung": rung,
            "rung_label": rung_label(codec, rung),
            "image": image["name"],
            "sha1": image["sha1"],
            "height": int(height),
            "width": int(width),
            "bytes": num_bytes,
            "bpp": 8 * num_bytes / (height * width),
            "file": str(file_path.relative_to(self.out_dir)),
            "encode_s": encode_s,
            "decode_s": decode_s,
            "encode_peak_mib": encode_mem.peak_mib,
            "decode_peak_mib": decode_mem.peak_mib,
            "memory_kind": encode_mem.kind,
            "metrics_s": metrics_s,
            "metric_timings_s": metric_timings,
            **values,
        }
        record["overhead_s"] = time.perf_counter() - start - encode_s - decode_s - metrics_s
        return record

    def _cache_features(
        self, label: str | None, rung: int, stem: str, image: torch.Tensor, reuse: bool
    ) -> None:
        path = self.store.feature_path(self.features.name, label, rung, stem)
        if reuse and path.is_file():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"features": self.features(image).contiguous()}, str(tmp))
        tmp.replace(path)

    # ---------------------------------------------------------------- aggregation
    def summarize(self) -> EvalResults:
        """Aggregate every (model, rung) in OUT that covers the current images; write the tables."""
        names = [image["name"] for image in self.images]
        sha = {image["name"]: image["sha1"] for image in self.images}
        groups: dict[tuple[str, int], list[dict]] = {}
        for (label, rung, name), record in self.store.records.items():
            if name in sha and record.get("sha1") == sha[name]:
                groups.setdefault((label, rung), []).append(record)
        set_cache_path = self.out_dir / "set_metrics.json"
        set_cache = json.loads(set_cache_path.read_text()) if set_cache_path.is_file() else {}
        per_image: list[dict] = []
        per_rung: list[dict] = []
        for (label, rung), records in sorted(groups.items()):
            if len(records) != len(names):
                continue
            records.sort(key=lambda r: r["image"])
            per_image.extend(records)
            row = _aggregate(records)
            if self.config.set_metrics:
                row.update(self._set_metrics(label, rung, records, set_cache))
            per_rung.append(row)
        set_cache_path.write_text(json.dumps(_json_safe(set_cache), indent=1, sort_keys=True) + "\n")
        per_rung.sort(key=lambda r: (r["model"], r["bpp"]))
        _write_csv(self.out_dir / "per_image.csv", per_image)
        _write_csv(self.out_dir / "per_rung.csv", per_rung)
        document = {"protocol": _protocol_description(self.config), "images": names, "rungs": per_rung}
        (self.out_dir / "per_rung.json").write_text(json.dumps(_json_safe(document), indent=2) + "\n")
        return EvalResults(self.out_dir, per_image, per_rung)

    def _set_metrics(self, label: str, rung: int, records: list[dict], cache: dict) -> dict:
        note = self.set_metrics_skip_note
        if note is not None:
            return {**{m: math.nan for m in self.config.set_metrics}, "set_metrics_note": note}
        stems = [Path(record["image"]).stem for record in records]
        network = self.features.name
        paths = [
            (self.store.feature_path(network, None, 0, s), self.store.feature_path(network, label, rung, s))
            for s in stems
        ]
        if not all(real.is_file() and fake.is_file() for real, fake in paths):
            return {m: math.nan for m in self.config.set_metrics}
        # the key identifies exactly these reconstructions: images, settings and file sizes
        identity = [(r["image"], r["sha1"], r["rung_label"], r["bytes"], r["file"]) for r in records]
        digest = hashlib.sha1(json.dumps(identity).encode()).hexdigest()
        key = f"{label}|{rung}|{self.config.patch_size}|{network}|{digest}"
        wanted = set(self.config.set_metrics)
        if key in cache and wanted <= set(cache[key].get("computed", [])):
            return {k: v for k, v in cache[key].items() if k != "computed"}
        real = torch.cat([load_file(str(p[0]))["features"] for p in paths])
        fake = torch.cat([load_file(str(p[1]))["features"] for p in paths])
        result: dict[str, object] = {"patches": int(real.shape[0])}
        result.update(fid_kid(real, fake, metrics=tuple(sorted(wanted))))
        cache[key] = {**result, "computed": sorted(wanted)}
        return result


def _aggregate(records: list[dict]) -> dict:
    """Mean over images of every numeric per-image field (max for peak memory)."""
    first = records[0]
    row: dict[str, object] = {
        "model": first["model"],
        "model_id": first["model_id"],
        "rung": first["rung"],
        "rung_label": first["rung_label"],
        "images": len(records),
        "total_bytes": sum(r["bytes"] for r in records),
    }
    numeric = [
        "bpp",
        *[m for m in METRICS if METRICS[m].per_image],
        "encode_s",
        "decode_s",
        "metrics_s",
        "overhead_s",
    ]
    for name in numeric:
        values = [float(r[name]) for r in records if name in r]
        if len(values) == len(records):
            row[name] = sum(values) / len(values)
    for name in ("encode_peak_mib", "decode_peak_mib"):
        row[name] = max(float(r[name]) for r in records)
    row["memory_kind"] = first.get("memory_kind", "")
    return row


def _json_safe(value: object) -> object:
    """NaN / inf → null, so the JSON files are standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns and not isinstance(row[k], dict))
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _protocol_description(config: EvalConfig) -> dict[str, str]:
    return {
        "resolution": "full resolution, no resizing or cropping; images compared after rounding to 8 bits",
        "rate": "bpp = 8 * file size in bytes / (H * W) of the original image; mean over images",
        "psnr": "torchmetrics PSNR on 0-255 RGB per image, mean over images",
        "ms_ssim": "torchmetrics MS-SSIM on RGB, data range 255, 5 scales, Gaussian 11x11 sigma 1.5",
        "lpips": "LPIPS v0.1, AlexNet trunk (lpips package, torchvision ImageNet weights in diffcodec)",
        "lpips_vgg": "LPIPS v0.1, VGG16 trunk",
        "dists": "DISTS (Ding et al. 2020), reference implementation and weights",
        "fid_kid": (
            f"FID/KID on {config.patch_size}x{config.patch_size} patches plus the half-patch-shifted pass "
            "(HiFiC / MS-ILLM), TF Inception pool3 features, torchmetrics FrechetInceptionDistance and "
            f"KernelInceptionDistance; skipped below {config.min_fid_samples} patches"
        ),
        "metrics": ",".join(config.metrics or ()),
    }


def _versions() -> dict[str, str]:
    import importlib.metadata

    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "torchvision", "torchmetrics", "lpips", "pillow", "diffcodec"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def evaluate(
    models: Sequence[ModelRun] | Iterable[tuple[str, CodecLike]],
    data_dir: str | Path | None,
    out_dir: str | Path,
    *,
    config: EvalConfig | None = None,
    limit: int | None = None,
) -> EvalResults:
    """Evaluate ``models`` on the images in ``data_dir``, writing everything to ``out_dir``.

    ``models`` are :class:`ModelRun` s or ``(label, codec)`` pairs (all rungs). Rerunning with the same
    ``out_dir`` resumes. Returns the per-image records and per-rung aggregates.
    """
    runs = [m if isinstance(m, ModelRun) else ModelRun(m[0], m[1]) for m in models]
    return Evaluator(data_dir, out_dir, config, limit=limit).run(runs)
