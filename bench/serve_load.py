"""Load test of `scenetag serve` against `scenetag predict` on the same model, in one run (not a test).

    .venv/bin/python bench/serve_load.py --model runs/default [--images 160] [--clients 8 32] [--json docs/figures/serve_load.json]

1. `scenetag predict` (the CLI, end to end, start-up included) on ``--images`` photos: images/s, and
   each photo's labels, the reference every service answer is checked against.
2. `scenetag serve` on a free loopback port, for each setting (dynamic batching with the
   defaults, and ``--max-batch 1`` as the same service without batching): ``--clients``
   concurrent clients, each sending single-image requests over its own connection until
   the photos are used up, while a prober in its own process asks ``/health`` every 20 ms. Reports images/s,
   its ratio to the CLI's, p50/p95 latency, non-2xx answers, answers that differ from the
   CLI's labels, and ``/health`` p50/p99 during the load.
3. One client alone, 40 sequential single-image requests: p50/p95 latency.

The model is exported to ONNX first when a checkpoint or run folder is given, so both
sides run the same ONNX model with its own TTA setting.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from scenetag.io import atomic_write_json
from scenetag.runs import model_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_predict(model: Path, paths: list[Path], tmp: Path) -> tuple[float, dict[str, list[str]]]:
    """(images/s end to end, labels per file name) of `scenetag predict`."""
    out = tmp / "cli.csv"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scenetag", "predict", "--model", str(model), *map(str, paths), "--output", str(out), "-q"], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t
    with open(out, newline="") as f:
        labels = {Path(r["path"]).name: r["labels"].split() for r in csv.DictReader(f)}
    return len(paths) / seconds, labels


def start_server(model: Path, extra: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "scenetag", "serve", "--model", str(model), "--port", str(port), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            httpx.get(url + "/health", timeout=1)
            return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not start")


PROBE = """
import json, sys, time, urllib.request
url, stop = sys.argv[1], sys.argv[2]
out = []
import os
while not os.path.exists(stop):
    t = time.perf_counter()
    urllib.request.urlopen(url + "/health", timeout=30).read()
    out.append((time.perf_counter() - t) * 1000)
    time.sleep(0.02)
print(json.dumps(out))
"""


def start_prober(url: str, stop: Path) -> subprocess.Popen:
    """/health every 20 ms from its own process: the clients' threads must not delay the probe (one GIL)."""
    return subprocess.Popen([sys.executable, "-c", PROBE, url, str(stop)], stdout=subprocess.PIPE, text=True)


def load(url: str, blobs: list[tuple[str, bytes]], clients: int, reference: dict[str, list[str]]) -> dict:
    """``clients`` concurrent single-image clients until every photo was sent once; /health probed meanwhile."""
    todo = iter(blobs)
    lock = threading.Lock()

    def client() -> list[tuple[float, int, bool]]:
        done = []
        with httpx.Client(timeout=120) as c:
            while True:
                with lock:
                    item = next(todo, None)
                if item is None:
                    return done
                name, blob = item
                t = time.perf_counter()
                r = c.post(url + "/predict", files=[("files", (name, blob, "image/jpeg"))])
                ok = r.status_code == 200 and r.json()["predictions"][0]["labels"] == reference[name]
                done.append(((time.perf_counter() - t) * 1000, r.status_code, ok))

    stop = Path(tempfile.mkdtemp()) / "stop"
    prober = start_prober(url, stop)
    time.sleep(0.5)  # the prober is up before the load starts
    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as ex:
        results = [row for rows in ex.map(lambda _: client(), range(clients)) for row in rows]
    wall = time.perf_counter() - t0
    stop.touch()
    health = json.loads(prober.communicate(timeout=60)[0])
    lat = np.array([r[0] for r in results])
    return {
        "clients": clients, "images_per_s": len(results) / wall, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
        "non_2xx": sum(not 200 <= r[1] < 300 for r in results), "wrong": sum(not r[2] for r in results),
        "health_p50_ms": float(np.percentile(health, 50)), "health_p99_ms": float(np.percentile(health, 99)), "health_probes": len(health),
    }  # fmt: skip


def single_client(url: str, blob: tuple[str, bytes], n: int = 40) -> dict:
    name, data = blob
    with httpx.Client(timeout=60) as c:
        c.post(url + "/predict", files=[("files", (name, data, "image/jpeg"))])  # warm-up
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            c.post(url + "/predict", files=[("files", (name, data, "image/jpeg"))])
            lat.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95))}


def serve_settings(model: Path, blobs, reference, clients: list[int]) -> dict:
    settings = {"dynamic batching (defaults)": [], "no batching (--max-batch 1)": ["--max-batch", "1"]}
    out = {}
    for name, extra in settings.items():
        proc, url = start_server(model, extra)
        try:
            single_client(url, blobs[0], n=3)  # warm-up
            out[name] = {"load": [load(url, blobs, k, reference) for k in clients], "single_client": single_client(url, blobs[0])}
        finally:
            proc.terminate()
            proc.wait(30)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="runs/default", help="an .onnx model, a checkpoint or a run folder (exported to ONNX first)")
    ap.add_argument("--data", default="../shared/data/miml-scene")
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    every = sorted((Path(args.data) / "original").glob("*.jpg"))
    paths = every[:: max(1, len(every) // args.images)][: args.images]  # spread over the classes (files are grouped by class)
    blobs = [(p.name, p.read_bytes()) for p in paths]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model)
        if model.suffix != ".onnx":
            from scenetag.infer.export import export_onnx

            export_onnx(model_file(model), Path(tmp) / "model.onnx")
            model = Path(tmp) / "model.onnx"
        cli_rate, reference = cli_predict(model, paths, Path(tmp))
        served = serve_settings(model, blobs, reference, args.clients)
    print(f"scenetag predict (CLI, end to end): {cli_rate:.1f} images/s on {len(paths)} images, model {args.model} (ONNX)")
    print(f"{'service':<30} {'clients':>7} {'img/s':>7} {'x CLI':>6} {'p50 ms':>7} {'p95 ms':>7} {'non-2xx':>7} {'wrong':>5} {'health p99 ms':>13}")
    for name, result in served.items():
        for row in result["load"]:
            print(f"{name:<30} {row['clients']:>7} {row['images_per_s']:>7.1f} {row['images_per_s'] / cli_rate:>6.2f} {row['p50_ms']:>7.0f} {row['p95_ms']:>7.0f} {row['non_2xx']:>7} {row['wrong']:>5} {row['health_p99_ms']:>13.1f}")
        print(f"{name:<30} one client alone: p50 {result['single_client']['p50_ms']:.0f} ms, p95 {result['single_client']['p95_ms']:.0f} ms")
    if args.json:
        atomic_write_json(args.json, {"command": "python bench/serve_load.py " + " ".join(sys.argv[1:]), "images": len(paths), "cli_images_per_s": cli_rate, "served": served})


if __name__ == "__main__":
    main()
