"""Command line: parses arguments and calls library functions, nothing more."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .config import ConfigError
from .data import DEFAULT_DATA, FORMATS, DataError


class CLIError(Exception):
    """An error already phrased for the user."""


def _add_data_args(p: argparse.ArgumentParser, default: str | None = str(DEFAULT_DATA)) -> None:
    p.add_argument("--data", default=default, help="data folder or labels file (default: %(default)s)")
    p.add_argument("--labels", default=None, help="labels file (labels.json, .csv or .mat) for a folder of images")
    p.add_argument("--format", default="auto", choices=FORMATS, help="data layout (default: auto-detect)")


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth import make_synthetic

    out = make_synthetic(Path(args.dir), n=args.n, seed=args.seed)
    print(f"wrote {args.n} synthetic scenes to {out}")
    return 0


def cmd_explore(args: argparse.Namespace) -> int:
    from .data import check_images, load_dataset
    from .explore import explore

    ds = load_dataset(args.data, args.labels, args.format)
    if args.check:
        errors = check_images(ds)
        if errors:
            print(f"{len(errors)} bad image file(s):", file=sys.stderr)
            for e in errors:
                print(f"  {e}", file=sys.stderr)
            return 1
        print(f"all {len(ds)} images decode")
    summary = explore(ds, Path(args.out), samples_per_class=args.samples, seed=args.seed)
    for line in summary["text"]:
        print(line)
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scenetag", description="Multi-label natural scene tagging.")
    parser.add_argument("--version", action="version", version=f"scenetag {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="draw a small synthetic multi-label scene set (MIML layout)")
    p.add_argument("dir")
    p.add_argument("-n", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("explore", help="label statistics and pictures of a data set -> report.html")
    _add_data_args(p)
    p.add_argument("--out", default="runs/explore")
    p.add_argument("--check", action="store_true", help="decode every image first and report all bad files")
    p.add_argument("--samples", type=int, default=4, help="sample images per class in the grid")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_explore)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (DataError, ConfigError, CLIError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
