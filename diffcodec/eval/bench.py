"""``diffcodec bench``: time compression and decompression per model, image size and stage.

::

    diffcodec bench -m oscar-small stablecodec-small --sizes 256x256 512x768 --repeat 5 --json bench.json
    diffcodec bench --random-weights -m stablecodec cadc --dtype bf16 --sizes 512x768 2048x2048

Per model and size: ``--warmup`` untimed round trips, then ``--repeat`` timed ones; the medians of the
encode and decode wall times, their process CPU times, and of each stage's exclusive time
(:mod:`diffcodec.timing`: ``vae_enc``, ``latent_codec``, ``entropy``, ``captioner``, ``text_encoder``,
``unet``, ``vae_dec``), the size of the real file (bytes, bpp = 8·bytes / (H·W)), and the peak memory:
``torch.cuda.max_memory_allocated`` on CUDA (reset per size), the process's peak RSS
(``resource.getrusage``) on the CPU. By default every (model, size) runs in a fresh subprocess
(``--isolate size``) so that the peak RSS is that size's own; ``--isolate model`` runs a model's sizes in
one subprocess (ascending, so the RSS is the peak so far) and ``none`` in this process.

``--random-weights`` builds the models with random weights instead of loading any: a method name
(``oscar``, ``stablecodec``, ``cadc``, ``onedc``) gives its **full-size** architecture (the papers' base
models from :func:`~diffcodec.nn.backbone.reference_configs`, full latent codecs, for CADC a full-size
SD-2.1 text encoder and BLIP-base captioner with a byte-level vocabulary), anything else the architecture
in that zoo entry's or folder's ``config.json``. Nothing is downloaded. Random weights give the real
compute, not real rates: the bytes and bpp of such runs say nothing about the codec.

The image is ``--image`` (default: the bundled astronaut photo) resized to each size (bicubic).
``--parameter-path device`` times the entropy parameters on the model's device instead of the portable CPU
path (:mod:`~diffcodec.entropy.determinism`; files written that way are not portable).
The JSON (``--json``) holds one record per (model, dtype, size) plus the scaling exponent per model and
dtype: the slope of log(time) against log(pixels) over its sizes (1 = linear cost). ``--dtype fp32 bf16``
runs both precisions on one loaded model (cast in place, so fp32 first).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import torch

from diffcodec.entropy.determinism import device_parameter_path
from diffcodec.timing import STAGES, StageTimer, stage

__all__ = [
    "METHODS", "add_arguments", "bench_model", "parse_size", "random_codec", "resized_image", "run",
    "scaling_exponent",
]  # fmt: skip

#: The methods ``--random-weights`` builds at full size.
METHODS = ("oscar", "stablecodec", "cadc", "onedc")
DEFAULT_SIZES = ("512x768", "1024x1024", "2048x2048", "4096x3072")

#: SD-2.1's text encoder (OpenCLIP ViT-H/14 text tower as a ``CLIPTextModel``), CADC's caption encoder.
SD21_TEXT_ENCODER: dict[str, Any] = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16,
    "max_position_embeddings": 77, "projection_dim": 512, "hidden_act": "gelu",
}  # fmt: skip
#: ``Salesforce/blip-image-captioning-base``: transformers' ``BlipConfig`` defaults, stated explicitly.
BLIP_BASE: dict[str, Any] = {
    "vision_config": {"hidden_size": 768, "num_hidden_layers": 12, "image_size": 384, "patch_size": 16},
    "text_config": {"hidden_size": 768, "num_hidden_layers": 12, "max_position_embeddings": 512},
}  # fmt: skip


# ---------------------------------------------------------------------------------------------- models
def random_codec(name: str) -> Any:
    """A codec with random weights: a method name → its full-size architecture; a zoo name or a model folder
    → the architecture in its ``config.json`` (the weights are not read)."""
    from diffcodec.nn.backbone import reference_configs

    if name in METHODS:
        if name == "oscar":
            from diffcodec.codecs.oscar import OSCAR

            return OSCAR(backbone=reference_configs("sd-2.1"))
        if name == "stablecodec":
            from diffcodec.codecs.stablecodec import StableCodec

            return StableCodec(backbone=reference_configs("sd-turbo"))
        if name == "cadc":
            from diffcodec.codecs.cadc import CADC

            return CADC(
                backbone=reference_configs("sd-turbo"), text_encoder=SD21_TEXT_ENCODER, captioner=BLIP_BASE
            )
        from diffcodec.codecs.onedc import OneDC

        return OneDC(backbone=reference_configs("sd-1.5"))  # the DMD2 U-Net (SD-1.5) and the kl-f8 VAE
    return _codec_from_config(_config_folder(name))


def _config_folder(name: str) -> Path:
    from diffcodec.zoo.loader import bundled_folder
    from diffcodec.zoo.registry import get_entry, list_models

    if name in {entry.name for entry in list_models()}:
        folder = bundled_folder(get_entry(name))
        if folder is None:
            raise ValueError(
                f"--random-weights: {name!r} is not bundled, so its architecture is not on this machine; "
                f"use a method name ({', '.join(METHODS)}) for the full-size architecture or a model folder"
            )
        return folder
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"--random-weights: {name!r} is neither a method ({', '.join(METHODS)}), a bundled model nor a "
            "folder with a config.json"
        )
    return folder


def _codec_from_config(folder: Path) -> Any:
    from diffcodec.zoo import hub

    config = hub.read_config(folder / "config.json", str(folder))
    cls = hub.resolve_codec_class(config["_diffcodec_class"])
    return cls(**hub.decode_init_args(cls, config.get("init_args", {})))


def _load(name: str, args: argparse.Namespace, device: str) -> Any:
    import diffcodec

    if args.random_weights:
        codec = random_codec(name).to(device).eval()
        codec.set_rung(args.quality)
        return codec
    return diffcodec.load(name, quality=args.quality, device=device)


# ---------------------------------------------------------------------------------------------- measuring
def parse_size(text: str) -> tuple[int, int]:
    """``"512x768"`` (height × width) → (512, 768); a single number is a square."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 16 or max(values) > 32768:
        raise argparse.ArgumentTypeError(f"a size is HxW with sides 16..32768 (e.g. 512x768), got {text!r}")
    return values[0], values[1]


