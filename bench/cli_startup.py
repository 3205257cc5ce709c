"""How long the command line takes to answer ``--help`` and ``--version`` (not a test). Usage:

    .venv/bin/python bench/cli_startup.py [-n 7] [--json docs/figures/cli_startup.json]

Each is a fresh ``python -m scenetag`` process; the median of ``-n`` runs is printed.
The target is <= 1 s: heavy libraries load only in the commands that need them.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def seconds(args: list[str], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "scenetag", *args], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=7, help="runs per command (median)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here (feeds the README)")
    args = ap.parse_args()
    figures = {" ".join(a): round(seconds(a, args.n), 3) for a in (["--help"], ["--version"], ["train", "--help"])}
    for command, s in figures.items():
        print(f"scenetag {command:<14} {s:.3f} s (median of {args.n})")
    if args.json:
        from scenetag.io import atomic_write_json

        atomic_write_json(args.json, {"median_seconds": figures, "runs": args.n, "command": "python bench/cli_startup.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
