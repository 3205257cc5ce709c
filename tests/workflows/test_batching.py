"""Dynamic batching: concurrent submissions share forward passes, in order, bounded."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from scenetag.workflows.batching import Batcher, QueueFull


class Recorder:
    """An ``infer`` that returns each input's sum and records the batch sizes it saw."""

    def __init__(self, delay: float = 0.0):
        self.sizes: list[int] = []
        self.delay = delay

    def __call__(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.delay)
        self.sizes.append(len(x))
        return x.reshape(len(x), -1).sum(1, keepdims=True)


async def _requests(batcher: Batcher, n: int) -> list[list[np.ndarray]]:
    async def one(i: int):
        batcher.announce(2)
        await asyncio.sleep(0.001 * (i % 3))  # "decoding"
        return await batcher.run([np.full((2, 2), i, dtype=np.float32), np.full((2, 2), 100 + i, dtype=np.float32)], announced=2)

    return await asyncio.gather(*(one(i) for i in range(n)))


def test_concurrent_requests_are_batched_and_answered_in_order():
    rec = Recorder(delay=0.01)
    batcher = Batcher(rec, max_batch=8, max_wait_ms=50)
    try:
        answers = asyncio.run(_requests(batcher, 12))
    finally:
        batcher.close()
    for i, (a, b) in enumerate(answers):
        assert a[0] == 4 * i and b[0] == 4 * (100 + i)
    assert sum(rec.sizes) == 24 and max(rec.sizes) <= 8 and max(rec.sizes) > 2  # several requests per forward pass


def test_a_lone_request_does_not_wait_for_company():
    rec = Recorder()
    batcher = Batcher(rec, max_batch=16, max_wait_ms=2000)
    try:
        t = time.perf_counter()
        (answer,) = asyncio.run(batcher.run([np.ones((2, 2), dtype=np.float32)]))
        assert time.perf_counter() - t < 1.0 and answer[0] == 4  # nothing announced: no 2 s wait
    finally:
        batcher.close()


def test_a_full_queue_is_refused_and_withdrawing_frees_it():
    batcher = Batcher(Recorder(), max_batch=4, max_queue=5)
    try:
        batcher.announce(4)
        with pytest.raises(QueueFull, match="at most 5"):
            batcher.announce(2)
        batcher.announce(-4)
        batcher.announce(5)
    finally:
        batcher.close()


def test_closing_finishes_the_queued_images_and_a_failure_reaches_every_waiter():
    gate = threading.Event()

    def slow(x):
        gate.wait(5)
        if (x < 0).any():
            raise RuntimeError("boom")
        return x.reshape(len(x), -1)[:, :1]

    batcher = Batcher(slow, max_batch=2)

    async def main():
        ok = asyncio.ensure_future(batcher.run([np.ones((1,), np.float32) * k for k in range(3)]))
        await asyncio.sleep(0.05)
        gate.set()
        return await ok

    rows = asyncio.run(main())
    assert [float(r[0]) for r in rows] == [0.0, 1.0, 2.0]
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(batcher.run([-np.ones((1,), np.float32)]))
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        asyncio.run(batcher.run([np.ones((1,), np.float32)]))