def resized_image(path: Path | None, height: int, width: int) -> torch.Tensor:
    """``path`` (default: the bundled astronaut photo) resized to height × width, as a (1, 3, H, W) tensor."""
    from PIL import Image

    from diffcodec.imageio import to_tensor

    source = path if path is not None else importlib_resources.files("diffcodec") / "assets" / "astronaut.png"
    with Image.open(str(source)) as image:
        return to_tensor(image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC))


def _peak_memory(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return int(rss if sys.platform == "darwin" else rss * 1024), "cpu_max_rss"


def _timed(device: torch.device, call: Any) -> tuple[Any, float, float, dict[str, float]]:
    """(result, wall s, process CPU s, exclusive stage seconds) of one call; ``latent_codec`` is the rest."""
    timer = StageTimer(device)
    with timer:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall, cpu = time.perf_counter(), time.process_time()
        with stage("latent_codec"):
            result = call()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return result, wall, cpu, dict(timer.seconds)


def _median_stages(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    names = [name for name in STAGES if any(name in run for run in runs)]
    names += sorted({name for run in runs for name in run} - set(names))
    return {name: statistics.median(run.get(name, 0.0) for run in runs) for name in names}


def bench_model(
    codec: Any, sizes: Sequence[tuple[int, int]], *, repeat: int = 3, warmup: int = 1,
    image: Path | None = None, parameter_path: str = "cpu",
) -> list[dict[str, Any]]:  # fmt: skip
    """Benchmark one loaded codec at ``sizes`` (ascending recommended); one record per size.

    ``parameter_path="device"`` runs the entropy parameters on the codec's device
    (:func:`~diffcodec.entropy.determinism.device_parameter_path`) instead of the portable CPU path.
    """
    if parameter_path not in ("cpu", "device"):
        raise ValueError(f"parameter_path must be 'cpu' or 'device', got {parameter_path!r}")
    with device_parameter_path() if parameter_path == "device" else contextlib.nullcontext():
        records = _bench_sizes(codec, sizes, repeat=repeat, warmup=warmup, image=image)
    for record in records:
        record["parameter_path"] = parameter_path
    return records


def _bench_sizes(
    codec: Any, sizes: Sequence[tuple[int, int]], *, repeat: int, warmup: int, image: Path | None
) -> list[dict[str, Any]]:
    from diffcodec.codecs.precision import attention_processors, synthesis_modules

    device = codec.device
    precision = {
        name: str(next(m.parameters()).dtype).removeprefix("torch.") for name, m in synthesis_modules(codec)
    }
    records = []
    for height, width in sizes:
        x = resized_image(image, height, width)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(warmup):
            codec.decompress(codec.compress(x).to_bytes(), output="tensor")
        encodes, decodes = [], []
        for _ in range(repeat):
            stream, *encode = _timed(device, lambda x=x: codec.compress(x))
            data = stream.to_bytes()
            _, *decode = _timed(device, lambda data=data: codec.decompress(data, output="tensor"))
            encodes.append(encode)
            decodes.append(decode)
        peak, peak_kind = _peak_memory(device)
        records.append({
            "model": codec.model_id, "method": codec.method, "height": height, "width": width,
            "size": f"{height}x{width}", "quality": codec.quality, "bytes": len(data),
            "bpp": 8 * len(data) / (height * width),
            "encode_s": statistics.median(run[0] for run in encodes),
            "decode_s": statistics.median(run[0] for run in decodes),
            "encode_cpu_s": statistics.median(run[1] for run in encodes),
            "decode_cpu_s": statistics.median(run[1] for run in decodes),
            "encode_stages_s": _median_stages([run[2] for run in encodes]),
            "decode_stages_s": _median_stages([run[2] for run in decodes]),
            "peak_memory_bytes": peak, "peak_memory_kind": peak_kind,
            "device": str(device), "device_name": _device_name(device), "synthesis_dtype": precision,
            "attention": attention_processors(codec), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "warmup": warmup, "repeat": repeat,
            "parameters": sum(p.numel() for p in codec.parameters()),
        })  # fmt: skip
    return records


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def scaling_exponent(records: Sequence[dict[str, Any]], key: str = "decode_s") -> float | None:
    """Least-squares slope of log(``key``) against log(pixels) over one model's records (None: < 2 sizes)."""
    points = [(math.log(r["height"] * r["width"]), math.log(r[key])) for r in records if r[key] > 0]
    if len({p[0] for p in points}) < 2:
        return None
    mean_x = statistics.fmean(p[0] for p in points)
    mean_y = statistics.fmean(p[1] for p in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m", "--model", nargs="+", required=True, metavar="MODEL",
        help="zoo names, model folders or hf-hub:org/name; with --random-weights also method names "
        f"({', '.join(METHODS)}: full-size architectures)",
    )  # fmt: skip
    parser.add_argument(
        "--random-weights", action="store_true",
        help="build the models with random weights (nothing downloaded, no weights read)",
    )  # fmt: skip
    parser.add_argument(
        "--sizes", nargs="+", type=parse_size, default=[parse_size(s) for s in DEFAULT_SIZES],
        metavar="HxW", help=f"image sizes, height x width (default: {' '.join(DEFAULT_SIZES)})",
    )  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per size; the median is reported")
    parser.add_argument("--warmup", type=int, default=1, help="untimed round trips per size first")
    parser.add_argument("-q", "--quality", type=int, default=None, help="rung index (default: the model's)")
    parser.add_argument(
        "--dtype", nargs="+", default=["fp32"], metavar="DTYPE",
        help="synthesis precision: fp32 (default), bf16, fp16; several are run in order on one loaded model, "
        "cast in place (list fp32 first)",
    )  # fmt: skip
    parser.add_argument("--compile", action="store_true", help="torch.compile the U-Net and VAE decoder")
    parser.add_argument(
        "--device", default="auto", help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--parameter-path", choices=("cpu", "device"), default="cpu",
        help="entropy parameters on the CPU (portable files, default) or on the model's device (fast)",
    )  # fmt: skip
    parser.add_argument("--image", type=Path, default=None, help="source image (default: bundled astronaut)")
    parser.add_argument(
        "--isolate", choices=("size", "model", "none"), default="size",
        help="subprocess per (model, size) (default), per model, or none (this process)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the records to this JSON file")


def _check(args: argparse.Namespace) -> None:
    from diffcodec.codecs.precision import parse_dtype
    from diffcodec.errors import UsageError

    if args.repeat < 1 or args.warmup < 0:
        raise UsageError("--repeat must be >= 1 and --warmup >= 0")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be >= 1")
    try:
        for dtype in args.dtype:
            parse_dtype(dtype)
    except ValueError as error:
        raise UsageError(str(error)) from error
    if args.image is not None and not args.image.is_file():
        raise FileNotFoundError(f"no such image: {args.image}")


def _child_argv(
    args: argparse.Namespace, model: str, sizes: Sequence[tuple[int, int]], out: Path
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "diffcodec.cli",
        "bench",
        "-m",
        model,
        "--isolate",
        "none",
        "--json",
        str(out),
    ]
    argv += [
        "--sizes",
        *(f"{h}x{w}" for h, w in sizes),
        "--repeat",
        str(args.repeat),
        "--warmup",
        str(args.warmup),
    ]
    argv += ["--device", args.device, "--parameter-path", args.parameter_path]
    for flag, value in (("-q", args.quality), ("--threads", args.threads), ("--image", args.image)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--dtype", *args.dtype]
    argv += ["--random-weights"] * args.random_weights + ["--compile"] * args.compile
    return argv


def _in_subprocess(args: argparse.Namespace, model: str, sizes: Sequence[tuple[int, int]]) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "records.json"
        done = subprocess.run(_child_argv(args, model, sizes, out), env=os.environ.copy(), check=False)
        if done.returncode != 0 or not out.is_file():
            raise RuntimeError(f"benchmarking {model} at {sizes} failed (exit {done.returncode}; see above)")
        return json.loads(out.read_text())["records"]


def _in_process(args: argparse.Namespace, model: str, sizes: Sequence[tuple[int, int]]) -> list[dict]:
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    from diffcodec.codecs.precision import set_inference_precision

    start = time.perf_counter()
    codec = _load(model, args, device)
    load_s = time.perf_counter() - start
    records = []
    for dtype in args.dtype:
        set_inference_precision(codec, dtype, compile=args.compile)
        records += bench_model(
            codec, sizes, repeat=args.repeat, warmup=args.warmup, image=args.image,
            parameter_path=args.parameter_path,
        )  # fmt: skip
    for record in records:
        record.update(name=model, random_weights=bool(args.random_weights), load_s=load_s)
    return records


def _format_table(records: Sequence[dict[str, Any]]) -> str:
    header = ("MODEL", "SIZE", "DTYPE", "BYTES", "BPP", "ENC s", "DEC s", "ENC CPU", "DEC CPU", "PEAK MB",
              "DECODE STAGES (s)")  # fmt: skip
    rows = []
    for r in records:
        dtype = r["synthesis_dtype"].get("unet", "float32")
        stages = " ".join(f"{k}={v:.3g}" for k, v in r["decode_stages_s"].items() if v >= 0.0005)
        rows.append((
            r["name"], r["size"], dtype, str(r["bytes"]), f"{r['bpp']:.4f}", f"{r['encode_s']:.3f}",
            f"{r['decode_s']:.3f}", f"{r['encode_cpu_s']:.3f}", f"{r['decode_cpu_s']:.3f}",
            f"{r['peak_memory_bytes'] / 2**20:.0f}", stages,
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows])


def _series(record: dict[str, Any]) -> str:
    """The scaling series a record belongs to: ``name``, plus its dtype when not float32."""
    dtype = record["synthesis_dtype"].get("unet", "float32")
    return record["name"] if dtype == "float32" else f"{record['name']} {dtype}"


def run(args: argparse.Namespace) -> int:
    _check(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = sorted(args.sizes, key=lambda s: (s[0] * s[1], s))
    records: list[dict[str, Any]] = []
    for model in args.model:
        print(f"bench: {model} at {', '.join(f'{h}x{w}' for h, w in sizes)} ...", file=sys.stderr, flush=True)
        if args.isolate == "none":
            records += _in_process(args, model, sizes)
        elif args.isolate == "model":
            records += _in_subprocess(args, model, sizes)
        else:
            for size in sizes:
                records += _in_subprocess(args, model, [size])
    records.sort(key=lambda r: (args.model.index(r["name"]), _series(r), r["height"] * r["width"]))
    scaling: dict[str, dict[str, float | None]] = {}
    for series in dict.fromkeys(_series(r) for r in records):
        chosen = [r for r in records if _series(r) == series]
        keys = ("encode", "decode", "encode_cpu", "decode_cpu")
        scaling[series] = {key: scaling_exponent(chosen, f"{key}_s") for key in keys}
    print(_format_table(records))
    for series, exponents in scaling.items():
        if exponents["decode"] is not None:
            print(f"{series}: time ∝ pixels^k, k = {exponents['encode']:.2f} (encode), "
                  f"{exponents['decode']:.2f} (decode); CPU time: {exponents['encode_cpu']:.2f}, "
                  f"{exponents['decode_cpu']:.2f}")  # fmt: skip
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"records": records, "scaling_exponent": scaling}, indent=2) + "\n")
        print(f"bench: wrote {args.json}", file=sys.stderr)
    return 0
