"""The embedding micro-batcher on a fake engine that records every encode call."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from errors import EngineFailure, InvalidRequest, QueueFull, Unavailable
from models.fake_embedding import FakeEmbeddingEngine
from scheduler.embedding_batcher import EmbeddingBatcher


def expected(engine: FakeEmbeddingEngine, texts: list[str]) -> np.ndarray:
    return np.stack([engine.vector(t) for t in texts])


async def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.002)


async def occupy(batcher: EmbeddingBatcher, engine: FakeEmbeddingEngine, text: str = "busy") -> asyncio.Task:
    """Make the model busy: one request stuck inside encode until engine.release()."""
    engine.hold()
    task = asyncio.create_task(batcher.embed([text]))
    await wait_until(lambda: batcher.busy and engine.entered.is_set())
    return task


@pytest.mark.asyncio
async def test_lone_request_on_idle_batcher_is_not_delayed():
    engine = FakeEmbeddingEngine()
    async with EmbeddingBatcher(engine, max_batch=64, max_wait_ms=2000, max_queue=100) as batcher:
        await batcher.embed(["warm-up"])
        await asyncio.sleep(0.05)  # back to idle, longer than nothing but far shorter than max_wait
        started = time.perf_counter()
        rows = await batcher.embed(["hello"])
        elapsed = time.perf_counter() - started
    assert elapsed < 1.0, f"lone request took {elapsed * 1000:.1f} ms: it waited for max_wait_ms=2000"
    np.testing.assert_allclose(rows, expected(engine, ["hello"]))
    assert engine.batch_sizes == [1, 1]


@pytest.mark.asyncio
async def test_concurrent_requests_share_batches_never_beyond_max():
    engine = FakeEmbeddingEngine(delay_s=0.01)
    async with EmbeddingBatcher(engine, max_batch=8, max_wait_ms=5, max_queue=1000) as batcher:
        first = await occupy(batcher, engine)
        texts = [[f"client {c} input {i}" for i in range(c % 3 + 1)] for c in range(30)]
        tasks = [asyncio.create_task(batcher.embed(t)) for t in texts]
        await wait_until(lambda: batcher.queue_depth == sum(map(len, texts)))
        engine.release()
        results = await asyncio.gather(first, *tasks)
    sizes = engine.batch_sizes
    assert max(sizes) == 8 and all(s <= 8 for s in sizes)
    assert sum(sizes) == 1 + sum(map(len, texts))
    assert len(sizes) < 1 + sum(map(len, texts))  # fewer calls than inputs: batching happened
    for t, rows in zip(texts, results[1:]):
        np.testing.assert_allclose(rows, expected(engine, t))  # each gets its own rows, in order


@pytest.mark.asyncio
async def test_closed_loop_clients_settle_into_full_batches():
    """Clients that send again as soon as they are answered ride together, not in alternating halves.

    The first client's lone request goes at once and the other seven queue behind it; when it is
    answered it comes straight back, and the batcher waits (up to max_wait) for it instead of
    running the seven without it. Without that wait the batches stay split (1, 7, 1, 7, ...)."""
    engine = FakeEmbeddingEngine(delay_s=0.05)  # a batch takes longer than max_wait, as real ones do
    clients, rounds = 8, 6
    async with EmbeddingBatcher(engine, max_batch=64, max_wait_ms=10, max_queue=1000) as batcher:
        async def client(c: int) -> None:
            for r in range(rounds):
                await batcher.embed([f"client {c} round {r}"])

        first = asyncio.create_task(client(0))
        await wait_until(lambda: batcher.busy)
        await asyncio.gather(first, *(client(c) for c in range(1, clients)))
    sizes = engine.batch_sizes
    assert sum(sizes) == clients * rounds
    assert sizes == [1] + [clients] * (rounds - 1) + [clients - 1], sizes  # client 0 is one batch ahead


@pytest.mark.asyncio
async def test_large_request_is_split_and_reassembled_in_order():
    engine = FakeEmbeddingEngine()
    texts = [f"sentence number {i}" for i in range(203)]
    async with EmbeddingBatcher(engine, max_batch=16, max_wait_ms=1, max_queue=1000) as batcher:
        rows = await batcher.embed(texts)
    assert rows.shape == (203, engine.dimensions) and rows.dtype == np.float32
    np.testing.assert_allclose(rows, expected(engine, texts))
    assert all(s <= 16 for s in engine.batch_sizes) and sum(engine.batch_sizes) == 203


@pytest.mark.asyncio
async def test_large_request_does_not_starve_a_later_small_one():
    engine = FakeEmbeddingEngine(delay_s=0.005)
    big = [f"big {i}" for i in range(400)]
    async with EmbeddingBatcher(engine, max_batch=10, max_wait_ms=0, max_queue=1000) as batcher:
        big_task = asyncio.create_task(batcher.embed(big))
        await wait_until(lambda: len(engine.batches) >= 2)
        calls_before = len(engine.batches)  # the batch now running has index calls_before - 1
        small = await batcher.embed(["small one"])
        assert not big_task.done()  # the single input did not wait for all 400
        big_rows = await big_task
    np.testing.assert_allclose(small, expected(engine, ["small one"]))
    np.testing.assert_allclose(big_rows, expected(engine, big))
    small_batch = next(i for i, b in enumerate(engine.batches) if "small one" in b)
    assert small_batch <= calls_before + 1  # the next batch (or, if one was cut meanwhile, the one after)
    assert len(engine.batches[small_batch]) == 10  # and the big request still filled the rest


@pytest.mark.asyncio
async def test_failure_reaches_every_waiter_of_the_batch_and_serving_continues():
    engine = FakeEmbeddingEngine()
    async with EmbeddingBatcher(engine, max_batch=64, max_wait_ms=5, max_queue=100) as batcher:
        first = await occupy(batcher, engine)
        engine.fail_next(RuntimeError("CUDA exploded\nTraceback (most recent call last): ..."))
        waiters = [asyncio.create_task(batcher.embed([f"w{i}", f"x{i}"])) for i in range(5)]
        await wait_until(lambda: batcher.queue_depth == 10)
        engine.release()
        await first  # the batch before the failing one is unaffected
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert engine.batch_sizes == [1, 10]
        assert all(isinstance(r, EngineFailure) for r in results)
        assert len({id(r) for r in results}) == 5  # one exception object per waiter
        assert "CUDA exploded" not in results[0].message  # the engine's words are for the log only
        assert "CUDA exploded" in results[0].detail and "Traceback" not in results[0].detail
        rows = await batcher.embed(["after the failure"])
        np.testing.assert_allclose(rows, expected(engine, ["after the failure"]))
        assert batcher.batches_failed == 1


@pytest.mark.asyncio
async def test_cancelled_waiters_are_skipped_before_encode():
    engine = FakeEmbeddingEngine()
    async with EmbeddingBatcher(engine, max_batch=64, max_wait_ms=5, max_queue=100) as batcher:
        first = await occupy(batcher, engine)
        gone = asyncio.create_task(batcher.embed(["gone 1", "gone 2"]))
        kept = asyncio.create_task(batcher.embed(["kept"]))
        await wait_until(lambda: batcher.queue_depth == 3)
        gone.cancel()
        await asyncio.gather(gone, return_exceptions=True)
        assert batcher.queue_depth == 1
        engine.release()
        await first
        np.testing.assert_allclose(await kept, expected(engine, ["kept"]))
    assert "gone 1" not in engine.texts_seen and "gone 2" not in engine.texts_seen
    assert engine.batch_sizes == [1, 1]


@pytest.mark.asyncio
async def test_full_queue_raises_queue_full_at_once():
    engine = FakeEmbeddingEngine()
    async with EmbeddingBatcher(engine, max_batch=4, max_wait_ms=5, max_queue=5) as batcher:
        first = await occupy(batcher, engine)
        waiting = asyncio.create_task(batcher.embed(["a", "b", "c", "d"]))
        await wait_until(lambda: batcher.queue_depth == 4)
        with pytest.raises(QueueFull) as caught:  # the engine is held: waiting for room would never end
            await asyncio.wait_for(batcher.embed(["e", "f"]), 5)
        assert caught.value.headers() == {"Retry-After": "1"}
        with pytest.raises(InvalidRequest):
            await batcher.embed(["x"] * 6)  # could never fit, even in an empty queue
        engine.release()
        await asyncio.gather(first, waiting)
        assert (await batcher.embed(["e", "f"])).shape == (2, engine.dimensions)


@pytest.mark.asyncio
async def test_stop_answers_every_waiter_queued_or_in_flight():
    engine = FakeEmbeddingEngine()
    batcher = EmbeddingBatcher(engine, max_batch=2, max_wait_ms=5, max_queue=100)
    await batcher.start()
    in_flight = await occupy(batcher, engine)
    queued = [asyncio.create_task(batcher.embed([f"q{i}"] * 3)) for i in range(4)]
    await wait_until(lambda: batcher.queue_depth == 12)
    await asyncio.wait_for(batcher.stop(), 2)
    engine.release()  # let the fake's thread finish; its result is discarded
    results = await asyncio.wait_for(asyncio.gather(in_flight, *queued, return_exceptions=True), 2)
    assert all(isinstance(r, Unavailable) for r in results)
    with pytest.raises(Unavailable):
        await batcher.embed(["after stop"])


@pytest.mark.asyncio
async def test_listeners_counters_and_the_decode_helper():
    engine = FakeEmbeddingEngine()
    batches, waits = [], []
    async with EmbeddingBatcher(engine, max_batch=64, max_wait_ms=5, max_queue=100) as batcher:
        batcher.batch_listeners.append(lambda size, seconds: batches.append((size, seconds)))
        batcher.batch_listeners.append(lambda size, seconds: 1 / 0)  # a broken hook changes nothing
        batcher.queue_listeners.append(waits.append)
        await batcher.embed(["one", "two"])
        assert await batcher.decode([1, 2]) == "t1 t2"
        assert (await batcher.embed([])).shape == (0, engine.dimensions)
    assert [size for size, _ in batches] == [2] and batches[0][1] >= 0
    assert len(waits) == 1 and waits[0] >= 0
    assert batcher.batches_run == 1 and batcher.inputs_embedded == 2


@pytest.mark.asyncio
async def test_random_load_with_cancellations_and_failures_never_hangs():
    import random

    rng = random.Random(7)
    engine = FakeEmbeddingEngine(delay_s=0.001)
    async with EmbeddingBatcher(engine, max_batch=16, max_wait_ms=2, max_queue=10_000) as batcher:
        requests = [[f"r{r}-{i}" for i in range(rng.randint(1, 40))] for r in range(150)]
        tasks = []
        for r, texts in enumerate(requests):
            tasks.append(asyncio.create_task(batcher.embed(texts)))
            if r % 40 == 0:
                engine.fail_next()
            if r % 7 == 3:
                tasks[rng.randrange(len(tasks))].cancel()
            await asyncio.sleep(rng.choice([0, 0, 0.001]))
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 20)
        assert batcher.queue_depth == 0 and not batcher.busy
    ok = 0
    for texts, result in zip(requests, results):
        if isinstance(result, np.ndarray):
            np.testing.assert_allclose(result, expected(engine, texts))
            ok += 1
        else:
            assert isinstance(result, (EngineFailure, asyncio.CancelledError))
    assert ok > 30 and all(s <= 16 for s in engine.batch_sizes)


# ---- the worker task dies (a bug): the service says failed, not ready -------------------------


async def ready_service(engine: FakeEmbeddingEngine):
    from scheduler.embedding_service import EmbeddingService

    service = EmbeddingService("fake-embedding", lambda: engine, lambda e: EmbeddingBatcher(e, max_batch=8, max_wait_ms=1))
    await service.start()
    await wait_until(lambda: service.state != "loading")
    assert service.state == "ready" and service.reason is None
    return service


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["bug", "cancelled"])
async def test_a_dead_worker_makes_the_service_failed_and_requests_a_clear_503(how):
    from api.system import embedding_health

    engine = FakeEmbeddingEngine()
    service = await ready_service(engine)
    batcher = service.require()
    try:
        assert (await batcher.embed(["before"])).shape == (1, 8)
        if how == "bug":
            def broken():
                raise RuntimeError("a bug in /opt/secret/batcher.py")
            batcher._take_batch = broken  # the next batch kills the worker task
            with pytest.raises(EngineFailure):  # the waiter is answered, not left hanging
                await asyncio.wait_for(batcher.embed(["kills it"]), 5)
        else:
            batcher._worker.cancel()  # killed from outside, not by stop()
            await wait_until(lambda: batcher.died is not None)
        assert service.state == "failed"
        assert service.reason == "the embedding worker stopped" and "/opt" not in service.reason
        with pytest.raises(Unavailable) as info:  # 503, saying what happened
            service.require()
        assert info.value.status == 503 and "worker stopped" in info.value.message
        health = embedding_health("fake-embedding", service)
        assert health == {"embedding_model": "fake-embedding", "embedding_state": "failed",
                          "embedding_error": "the embedding worker stopped"}
        if how == "bug":
            assert "/opt/secret/batcher.py" in service.error  # the detail, for the log and /metrics
    finally:
        await service.stop()


@pytest.mark.asyncio
async def test_stop_is_not_a_death():
    engine = FakeEmbeddingEngine()
    service = await ready_service(engine)
    await service.stop()
    assert service.batcher.died is None and service.state == "ready" and service.reason is None
