"""``diffcodec convert METHOD ...``: official checkpoints → diffcodec model folders.

Each method's converter lives in ``diffcodec/zoo/convert_<method>.py`` and provides
``add_arguments(parser)`` and ``run(args) -> int``; this module only dispatches to them, importing
each one when it is used.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util

#: method → converter module
CONVERTERS: dict[str, str] = {
    "stablecodec": "diffcodec.zoo.convert_stablecodec",
    "oscar": "diffcodec.zoo.convert_oscar",
    "onedc": "diffcodec.zoo.convert_onedc",
}


def available() -> list[str]:
    """Methods whose converter module is installed."""
    return [name for name, module in CONVERTERS.items() if importlib.util.find_spec(module) is not None]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    methods = parser.add_subparsers(dest="method", metavar="METHOD", required=True)
    for name in available():
        module = importlib.import_module(CONVERTERS[name])
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        sub = methods.add_parser(name, help=summary, description=module.__doc__)
        module.add_arguments(sub)
        sub.set_defaults(_converter=module)


def run(args: argparse.Namespace) -> int:
    return int(args._converter.run(args))
