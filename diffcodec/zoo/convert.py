"""``diffcodec convert METHOD ...``: official checkpoints → diffcodec model folders.

Each method's converter lives in its package, ``diffcodec/codecs/<method>/convert.py``, and provides
``add_arguments(parser)`` and ``run(args) -> int``; this module finds them and dispatches to them,
importing each one when it is used. Adding a method's converter edits nothing here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil


def converters() -> dict[str, str]:
    """method → converter module, for every method package that has a ``convert`` module."""
    import diffcodec.codecs

    found = {}
    for package in sorted(pkgutil.iter_modules(diffcodec.codecs.__path__), key=lambda p: p.name):
        module = f"diffcodec.codecs.{package.name}.convert"
        if package.ispkg and importlib.util.find_spec(module) is not None:
            found[package.name] = module
    return found


def available() -> list[str]:
    """Methods whose converter module is installed."""
    return list(converters())


#: method → (one-line help, plain-text description) for ``diffcodec convert [METHOD] --help``. The modules'
#: docstrings are reStructuredText for the API reference; terminal help is written here as plain text.
HELP: dict[str, tuple[str, str]] = {
    "stablecodec": (
        "official stablecodec_ft{λ}.pkl files + elic_official.pth -> one StableCodec folder",
        """\
Convert the official StableCodec release (LuizScarlet/StableCodec, MIT, on Google Drive)
into one diffcodec model folder with one rung per λ.

Pass every stablecodec_ft{λ}.pkl you want as a rung and the frozen auxiliary encoder
elic_official.pth (--elic). Every tensor must find its place and every weight must come
from the files: a missing, unexpected or mis-shaped key is an error. The SD-Turbo base
model comes from --base-model (a hub id or a local diffusers folder).

Nominal rates: 0.00579 bpp at λ = 32 and 0.03413 bpp at λ = 2 (official Kodak results),
the rungs between interpolated log-linearly in λ; --rates replaces them.

Then: diffcodec.load("OUTPUT_FOLDER").""",
    ),
    "oscar": (
        "official oscar.pkl (hub jinpeig/OSCAR) -> an OSCAR folder",
        """\
Convert the official OSCAR checkpoint (oscar.pkl: a file, its folder, or the hub repo
jinpeig/OSCAR, the default) into a diffcodec model folder.

The rung table is read from the tensor shapes; the pseudo-timesteps are the official
ones. Checkpoints of the legacy generation are refused. The file is read with
torch.load(weights_only=True): tensors and plain containers only. The SD 2.1 (768-v)
base model comes from --base-model (a hub id or a local diffusers folder).

diffcodec.load("oscar") does the same conversion at load time; converting once saves
it on every later load. Then: diffcodec.load("OUTPUT_FOLDER").""",
    ),
    "onedc": (
        "official OneDC release folders (one per λ) -> one OneDC folder",
        """\
Convert the official OneDC release (CC BY-NC-SA 4.0, on OneDrive: one folder per λ plus
the z-only "exlow" model, each with model.safetensors and model_1.safetensors) into one
multi-rate diffcodec model folder.

The folders become the rungs in ascending rate order (the z-only model first, then
λ = 12.2 ... 0.6); λ and the z-only flag are read from the folder names unless given.
The frozen U-Net weights in the files must equal the DMD2 U-Net named by --base-unet.
Files are read with safetensors only (no pickle).

Then: diffcodec.load("OUTPUT_FOLDER").""",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    methods = parser.add_subparsers(dest="method", metavar="METHOD", required=True)
    for name in available():
        module = importlib.import_module(converters()[name])
        doc = (module.__doc__ or "").strip()
        summary, description = getattr(module, "HELP", (doc.splitlines()[0] if doc else "", doc))
        sub = methods.add_parser(
            name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        module.add_arguments(sub)
        sub.set_defaults(_converter=module)


def run(args: argparse.Namespace) -> int:
    return int(args._converter.run(args))
