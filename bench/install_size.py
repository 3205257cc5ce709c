"""Size of the slim install (`pip install scenetag`: ONNX predict + serve) next to the full one (`make test`'s .venv).

    python bench/install_size.py [--full .venv] [--json docs/figures/install_size.json]

Builds the slim venv from this checkout in a temporary folder, from the same package
index, and reports both sizes on disk and what the slim one holds.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scenetag.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]


def size_mb(folder: Path) -> float:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", default=str(ROOT / ".venv"), help="the full install to compare with (default: this checkout's .venv)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "slim"
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(ROOT)], check=True, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - t
        freeze = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude", "scenetag"], capture_output=True, text=True, check=True).stdout.split()
        out = {"command": "python bench/install_size.py " + " ".join(sys.argv[1:]), "slim_mb": round(size_mb(venv)), "full_mb": round(size_mb(Path(args.full))), "slim_install_s": round(seconds, 1), "slim_packages": freeze}
    print(f"slim install (pip install scenetag): {out['slim_mb']} MB in {out['slim_install_s']} s, {len(freeze)} packages: {' '.join(p.split('==')[0] for p in freeze)}")
    print(f"full install ({args.full}): {out['full_mb']} MB")
    if args.json:
        atomic_write_json(args.json, out)


if __name__ == "__main__":
    main()
