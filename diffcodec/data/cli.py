"""``diffcodec shards SRC OUT``: write WebDataset shards from an image folder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", type=Path, help="image folder (searched recursively, any format Pillow reads)"
    )
    parser.add_argument(
        "out_dir", type=Path, help="folder that receives PREFIX-000000.tar, … and shards.json"
    )
    parser.add_argument("--prefix", default="shard", help="shard file name prefix (default: shard)")
    parser.add_argument("--max-count", type=int, default=1000, help="images per shard (default: 1000)")
    parser.add_argument("--max-size", type=float, default=1e9, help="bytes per shard (default: 1e9)")
    parser.add_argument(
        "--min-side", type=int, default=0, help="leave out images whose short side is below this (default: 0)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print each shard as it is written")


def run(args: argparse.Namespace) -> int:
    from diffcodec.data.shards import write_shards

    if args.max_count < 1 or args.max_size <= 0:
        raise SystemExit("--max-count and --max-size must be positive")
    try:
        summary = write_shards(
            args.source,
            args.out_dir,
            prefix=args.prefix,
            max_count=args.max_count,
            max_size=args.max_size,
            min_side=args.min_side,
            verbose=args.verbose,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"diffcodec shards: {error}")
        return 2
    shards = summary["shards"]
    pattern = (
        f"{args.out_dir}/{args.prefix}-{{{shards[0][-10:-4]}..{shards[-1][-10:-4]}}}.tar"
        if len(shards) > 1
        else f"{args.out_dir}/{shards[0]}"
    )
    print(
        f"wrote {summary['num_samples']} images into {len(shards)} shard(s): {pattern}"
        + (f" ({summary['num_skipped']} skipped, listed in shards.json)" if summary["num_skipped"] else "")
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m diffcodec.data.cli``); ``diffcodec shards`` calls :func:`run`."""
    parser = argparse.ArgumentParser(prog="diffcodec shards", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
