"""``diffcodec convert METHOD ...``: official checkpoints → diffcodec model folders.

Each method's converter lives in its package, ``diffcodec/codecs/<method>/convert.py``, and provides
``add_arguments(parser)``, ``run(args) -> int`` and optionally ``HELP`` (one-line help, plain-text
description for the terminal); this module finds them and dispatches to them,
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
