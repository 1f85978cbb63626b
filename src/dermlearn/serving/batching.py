"""Micro-batching: concurrent requests share one model call in a worker thread.

A request first *reserves* a slot (before it decodes its image), then submits its preprocessed
input. The worker takes the first queued input and, while fewer than ``max_batch`` are
gathered, keeps collecting: whatever is already queued, and -- only while other requests hold
reservations, i.e. are still decoding -- whatever arrives within ``max_wait_ms``. A lone request
therefore never waits, and under load batches fill up to ``max_batch``.

>>> batcher = MicroBatcher(lambda xs: [x * 2 for x in xs], max_batch=16, max_wait_ms=5)
>>> with batcher.reserve() as slot:
...     x = decode(request)                 # other requests' reservations make the worker wait
...     future = slot.submit(x)
>>> result = await asyncio.wrap_future(future)   # or future.result()
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

__all__ = ["MicroBatcher", "Slot"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
_STOP = object()


class Slot(Generic[T, R]):
    """A reservation: submit exactly one input through it (or leave it unused)."""

    def __init__(self, batcher: MicroBatcher[T, R]):
        self._batcher = batcher
        self._open = True

    def submit(self, item: T) -> Future[R]:
        if not self._open:
            raise RuntimeError("this slot was already used")
        future = self._batcher._enqueue(item)
        self.release()
        return future

    def release(self) -> None:
        if self._open:
            self._open = False
            self._batcher._release()


class MicroBatcher(Generic[T, R]):
    """Gathers items from many threads/tasks into calls of ``fn(list_of_items) -> results``.

    ``fn`` runs in one dedicated worker thread and must return one result per item (an
    exception fails every item of that batch, and the worker carries on).
    """

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_batch: int = 16,
                 max_wait_ms: float = 5.0, name: str = "dermlearn-batcher"):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue()
        self._reserved = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0
        self.items = 0
        self.sizes: dict[int, int] = {}

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> MicroBatcher[T, R]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher was closed")
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued work, then stop the worker."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout)

    # -- submitting -------------------------------------------------------------------------
    @contextmanager
    def reserve(self) -> Iterator[Slot[T, R]]:
        """Announce an input that is being prepared (see the module docstring)."""
        with self._lock:
            self._reserved += 1
        slot: Slot[T, R] = Slot(self)
        try:
            yield slot
        finally:
            slot.release()

    def submit(self, item: T) -> Future[R]:
        """Queue one item without a reservation."""
        return self._enqueue(item)

    def _enqueue(self, item: T) -> Future[R]:
        if self._closed:
            raise RuntimeError("the batcher was closed")
        self.start()
        future: Future[R] = Future()
        self._queue.put((item, future))
        return future

    def _release(self) -> None:
        with self._lock:
            self._reserved -= 1

    def stats(self) -> dict[str, Any]:
        """Batches run, items served, mean batch size and the batch-size histogram."""
        return {"batches": self.batches, "items": self.items,
                "mean_batch_size": self.items / self.batches if self.batches else 0.0,
                "batch_sizes": dict(sorted(self.sizes.items())), "max_batch": self.max_batch,
                "max_wait_ms": self.max_wait * 1000.0}

    # -- worker -----------------------------------------------------------------------------
    def _gather(self, first: Any) -> tuple[list[Any], bool]:
        batch, stop = [first], False
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if self._reserved <= 0 or remaining <= 0:
                    break
                try:
                    entry = self._queue.get(timeout=min(remaining, 0.0005))
                except queue.Empty:
                    continue
            if entry is _STOP:
                stop = True
                break
            batch.append(entry)
        return batch, stop

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            batch, stop = self._gather(first)
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = list(self.fn([item for item, _ in live]))
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for "
                                       f"{len(live)} items")
            except BaseException as exc:  # every waiter hears of it; the worker survives
                log.exception("batch of %d failed", len(live))
                for _, fut in live:
                    fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(live)
            self.sizes[len(live)] = self.sizes.get(len(live), 0) + 1
            for (_, fut), result in zip(live, results):
                fut.set_result(result)
