"""The model queue: concurrent predict requests share forward passes (dynamic batching).

Why a queue and not a semaphore: one forward pass of B images costs less than B passes of
one image, and a slot semaphore with a short wait turned concurrent clients away (16 clients
-> 184 of 200 requests refused). Here every model call goes through one FIFO queue served by
``workers`` tasks. A worker that was idle waits ``batch_window_s`` for more requests, then
takes every waiting predict request that fits in ``batch_size`` images and scores them with
one ``Detector.predict`` call; while it works, new requests pile up and form the next batch.
Explanations (many forward passes of one image) run alone, in their place in the queue.

Load is shed only at admission: a request is refused (:class:`QueueFull`, a 503) when the
queue's *expected* wait, from the measured seconds per image, exceeds ``queue_timeout_s``.
An admitted request is served, however long it then waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

__all__ = ["BatchQueue", "QueueFull"]

log = logging.getLogger(__name__)

# Work whose cost is not measured yet still counts a little, so "nothing ahead" stays exact
# (queue_timeout_s=0 admits a request only when the model is idle and nothing is queued).
_EPS_S = 1e-3
_EMA_ALPHA = 0.3


class QueueFull(Exception):
    """The expected wait is over the limit; the request should be answered 503 with Retry-After."""

    def __init__(self, expected_wait_s: float, limit_s: float, retry_after_s: int):
        self.expected_wait_s = expected_wait_s
        self.limit_s = limit_s
        self.retry_after_s = retry_after_s
        super().__init__(
            f"server busy: the expected wait in the model queue is {expected_wait_s:.1f} s, over the "
            f"limit of {limit_s:g} s; retry after {retry_after_s} s"
        )


@dataclass(eq=False)
class _Job:
    future: asyncio.Future
    det: Any = None
    items: Sequence[Any] | None = None  # a predict request's images
    fn: Callable[[], Any] | None = None  # or one exclusive call (an explanation)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def n_images(self) -> int:
        return len(self.items) if self.items is not None else 0


class BatchQueue:
    """FIFO of model work with dynamic batching; see the module docstring.

    ``start()`` must run inside the event loop that serves requests (the app's lifespan).
    """

    def __init__(self, *, workers: int, batch_size: int, batch_window_s: float, queue_timeout_s: float,
                 retry_after_s: int = 1):
        self.workers = workers
        self.batch_size = batch_size
        self.batch_window_s = batch_window_s
        self.queue_timeout_s = queue_timeout_s
        self.retry_after_s = retry_after_s
        self._pending: deque[_Job] = deque()
        self._inflight: dict[int, tuple[float, float]] = {}  # worker -> (start, estimated seconds)
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []
        self.s_per_image: float | None = None
        self.s_per_call: float | None = None
        self.batches = 0
        self.images = 0
        self.max_batch_images = 0
        self.shed = 0

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._tasks:
            return
        self._wakeup = asyncio.Event()
        self._tasks = [asyncio.get_running_loop().create_task(self._worker(i), name=f"mpft-model-worker-{i}")
                       for i in range(self.workers)]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        while self._pending:
            self._pending.popleft().future.cancel()

    # ---- measurements ----------------------------------------------------------------------------

    def observe_predict(self, n_images: int, seconds: float) -> None:
        """Fold one measured ``predict`` of ``n_images`` into the seconds-per-image estimate."""
        if n_images <= 0 or seconds < 0:
            return
        s = seconds / n_images
        self.s_per_image = s if self.s_per_image is None else (1 - _EMA_ALPHA) * self.s_per_image + _EMA_ALPHA * s

    def _observe_call(self, seconds: float) -> None:
        prev = self.s_per_call
        self.s_per_call = seconds if prev is None else (1 - _EMA_ALPHA) * prev + _EMA_ALPHA * seconds

    def _cost(self, job: _Job) -> float:
        if job.fn is not None:
            # an explanation is at least one forward pass until one has been measured
            return self.s_per_call or self.s_per_image or _EPS_S
        return max(job.n_images * (self.s_per_image or 0.0), _EPS_S)

    def expected_wait_s(self) -> float:
        """Seconds a request arriving now is expected to wait before a worker takes it."""
        if not self._pending and len(self._inflight) < self.workers:
            return 0.0
        now = time.monotonic()
        # running work has strictly positive time left, even when it overran its estimate
        left = sum(max(est - (now - t0), _EPS_S) for t0, est in self._inflight.values())
        ahead = sum(self._cost(j) for j in self._pending if not j.future.done())
        return (left + ahead) / self.workers

    def stats(self) -> dict[str, Any]:
        """Counters and estimates, for ``/readyz`` and the load test."""
        return {
            "workers": self.workers,
            "batch_size": self.batch_size,
            "queued_requests": sum(1 for j in self._pending if not j.future.done()),
            "in_flight": len(self._inflight),
            "batches": self.batches,
            "images": self.images,
            "mean_batch_images": round(self.images / self.batches, 2) if self.batches else None,
            "max_batch_images": self.max_batch_images,
            "s_per_image": round(self.s_per_image, 4) if self.s_per_image is not None else None,
            "expected_wait_s": round(self.expected_wait_s(), 3),
            "shed": self.shed,
        }

    # ---- requests --------------------------------------------------------------------------------

    async def predict(self, det: Any, items: Sequence[Any]) -> list[Any]:
        """Score ``items`` with ``det.predict``, possibly in one batch with other requests' items.

        Raises:
            QueueFull: the expected wait exceeds ``queue_timeout_s``; nothing was queued.
        """
        return await self._submit(_Job(asyncio.get_running_loop().create_future(), det=det, items=list(items)))

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` in a worker thread, alone, when its turn in the queue comes (explanations)."""
        return await self._submit(_Job(asyncio.get_running_loop().create_future(), fn=fn))

    async def _submit(self, job: _Job) -> Any:
        if not self._tasks:
            raise RuntimeError("the model queue is not running (the app's lifespan did not start)")
        wait = self.expected_wait_s()
        if wait > self.queue_timeout_s:
            self.shed += 1
            # come back when the queue should have drained to an admissible wait
            retry = max(self.retry_after_s, math.ceil(wait - self.queue_timeout_s))
            raise QueueFull(wait, self.queue_timeout_s, retry)
        self._pending.append(job)
        assert self._wakeup is not None
        self._wakeup.set()
        try:
            return await job.future
        finally:
            # a request that went away (its task was cancelled) must not be scored
            if not job.future.done():
                job.future.cancel()

    # ---- workers ---------------------------------------------------------------------------------

    def _take(self) -> list[_Job]:
        """The next unit of work: one exclusive call, or FIFO predict jobs up to ``batch_size`` images."""
        jobs: list[_Job] = []
        n = 0
        while self._pending:
            job = self._pending[0]
            if job.future.done():  # cancelled while waiting
                self._pending.popleft()
                continue
            if job.fn is not None:
                if not jobs:
                    self._pending.popleft()
                    jobs.append(job)
                break
            if jobs and (n + job.n_images > self.batch_size or job.det is not jobs[0].det):
                break
            self._pending.popleft()
            jobs.append(job)
            n += job.n_images
        return jobs

    async def _worker(self, wid: int) -> None:
        assert self._wakeup is not None
        while True:
            was_idle = False
            while not self._pending:
                was_idle = True
                self._wakeup.clear()
                await self._wakeup.wait()
            head = self._pending[0]
            queued_images = sum(j.n_images for j in self._pending)
            if was_idle and head.fn is None and self.batch_window_s > 0 and queued_images < self.batch_size:
                # an idle model waits a moment so that a burst of requests shares one forward pass;
                # a busy one needs no window: requests queue up while it works
                await asyncio.sleep(self.batch_window_s)
            jobs = self._take()
            if jobs:
                await self._run(wid, jobs)

    async def _run(self, wid: int, jobs: list[_Job]) -> None:
        t0 = time.monotonic()
        self._inflight[wid] = (t0, sum(self._cost(j) for j in jobs))
        try:
            if jobs[0].fn is not None:
                result = await run_in_threadpool(jobs[0].fn)
                self._observe_call(time.monotonic() - t0)
                _resolve(jobs[0], result)
                return
            det = jobs[0].det
            items = [x for j in jobs for x in j.items or ()]
            preds = await run_in_threadpool(lambda: det.predict(items, batch_size=self.batch_size))
            if len(preds) != len(items):
                raise RuntimeError(f"the detector returned {len(preds)} results for {len(items)} images")
            self.observe_predict(len(items), time.monotonic() - t0)
            self.batches += 1
            self.images += len(items)
            self.max_batch_images = max(self.max_batch_images, len(items))
            start = 0
            for j in jobs:
                _resolve(j, list(preds[start:start + j.n_images]))
                start += j.n_images
        except Exception as exc:  # noqa: BLE001 - handed to each waiting request, which reports it
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(exc)
        finally:
            self._inflight.pop(wid, None)
            for j in jobs:  # only on cancellation (shutdown) is anything left unresolved
                if not j.future.done():
                    j.future.cancel()


def _resolve(job: _Job, value: Any) -> None:
    if not job.future.done():
        job.future.set_result(value)
