"""``diffcodec fit`` / ``validate`` (LightningCLI over the recipes) and ``diffcodec export``.

A recipe is a LightningCLI YAML (``recipes/<method>/*.yaml``) holding every hyper-parameter: the codec
(``model``), the data (``data``), the trainer (devices, strategy, precision, steps, loggers, callbacks)
and, for a later stage, ``init_from`` (checkpoint + frozen modules)::

    diffcodec fit -c recipes/reference/small_cpu.yaml
    diffcodec fit -c recipes/reference/small_cpu.yaml --trainer.strategy ddp --trainer.devices 4 \\
        --trainer.num_nodes 2 --trainer.precision bf16-mixed --data.batch_size 8
    diffcodec fit -c recipes/reference/small_cpu.yaml --ckpt_path runs/reference/checkpoints/last.ckpt
    diffcodec validate -c recipes/reference/small_cpu.yaml --ckpt_path runs/…/last.ckpt
    diffcodec export runs/reference/checkpoints/last.ckpt my-codec/

Every run also gets :class:`~diffcodec.training.checkpoint.TrainableCheckpoint` (frozen base weights
are never written into checkpoints) whatever the recipe says.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Sequence

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from diffcodec.files import refused_pickle
from diffcodec.training.checkpoint import SafeCheckpointIO, TrainableCheckpoint
from diffcodec.training.init import InitFrom

#: The LightningCLI subcommands ``diffcodec`` exposes.
TRAINER_COMMANDS = ("fit", "validate")


class DiffcodecCLI(LightningCLI):
    """LightningCLI with ``init_from`` (see :mod:`diffcodec.training.init`) and the checkpoint filter."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(InitFrom, "init_from")

    def _use_safe_checkpoint_io(self) -> None:
        """Resume (``--ckpt_path``) through :class:`SafeCheckpointIO` unless the recipe chose its own I/O."""
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = SafeCheckpointIO()

    def before_fit(self) -> None:
        self._use_safe_checkpoint_io()

    def before_validate(self) -> None:
        self._use_safe_checkpoint_io()


def make_cli(args: Sequence[str], *, run: bool = True) -> DiffcodecCLI:
    """Build (and with ``run``, execute) the CLI for ``args`` (``["fit", "-c", "recipe.yaml", …]``)."""
    args = list(args)
    return DiffcodecCLI(
        model_class=L.LightningModule,
        subclass_mode_model=True,
        datamodule_class=L.LightningDataModule,
        subclass_mode_data=True,
        trainer_defaults={"callbacks": [TrainableCheckpoint()]},
        save_config_kwargs={"overwrite": True},
        # the process's own command line is passed as None, which LightningCLI expects (no warning)
        args=None if sys.argv[1:] == args else args,
        run=run,
    )


def export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", nargs="+",
        help="a Lightning .ckpt from `diffcodec fit`; several one-λ runs (ascending rate) make one ladder",
    )  # fmt: skip
    parser.add_argument("out_dir", help="folder to write (config.json, model.safetensors, README.md)")
    parser.add_argument("--push-to-hub", metavar="ORG/NAME", help="also upload the folder to this hub repo")
    parser.add_argument("--private", action="store_true", help="create the hub repo as private")
    parser.add_argument(
        "--rates", type=float, nargs="+", help="nominal bpp of each rung of a ladder (ascending)"
    )
    parser.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"),
        help="store the parameters in this type (float16 halves the file; default: as trained)",
    )  # fmt: skip


def _ckpt_path(argv: Sequence[str]) -> str:
    """The ``--ckpt_path`` value in ``argv`` (for messages)."""
    for index, arg in enumerate(argv):
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
        if arg == "--ckpt_path" and index + 1 < len(argv):
            return argv[index + 1]
    return "the checkpoint"


def run_argv(command: str, argv: Sequence[str]) -> int:
    """Entry point used by ``diffcodec``: ``command`` is ``fit``, ``validate`` or ``export``."""
    if command in TRAINER_COMMANDS:
        try:
            make_cli([command, *argv])
        except pickle.UnpicklingError as error:  # LightningCLI reads --ckpt_path's hparams (weights_only)
            raise refused_pickle(_ckpt_path(argv), error) from None
        return 0
    if command == "export":
        from diffcodec.training.export import export_checkpoint
        from diffcodec.zoo.hub import CheckpointError

        parser = argparse.ArgumentParser(
            prog="diffcodec export", description="Turn a training checkpoint into a hub-ready folder."
        )
        export_arguments(parser)
        args = parser.parse_args(list(argv))
        try:
            out = export_checkpoint(
                args.checkpoint, args.out_dir, rates=args.rates, push_to_hub=args.push_to_hub,
                private=args.private, weights_dtype=getattr(torch, args.dtype) if args.dtype else None,
            )  # fmt: skip
        except (FileNotFoundError, CheckpointError, TypeError, ValueError) as error:
            print(f"diffcodec export: {error}", file=sys.stderr)
            return 2
        print(f"exported to {out}; load it with diffcodec.load({str(out)!r})")
        return 0
    raise ValueError(f"unknown training command {command!r}; expected one of fit, validate, export")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m diffcodec.training.cli fit|validate|export …`` (what DDP workers re-run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in (*TRAINER_COMMANDS, "export"):
        print("usage: python -m diffcodec.training.cli {fit,validate,export} ...", file=sys.stderr)
        return 2
    return run_argv(argv[0], argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
