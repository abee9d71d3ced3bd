"""The model queue over real HTTP: concurrent requests share forward passes; load is shed only
when the queue's expected wait exceeds its timeout."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from mpft.serve import ServeSettings, create_app
from tests.kit import image_bytes
from tests.serve.conftest import FakeDetector, live_server

PREDICT = "/api/v1/predict"


def _queued(app) -> int | None:
    queue = getattr(app.state, "queue", None)
    return None if queue is None else queue.stats()["queued_requests"]


def _wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def _post(url: str, name: str, data: bytes) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as c:
        return c.post(PREDICT, files=[("files", (name, data, "image/png"))])


def test_concurrent_requests_are_scored_in_one_forward_pass():
    fake = FakeDetector(block=True, by_content=True)
    app = create_app(lambda: fake, ServeSettings(warmup=False))
    images = [image_bytes(seed=100 + i) for i in range(7)]
    with live_server(app) as url, ThreadPoolExecutor(7) as pool:
        assert app.state.model.wait(10)
        first = pool.submit(_post, url, "0.png", images[0])
        assert fake.entered.wait(10), "the first request never reached the detector"
        rest = [pool.submit(_post, url, f"{i}.png", images[i]) for i in range(1, 7)]
        _wait_for(lambda: _queued(app) == 6)
        fake.gate.set()
        responses = [first.result(30)] + [f.result(30) for f in rest]
    assert [r.status_code for r in responses] == [200] * 7, [r.text for r in responses]
    # the six requests that queued while the model was busy shared its next call
    assert fake.batches == [1, 6]
    for i, r in enumerate(responses):
        [res] = r.json()["results"]
        assert res["filename"] == f"{i}.png"
        assert res["probability"] == pytest.approx(fake.probability_of(images[i]))  # its own result


def test_sixteen_concurrent_clients_get_no_503_with_default_settings():
    # 0.1 s per model call whatever its size: one call per request could not keep up with 16 clients
    fake = FakeDetector(delay_s=0.1)
    app = create_app(lambda: fake, ServeSettings())
    img = image_bytes(seed=7)
    with live_server(app) as url:
        assert app.state.model.wait(10)
        n_warmup = len(fake.batches)
        local = threading.local()

        def one(i: int) -> int:
            if not hasattr(local, "c"):
                local.c = httpx.Client(base_url=url, timeout=30)
            return local.c.post(PREDICT, files=[("files", (f"{i}.png", img, "image/png"))]).status_code

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(one, range(64)))
    assert statuses == [200] * 64
    scored = fake.batches[n_warmup:]
    assert sum(scored) == 64
    assert len(scored) <= 16, f"{len(scored)} model calls for 64 requests: not batched ({scored})"


def test_sheds_load_only_when_the_expected_wait_exceeds_the_queue_timeout():
    # warm-up measures 0.3 s per 1-image batch; with one request running past its estimate, the
    # n-th queued request (batch_size 1: one batch each) waits ~0.3 * (n - 1) s: four fit under
    # 1.0 s, a fifth would not
    fake = FakeDetector(delay_s=0.3, by_content=True)
    app = create_app(lambda: fake, ServeSettings(max_concurrency=1, queue_timeout_s=1.0, retry_after_s=1,
                                                 batch_size=1))
    images = [image_bytes(seed=200 + i) for i in range(6)]
    with live_server(app) as url, ThreadPoolExecutor(6) as pool:
        assert app.state.model.wait(10)
        fake.gate.clear()
        fake.entered.clear()
        first = pool.submit(_post, url, "0.png", images[0])
        assert fake.entered.wait(10)
        time.sleep(0.4)  # the running call is now past its 0.3 s estimate
        queued = []
        for i in range(1, 5):
            queued.append(pool.submit(_post, url, f"{i}.png", images[i]))
            _wait_for(lambda n=i: _queued(app) == n)
        refused = _post(url, "5.png", images[5])
        fake.gate.set()
        responses = [first.result(30)] + [f.result(30) for f in queued]
    assert refused.status_code == 503, refused.text
    assert "expected wait" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    assert [r.status_code for r in responses] == [200] * 5
    for i, r in enumerate(responses):
        assert r.json()["results"][0]["probability"] == pytest.approx(fake.probability_of(images[i]))
    assert app.state.queue.stats()["shed"] == 1


def test_requests_that_join_a_queued_batch_do_not_add_to_the_wait():
    import asyncio

    from mpft.serve.batching import BatchQueue, QueueFull

    async def scenario() -> list[str]:
        fake = FakeDetector(block=True)
        q = BatchQueue(workers=1, batch_size=4, batch_window_s=0, queue_timeout_s=1.5)
        q.observe_predict(1, 1.0)
        q.observe_predict(4, 1.0)  # any batch takes 1 s: the cost is all fixed
        q.start()
        tasks = [asyncio.create_task(q.predict(fake, [b"running"]))]
        await asyncio.to_thread(fake.entered.wait, 10)
        await asyncio.sleep(1.1)  # the running batch is past its estimate: ~0 s left
        outcome = []
        try:
            # 4 fit in the next batch (no wait), 4 more in the one after (1 s), the 9th is 2 s away
            for i in range(9):
                task = asyncio.create_task(q.predict(fake, [bytes([i])]))
                await asyncio.sleep(0.01)
                if task.done() and isinstance(task.exception(), QueueFull):
                    outcome.append("shed")
                else:
                    outcome.append("queued")
                    tasks.append(task)
        finally:
            fake.gate.set()
            await asyncio.gather(*tasks)
            await q.stop()
        assert fake.batches == [1, 4, 4]
        return outcome

    assert asyncio.run(scenario()) == ["queued"] * 8 + ["shed"]


def test_batch_cost_line_is_fitted_to_measurements():
    from mpft.serve.batching import BatchCost

    cost = BatchCost()
    assert cost(16) > 0  # before any measurement: small but not zero
    cost.observe(1, 2.0)
    assert cost(8) == pytest.approx(16.0)  # one size seen: proportional, an upper bound
    cost.observe(16, 12.5)
    assert cost.a == pytest.approx(1.3) and cost.b == pytest.approx(0.7)
    assert cost(16) == pytest.approx(12.5)
    flat = BatchCost()
    flat.observe(1, 5.0)
    flat.observe(8, 4.0)  # noise: the bigger batch looked cheaper
    assert flat.b == 0 and flat(16) == pytest.approx(4.5)


def test_a_client_that_left_the_queue_is_not_scored():
    import asyncio

    from mpft.serve.batching import BatchQueue

    async def scenario() -> list[int]:
        fake = FakeDetector(by_content=True)
        q = BatchQueue(workers=1, batch_size=16, batch_window_s=0.05, queue_timeout_s=10)
        q.start()
        try:
            keep = asyncio.create_task(q.predict(fake, [b"a"]))
            gone = asyncio.create_task(q.predict(fake, [b"b", b"c"]))
            await asyncio.sleep(0.01)  # both queued, inside the batch window
            gone.cancel()
            [res] = await keep
            assert res.probability == pytest.approx(fake.probability_of(b"a"))
            return fake.batches
        finally:
            await q.stop()

    assert asyncio.run(scenario()) == [1]
