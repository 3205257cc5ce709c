"""Load test of `scenetag serve` on loopback (not a test). Usage:

    .venv/bin/python bench/serve_load.py --model runs/default/best.pt [--requests 1000] [--clients 8] [--bad 0.1]

Starts the server on a free 127.0.0.1 port, sends a bounded number of
single-image requests from N concurrent clients (a fraction --bad of them
corrupt uploads, which must get 422), checks every good answer against a
reference prediction, and prints p50/p95 latency, requests/s and counts.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="runs/default/best.pt")
    ap.add_argument("--data", default="../shared/data/miml-scene")
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--bad", type=float, default=0.0, help="fraction of corrupt uploads")
    ap.add_argument("--images", type=int, default=20)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "scenetag", "serve", "--model", args.model, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        files = sorted((Path(args.data) / "original").glob("*.jpg"))[: args.images]
        blobs = [(f.name, f.read_bytes()) for f in files]
        with httpx.Client(timeout=60) as c:
            reference = {n: c.post(url + "/predict", files=[("files", (n, b, "image/jpeg"))]).json()["predictions"][0]["labels"] for n, b in blobs}
        rng = random.Random(0)
        plan = [(rng.random() < args.bad, rng.choice(blobs)) for _ in range(args.requests)]

        def one(item):
            bad, (name, blob) = item
            data = blob[: len(blob) // 3] + b"garbage" if bad else blob
            t = time.perf_counter()
            with httpx.Client(timeout=60) as c:
                r = c.post(url + "/predict", files=[("files", (name, data, "image/jpeg"))])
            dt = time.perf_counter() - t
            wrong = (not bad and r.status_code == 200 and r.json()["predictions"][0]["labels"] != reference[name]) or (bad and r.status_code != 422)
            return dt, r.status_code, wrong, bad

        t0 = time.perf_counter()
        with cf.ThreadPoolExecutor(args.clients) as ex:
            out = list(ex.map(one, plan))
        wall = time.perf_counter() - t0
        lat = np.array([o[0] for o in out]) * 1000
        codes = [o[1] for o in out]
        print(f"{args.requests} requests, {args.clients} concurrent clients, {args.bad:.0%} corrupt uploads, model {args.model}")
        print(f"latency p50 {np.percentile(lat, 50):.0f} ms, p95 {np.percentile(lat, 95):.0f} ms; {args.requests / wall:.1f} requests/s")
        print(f"status counts: { {c: codes.count(c) for c in sorted(set(codes))} }; 5xx: {sum(c >= 500 for c in codes)}; wrong answers: {sum(o[2] for o in out)}")
        with httpx.Client(timeout=60) as c:
            single = []
            name, blob = blobs[0]
            for _ in range(30):
                t = time.perf_counter()
                c.post(url + "/predict", files=[("files", (name, blob, "image/jpeg"))])
                single.append((time.perf_counter() - t) * 1000)
        print(f"single client, one image: p50 {np.percentile(single, 50):.0f} ms")
        print(f"server still up: {server.poll() is None}")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
