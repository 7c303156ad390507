"""The ``diffcodec`` command line.

    diffcodec compress IMAGE... -m MODEL [-q Q | --bpp B] [-o OUT.dcb | --out-dir DIR] [--force]
    diffcodec decompress FILE.dcb... -m MODEL [-o OUT.png | --out-dir DIR] [--force]
    diffcodec zoo [--json]
    diffcodec eval | fit | validate | export | shards | convert | bench | demo ...   (other modules)

Results (output paths, bits per pixel) go to stdout, progress and timing to stderr. Errors are one line
on stderr (the traceback with ``--debug``); the exit status is 0 on success, 1 on failure, 2 on a usage
error. Nothing heavy is imported until a command needs it, so ``diffcodec --help`` is instant.

Outputs are written atomically (a temporary file renamed into place), never over one of the command's
inputs, and never over an existing file unless ``--force`` is given; every output is checked before the
model is loaded. ``decompress`` without ``-o`` writes ``NAME.rec.png``, never the original's name.

Commands from other modules are listed in :data:`PLUGINS` and imported only when invoked. Such a module
provides ``add_arguments(parser)`` and ``run(args) -> int``, or, to receive its arguments unparsed (for
LightningCLI), ``run_argv(command, argv) -> int``. A module that is not there is simply not offered.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from diffcodec.errors import UsageError
from diffcodec.progress import progress, set_progress

__all__ = ["PLUGINS", "main"]

#: command → (module, one-line help). Imported lazily; absent modules are not offered.
PLUGINS: dict[str, tuple[str, str]] = {
    "eval": ("diffcodec.eval.cli", "evaluate codecs on an image folder (rate, metrics, plots)"),
    "fit": ("diffcodec.training.cli", "train a recipe (LightningCLI)"),
    "validate": ("diffcodec.training.cli", "validate a recipe or checkpoint (LightningCLI)"),
    "export": ("diffcodec.training.cli", "export a trained checkpoint as a diffcodec model folder"),
    "shards": ("diffcodec.data.cli", "pack an image folder into WebDataset shards"),
    "convert": ("diffcodec.zoo.convert", "convert an official checkpoint to diffcodec's format"),
    "calibrate": ("diffcodec.training.calibration", "OSCAR: measure the rung → pseudo-timestep table"),
    "bench": ("diffcodec.eval.bench", "time compression and decompression"),
    "demo": ("diffcodec.demo", "the main job offline: bundled image → .dcb file → image, bpp/PSNR/LPIPS"),
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------- plugins
def _module_available(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (or its packages, for diffcodec's own)."""
    if name == "diffcodec" or name.startswith("diffcodec."):
        root = Path(__file__).resolve().parent
        relative = Path(*name.split(".")[1:])
        return (root / relative).with_suffix(".py").is_file() or (root / relative / "__init__.py").is_file()
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def available_plugins() -> dict[str, tuple[str, str]]:
    return {command: spec for command, spec in PLUGINS.items() if _module_available(spec[0])}


