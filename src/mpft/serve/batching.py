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
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

__all__ = ["BatchQueue", "QueueFull"]

log = logging.getLogger(__name__)

# Work whose cost is not measured yet still counts a little, so "nothing ahead" stays exact
# (queue_timeout_s=0 admits a request only when the model is idle and nothing is queued).
_EPS_S = 1e-3
_EMA_ALPHA = 0.3
_WINDOW = 16  # recent batches the cost line is fitted to: it follows a machine's changing load


class BatchCost:
    """Seconds one ``predict`` of n images takes, ``a + b * n``, fitted to recent measurements.

    Why a line and not seconds per image: a forward pass has a fixed cost, large on a busy CPU
    (a 1-image batch took 4.4 s and a 16-image one 12.9 s on a shared 2-core machine), so a
    per-image figure from small batches would call a full batch five times too expensive and
    shed load that the queue can serve.
    """

    def __init__(self) -> None:
        self._obs: deque[tuple[int, float]] = deque(maxlen=_WINDOW)
        self.a = 0.0
        self.b: float | None = None  # None: nothing measured yet

    def observe(self, n: int, seconds: float) -> None:
        if n <= 0 or seconds < 0:
            return
        self._obs.append((n, seconds))
        ns = [float(x) for x, _ in self._obs]
        ts = [t for _, t in self._obs]
        mean_n, mean_t = sum(ns) / len(ns), sum(ts) / len(ts)
        var_n = sum((x - mean_n) ** 2 for x in ns)
        if var_n == 0:  # one batch size seen: all of the cost is per image, an upper bound
            self.a, self.b = 0.0, mean_t / mean_n
            return
        b = sum((x - mean_n) * (t - mean_t) for x, t in zip(ns, ts, strict=True)) / var_n
        a = mean_t - b * mean_n
        if b < 0:  # noise: bigger batches looked cheaper; charge the mean for any size
            a, b = mean_t, 0.0
        elif a < 0:
            a, b = 0.0, mean_t / mean_n
        self.a, self.b = a, b

    def __call__(self, n: int) -> float:
        """Expected seconds for a batch of ``n`` images (a tiny positive figure before any measurement)."""
        if self.b is None:
            return _EPS_S
        return max(self.a + self.b * n, _EPS_S)


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
    future: asyncio.Future | None  # None: a hypothetical job, for estimates
    det: Any = None
    items: Sequence[Any] | None = None  # a predict request's images
    fn: Callable[[], Any] | None = None  # or one exclusive call (an explanation)

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
        self.batch_cost = BatchCost()
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
        """Fold one measured ``predict`` of ``n_images`` into the batch-cost estimate."""
        self.batch_cost.observe(n_images, seconds)

    def _observe_call(self, seconds: float) -> None:
        prev = self.s_per_call
        self.s_per_call = seconds if prev is None else (1 - _EMA_ALPHA) * prev + _EMA_ALPHA * seconds

    def _call_cost(self) -> float:
        # an explanation is at least one forward pass until one has been measured
        return self.s_per_call if self.s_per_call is not None else self.batch_cost(1)

    def _plan(self, extra: _Job | None = None) -> list[tuple[float, bool]]:
        """The queue cut into the units ``_take`` will run: (expected seconds, holds ``extra``)."""
        units: list[tuple[float, bool]] = []
        n = 0
        open_batch = False  # the last unit is a predict batch that may still take jobs
        jobs = [j for j in self._pending if not _gone(j)] + ([extra] if extra is not None else [])
        det = jobs[0].det if jobs else None
        for j in jobs:
            if j.fn is not None:
                units.append((self._call_cost(), j is extra))
                open_batch = False
                continue
            if open_batch and n + j.n_images <= self.batch_size and (j.det is det or j.future is None):
                n += j.n_images
                units[-1] = (self.batch_cost(n), units[-1][1] or j is extra)
            else:
                n = j.n_images
                units.append((self.batch_cost(n), j is extra))
                open_batch = True
        return units

    def expected_wait_s(self, job: _Job | None = None) -> float:
        """Seconds until a worker starts on ``job`` if it were queued now (a 1-image request if None).

        The queue is cut into batches as the workers will cut it; the job's wait is the running
        work's time left plus the batches ahead of the one it would join.
        """
        if job is None:
            job = _Job(None, items=[None])
        if not self._pending and len(self._inflight) < self.workers:
            return 0.0
        now = time.monotonic()
        # running work has strictly positive time left, even when it overran its estimate
        left = sum(max(est - (now - t0), _EPS_S) for t0, est in self._inflight.values())
        ahead = 0.0
        for cost, holds_job in self._plan(job):
            if holds_job:
                break
            ahead += cost
        if len(self._inflight) < self.workers and ahead == 0.0:
            return 0.0  # a worker is free and the job would be in the first batch
        return (left + ahead) / self.workers

    def stats(self) -> dict[str, Any]:
        """Counters and estimates, for ``/readyz`` and the load test."""
        return {
            "workers": self.workers,
            "batch_size": self.batch_size,
            "queued_requests": sum(1 for j in self._pending if not _gone(j)),
            "in_flight": len(self._inflight),
            "batches": self.batches,
            "images": self.images,
            "mean_batch_images": round(self.images / self.batches, 2) if self.batches else None,
            "max_batch_images": self.max_batch_images,
            "batch_cost_s": ({"fixed": round(self.batch_cost.a, 4), "per_image": round(self.batch_cost.b, 4)}
                             if self.batch_cost.b is not None else None),
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
        wait = self.expected_wait_s(job)
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
            if _gone(job):  # cancelled while waiting
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
        n = sum(j.n_images for j in jobs)
        self._inflight[wid] = (t0, self._call_cost() if jobs[0].fn is not None else self.batch_cost(n))
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


def _gone(job: _Job) -> bool:
    return job.future is not None and job.future.done()


def _resolve(job: _Job, value: Any) -> None:
    if job.future is not None and not job.future.done():
        job.future.set_result(value)
