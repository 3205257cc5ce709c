"""Dynamic batching for the service (as TorchServe and Triton do it): concurrent requests share one forward pass.

Requests put decoded model inputs on a bounded queue; one worker thread takes up to
``max_batch`` images at a time and runs them together, off the event loop. It waits
for more images only while some are announced (a request that is still decoding
will add them soon) and at most ``max_wait_ms`` after the first one, so a lone
client pays no batching delay. A full queue is refused at once (:class:`QueueFull`),
never buffered without bound.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More images are waiting than the queue may hold; the caller should answer 503."""


@dataclass
class _Item:
    x: np.ndarray
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


class Batcher:
    """Runs ``infer`` (a stacked batch -> one row of results per image) on batches of queued images."""

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], max_batch: int = 16, max_wait_ms: float = 10.0, max_queue: int = 256, on_batch: Callable[[int], None] | None = None):
        self.infer, self.max_batch, self.max_wait_s, self.max_queue = infer, max_batch, max_wait_ms / 1000, max_queue
        self.on_batch = on_batch
        self._items: deque[_Item] = deque()
        self._announced = 0  # images of requests still decoding: worth waiting for
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="scenetag-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Images waiting for a batch."""
        return len(self._items)

    def announce(self, n: int) -> None:
        """``n`` images will be submitted soon (or withdrawn with a negative ``n``); raises QueueFull when they would not fit."""
        with self._cond:
            if n > 0 and len(self._items) + self._announced + n > self.max_queue:
                raise QueueFull(f"{len(self._items) + self._announced} images already queued; at most {self.max_queue}")
            self._announced = max(0, self._announced + n)
            self._cond.notify_all()

    async def run(self, inputs: list[np.ndarray], announced: int = 0) -> list[np.ndarray]:
        """One result row per input, computed in the worker's batches; ``announced``: how many of them announce() counted."""
        loop = asyncio.get_running_loop()
        items = [_Item(x, loop.create_future(), loop) for x in inputs]
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if len(self._items) + max(0, self._announced - announced) + len(items) > self.max_queue:
                self._announced = max(0, self._announced - announced)
                raise QueueFull(f"{len(self._items)} images already queued; at most {self.max_queue}")
            self._announced = max(0, self._announced - announced)
            self._items.extend(items)
            self._cond.notify_all()
        return list(await asyncio.gather(*(item.future for item in items)))

    def _next_batch(self) -> list[_Item] | None:
        """Wait for a first image, then for more while more are announced, up to max_batch / max_wait; None once closed and empty."""
        with self._cond:
            while not self._items:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait_s
            while len(self._items) < self.max_batch and self._announced > 0 and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._items.popleft() for _ in range(min(self.max_batch, len(self._items)))]

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                rows = self.infer(np.stack([item.x for item in batch]))
                outcome = [(item.future.set_result, row) for item, row in zip(batch, rows)]
            except Exception as e:  # noqa: BLE001 - reported to every waiting request, the worker carries on
                log.exception("batch of %d failed", len(batch))
                outcome = [(item.future.set_exception, e) for item in batch]
            if self.on_batch:
                self.on_batch(len(batch))
            for (setter, value), item in zip(outcome, batch):
                item.loop.call_soon_threadsafe(_settle, item.future, setter, value)

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then stop the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)


def _settle(future: asyncio.Future, setter, value) -> None:
    if not future.done():  # the request may have been cancelled (client gone)
        setter(value)