def _import_plugin(command: str) -> ModuleType:
    module_name = PLUGINS[command][0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RuntimeError(
            f"`diffcodec {command}` is unavailable: {module_name} failed to import ({error})"
        ) from error
    if not (hasattr(module, "run_argv") or (hasattr(module, "add_arguments") and hasattr(module, "run"))):
        raise RuntimeError(f"{module_name} provides neither run_argv() nor add_arguments() + run()")
    return module


# -------------------------------------------------------------------------------------------- helpers
def _output_paths(
    inputs: Sequence[Path], output: Path | None, out_dir: Path | None, suffix: str
) -> list[Path]:
    if output is not None:
        if len(inputs) != 1:
            raise UsageError(f"-o/--output names one file but {len(inputs)} inputs were given; use --out-dir")
        return [output]
    folder = out_dir if out_dir is not None else Path(".")
    outputs = [folder / (path.stem + suffix) for path in inputs]
    seen: dict[Path, Path] = {}
    for source, target in zip(inputs, outputs):
        if target in seen:
            raise UsageError(
                f"{seen[target]} and {source} would both be written to {target}; use -o per file"
            )
        seen[target] = source
    return outputs


def _check_inputs(paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")


def _check_outputs(inputs: Sequence[Path], outputs: Sequence[Path], force: bool) -> None:
    """Refuse to write over an input (ever) or over an existing file (unless ``force``)."""
    sources = {path.resolve() for path in inputs}
    for target in outputs:
        if target.resolve() in sources:
            raise UsageError(f"{target} is one of the inputs; it is never overwritten (choose another -o)")
        if target.exists() and not force:
            raise UsageError(f"{target} exists; pass --force to overwrite it")


def _load_codec(args: argparse.Namespace, model: str | None = None, **rung: Any) -> Any:
    from diffcodec.zoo.identify import check_source

    model = model or args.model
    check_source(model)  # an unknown name fails now, before torch is imported or a model loaded
    import diffcodec

    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    _log(f"loading {model} ...")
    start = time.perf_counter()
    codec = diffcodec.load(model, device=device, revision=args.revision, dtype=args.dtype, **rung)
    codec.tile = args.tile
    _log(
        f"loaded {codec.model_id} ({codec.method}, {codec.num_rungs} rungs) on {device} "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return codec


def _models_for(paths: Sequence[Path], tags: Sequence[int], model: str | None) -> dict[str, list[int]]:
    """Which model decodes which file (model → indices), decided from the files' tags before loading.

    With ``-m``, every file must carry that model's tag when it is known offline (zoo names, folders);
    without, each tag must belong to exactly one zoo model (bundled ones included).
    """
    from diffcodec.bitstream import DecodeError, model_tag
    from diffcodec.zoo.identify import models_with_tag, source_model_id, tag_owners

    if model is not None:
        model_id = source_model_id(model)
        for path, tag in zip(paths, tags):
            if model_id is not None and tag != model_tag(model_id):
                raise DecodeError(
                    f"{path} was written by another model (tag 0x{tag:02x}: {tag_owners(tag)}); "
                    f"{model} has tag 0x{model_tag(model_id):02x}"
                )
        return {model: list(range(len(paths)))}
    groups: dict[str, list[int]] = {}
    for index, (path, tag) in enumerate(zip(paths, tags)):
        candidates = models_with_tag(tag)
        if not candidates:
            raise UsageError(
                f"{path}: no zoo model writes files tagged 0x{tag:02x}; pass the model that wrote it with "
                "-m (a checkpoint folder or hf-hub:org/name)"
            )
        if len(candidates) > 1:
            names = ", ".join(str(candidate) for candidate in candidates)
            raise UsageError(
                f"{path}: tag 0x{tag:02x} belongs to several models ({names}); choose one with -m"
            )
        groups.setdefault(candidates[0].source, []).append(index)
    return groups


# ------------------------------------------------------------------------------------------- commands
def _compress(args: argparse.Namespace) -> int:
    inputs = [Path(p) for p in args.inputs]
    _check_inputs(inputs)
    outputs = _output_paths(inputs, args.output, args.out_dir, ".dcb")
    _check_outputs(inputs, outputs, args.force)
    codec = _load_codec(args, quality=args.quality, bpp=args.bpp)
    _log(f"rung {codec.quality} of {codec.num_rungs} (nominal {codec.rates[codec.quality]:g} bpp)")
    for index, source, target in progress(_numbered(inputs, outputs), desc="compress", unit="file"):
        start = time.perf_counter()
        stream = codec.compress(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        size = stream.to_file(target, overwrite=args.force)
        _log(f"[{index}/{len(inputs)}] {source} -> {target} in {time.perf_counter() - start:.2f} s")
        print(f"{target}\t{stream.bpp:.6f} bpp\t{size} bytes\t{stream.width}x{stream.height}", flush=True)
    return 0


def _decompress(args: argparse.Namespace) -> int:
    inputs = [Path(p) for p in args.inputs]
    _check_inputs(inputs)
    outputs = _output_paths(inputs, args.output, args.out_dir, ".rec.png")
    _check_outputs(inputs, outputs, args.force)
    from diffcodec.bitstream import Bitstream

    streams = [Bitstream.from_file(path) for path in inputs]  # reject malformed files before loading a model
    groups = _models_for(inputs, [stream.model_tag for stream in streams], args.model)
    from diffcodec.imageio import save_image  # imports torch: only once the files and the model are known

    for model, indices in groups.items():
        codec = _load_codec(args, model)
        chosen = [(inputs[k], streams[k], outputs[k]) for k in indices]
        rows = _numbered(*zip(*chosen))
        for index, source, stream, target in progress(rows, desc="decompress", unit="file"):
            start = time.perf_counter()
            image = codec.decompress(stream)
            target.parent.mkdir(parents=True, exist_ok=True)
            save_image(image, target, overwrite=args.force)
            _log(f"[{index}/{len(chosen)}] {source} -> {target} in {time.perf_counter() - start:.2f} s")
            print(f"{target}\t{stream.bpp:.6f} bpp\t{stream.width}x{stream.height}", flush=True)
    return 0


def _numbered(*columns: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows ``(1, a1, b1, …), (2, a2, b2, …)``: the work list a progress bar counts."""
    return [(index, *row) for index, row in enumerate(zip(*columns), start=1)]


def _format_rates(rates: Sequence[float]) -> str:
    if not rates:
        return "-"
    if len(rates) <= 3:
        return ", ".join(f"{r:g}" for r in rates)
    return f"{rates[0]:g}..{rates[-1]:g} ({len(rates)})"


def _zoo(args: argparse.Namespace) -> int:
    import dataclasses

    from diffcodec.zoo import list_models, zoo_status
    from diffcodec.zoo.loader import load_status

    entries = list_models()
    if args.json:
        rows = [
            dataclasses.asdict(e) | {"local_weights": zoo_status(e), "status": load_status(e)}
            for e in entries
        ]
        print(json.dumps(rows, indent=2))
        return 0
    header = ("NAME", "METHOD", "RATES (bpp)", "LICENCE", "LOCAL WEIGHTS", "STATUS")
    rows = [
        (
            e.name,
            e.method,
            _format_rates(e.rates),
            e.licence,
            zoo_status(e),
            load_status(e),
        )
        for e in entries
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


# --------------------------------------------------------------------------------------------- parser
def _model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "-m",
        "--model",
        required=required,
        default=None,
        help="zoo name (see `diffcodec zoo`), checkpoint folder, or hf-hub:org/name"
        + ("" if required else " (default: the zoo model whose tag the file carries)"),
    )
    parser.add_argument(
        "--revision", default=None, help="hub revision (branch, tag or commit) for hf-hub models"
    )
    parser.add_argument(
        "--device", default="auto", help="torch device (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--dtype", default=None, help="bf16 | fp16: synthesis precision (the files do not change)"
    )
    parser.add_argument(
        "--tile", choices=("auto", "never", "always"), default="auto",
        help="tile large images: only when they would not fit in memory (auto, default), never, always",
    )  # fmt: skip


def build_parser(plugin_modules: dict[str, ModuleType] | None = None) -> argparse.ArgumentParser:
    """The parser; plugin commands get their arguments only when their module was imported."""
    import diffcodec

    plugin_modules = plugin_modules or {}
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback on errors"
    )
    quiet = argparse.ArgumentParser(add_help=False)
    quiet.add_argument(
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="no progress bars (also off when stderr is not a terminal)",
    )
    parser = argparse.ArgumentParser(
        prog="diffcodec",
        description="One-step diffusion image codecs: compress images to .dcb files and back.",
        epilog="Run `diffcodec COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"diffcodec {diffcodec.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    compress = commands.add_parser(
        "compress",
        parents=[debug, quiet],
        help="compress images to .dcb files",
        description="Compress images to .dcb files (one per image).",
    )
    compress.add_argument("inputs", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    _model_arguments(compress)
    rate = compress.add_mutually_exclusive_group()
    rate.add_argument("-q", "--quality", type=int, default=None, help="rung index (0 = lowest rate)")
    rate.add_argument("--bpp", type=float, default=None, help="target bits per pixel (nearest rung)")
    compress.add_argument("-o", "--output", type=Path, default=None, help="output file (one input only)")
    compress.add_argument("--out-dir", type=Path, default=None, help="output folder (default: current)")
    compress.add_argument("--force", action="store_true", help="overwrite existing outputs (never an input)")
    compress.set_defaults(handler=_compress)

    decompress = commands.add_parser(
        "decompress",
        parents=[debug, quiet],
        help="decode .dcb files to images",
        description="Decode .dcb files to images (NAME.rec.png, or -o FILE in the format of its suffix). "
        "Each file names its model (an 8-bit tag folded into its check): without -m, the zoo model with "
        "that tag decodes it.",
    )
    decompress.add_argument("inputs", nargs="+", metavar="FILE", help=".dcb files")
    _model_arguments(decompress, required=False)
    decompress.add_argument("-o", "--output", type=Path, default=None, help="output image (one input only)")
    decompress.add_argument("--out-dir", type=Path, default=None, help="output folder (default: current)")
    decompress.add_argument(
        "--force", action="store_true", help="overwrite existing outputs (never an input)"
    )
    decompress.set_defaults(handler=_decompress)

    zoo = commands.add_parser(
        "zoo",
        parents=[debug],
        help="list models, rates, licences, local weights",
        description="List the zoo: rates, licences, and whether weights are local.",
    )
    zoo.add_argument("--json", action="store_true", help="print the entries as JSON")
    zoo.set_defaults(handler=_zoo)

    for command, (_, help_text) in available_plugins().items():
        sub = commands.add_parser(command, parents=[debug], help=help_text, description=help_text)
        module = plugin_modules.get(command)
        if module is not None:
            module.add_arguments(sub)
            sub.set_defaults(handler=module.run)
    return parser


# ----------------------------------------------------------------------------------------------- main
def _guarded(function: Callable[[], int | None], debug: bool) -> int:
    try:
        return int(function() or 0)
    except KeyboardInterrupt:
        _log("diffcodec: interrupted")
        return 130
    except UsageError as error:
        _log(f"diffcodec: usage error: {error}")
        return 2
    except Exception as error:
        if debug:
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        _log(f"diffcodec: error: {message} (--debug for the traceback)")
        return 1


def _command_index(argv: Sequence[str]) -> int | None:
    """Position of the command: the first argument that is not one of the global flags."""
    for index, arg in enumerate(argv):
        if not arg.startswith("-"):
            return index
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffcodec`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    index = _command_index(argv)
    command = argv[index] if index is not None else None
    debug = "--debug" in argv
    plugin_modules: dict[str, ModuleType] = {}
    if command in available_plugins():
        try:
            module = _import_plugin(command)
        except RuntimeError as error:
            _log(f"diffcodec: error: {error}")
            return 1
        if hasattr(module, "run_argv"):
            rest = argv[index + 1 :]
            return _guarded(lambda: module.run_argv(command, rest), "--debug" in argv[:index])
        plugin_modules[command] = module
    parser = build_parser(plugin_modules)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help, --version (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if args.command is None:
        parser.print_usage(sys.stderr)
        _log("diffcodec: error: a command is required (see `diffcodec --help`)")
        return 2
    if getattr(args, "quiet", False):
        set_progress(False)
    return _guarded(lambda: args.handler(args), debug)


if __name__ == "__main__":
    sys.exit(main())
