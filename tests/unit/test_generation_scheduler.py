"""The generation scheduler on FakeChatEngine: order, exclusivity, bounds, cancellation, timeouts, failures."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import aclosing

import pytest

from errors import EngineFailure, ModelLoadFailed, QueueFull, ServerError, Unavailable
from models.fake_chat import FakeChatEngine
from models.interfaces import SamplingParams
from scheduler.generation import GenerationScheduler

PARAMS = SamplingParams()


class GatedEngine(FakeChatEngine):
    """FakeChatEngine that can be held at its first piece, so a test decides when it runs on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def hold(self) -> None:
        self.entered.clear()
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def generate(self, prompt, params, on_text, **kwargs):
        def gated(piece: str) -> bool:
            self.entered.set()
            self.gate.wait(10)
            return on_text(piece)

        return super().generate(prompt, params, gated, **kwargs)


class Loader:
    """The scheduler's `load_engine`: one engine per model name, recorded with the thread it was made on."""

    def __init__(self, delay_s: float = 0.0, fail: dict[str, BaseException] | None = None):
        self.delay_s = delay_s
        self.fail = fail or {}
        self.engines: dict[str, list[GatedEngine]] = {}
        self.load_threads: dict[str, int] = {}
        self.calls: list[str] = []

    def __call__(self, name: str) -> GatedEngine:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]
        engine = GatedEngine(name, delay_s=self.delay_s)
        self.engines.setdefault(name, []).append(engine)
        self.load_threads[name] = threading.get_ident()
        return engine

    def engine(self, name: str = "a.gguf") -> GatedEngine:
        return self.engines[name][-1]


@pytest.fixture
async def make_scheduler():
    made: list[GenerationScheduler] = []

    async def make(loader: Loader | None = None, preload: str | None = "a.gguf", **options) -> GenerationScheduler:
        scheduler = GenerationScheduler(loader or Loader(), **options)
        await scheduler.start(preload=preload)
        if preload:
            await wait_until(lambda: scheduler.model_state(preload)[0] != "loading")
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        await scheduler.close(grace_s=1)


async def collect(job, timeout: float = 5.0) -> str:
    return "".join([delta.text async for delta in job.stream(timeout)])


async def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def wait_for_thread(event: threading.Event, timeout: float = 5.0) -> None:
    assert await asyncio.to_thread(event.wait, timeout), "engine never reached its first piece"


async def occupy(scheduler, loader) -> tuple:
    """Make the model busy: a job named "running" held inside the engine until engine.release()."""
    engine = loader.engine()
    engine.hold()
    running = scheduler.submit("a.gguf", "running", PARAMS)
    await wait_for_thread(engine.entered)
    return engine, running


# ---- order and exclusivity -------------------------------------------------------------------


async def test_jobs_run_in_arrival_order_one_at_a_time_on_one_thread(make_scheduler):
    loader = Loader(delay_s=0.002)
    scheduler = await make_scheduler(loader)
    prompts = [f"job {i} says hello there" for i in range(8)]
    jobs = [scheduler.submit("a.gguf", p, PARAMS) for p in prompts]
    # consume in reverse order: the order of consumers must not matter, only arrival
    texts = await asyncio.gather(*[collect(job) for job in reversed(jobs)])
    engine = loader.engine()
    assert engine.prompts == prompts
    assert list(reversed(texts)) == [p + " " for p in prompts]
    assert engine.max_active == 1
    assert len(engine.threads) == 1
    assert engine.threads == {loader.load_threads["a.gguf"]}  # created on the thread that runs it
    starts = [job.started_at for job in jobs]
    assert starts == sorted(starts)
    for before, after in zip(jobs, jobs[1:]):
        assert before.finished_at <= after.started_at  # strictly serial
    assert all(job.outcome.completion_tokens == 5 and job.outcome.finish_reason == "stop" for job in jobs)
    assert scheduler.pending == set()
    await wait_until(lambda: scheduler.running == 0)


async def test_outcome_and_timings_are_recorded(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader)
    loader.engine().enqueue(["Hel", "lo", "!"])
    job = scheduler.submit("a.gguf", "hi", SamplingParams(max_tokens=2))
    assert await collect(job) == "Hello"
    assert job.outcome.finish_reason == "length" and job.outcome.limit == "max_tokens"
    assert job.outcome.completion_tokens == 2
    assert 0 <= job.queue_time <= job.time_to_first_token
    assert job.generation_time >= 0


async def test_finished_jobs_reach_listeners(make_scheduler):
    scheduler = await make_scheduler()
    seen = []
    scheduler.listeners.append(seen.append)
    job = scheduler.submit("a.gguf", "one two", PARAMS)
    await collect(job)
    await wait_until(lambda: seen == [job])


# ---- admission -------------------------------------------------------------------------------


async def test_full_queue_is_refused_at_once_with_retry_after(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader, max_queue=2)
    engine, running = await occupy(scheduler, loader)
    waiting = [scheduler.submit("a.gguf", f"waiting {i}", PARAMS) for i in range(2)]
    with pytest.raises(QueueFull) as info:  # `submit` is synchronous: refused before anything awaits
        scheduler.submit("a.gguf", "one too many", PARAMS)
    error = info.value
    assert error.status == 429
    assert error.retry_after_s >= 1
    assert error.headers() == {"Retry-After": str(error.retry_after_s)}
    assert error.body()["error"]["type"] == "rate_limit_error"
    assert error.body()["error"]["code"] == "queue_full"
    assert scheduler.rejected == 1
    engine.release()
    assert [await collect(j) for j in [running, *waiting]] == ["running ", "waiting 0 ", "waiting 1 "]
    assert "one too many" not in engine.prompts
    # once the queue drained there is room again
    assert await collect(scheduler.submit("a.gguf", "later", PARAMS)) == "later "


async def test_submit_before_start_or_after_close_is_unavailable(make_scheduler):
    idle = GenerationScheduler(Loader())
    with pytest.raises(Unavailable):
        idle.submit("a.gguf", "x", PARAMS)
    scheduler = await make_scheduler()
    await scheduler.close()
    with pytest.raises(Unavailable, match="shutting down"):
        scheduler.submit("a.gguf", "x", PARAMS)


# ---- fairness between keys -------------------------------------------------------------------


async def test_another_keys_short_request_starts_after_one_job_of_a_big_request(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader)
    engine = loader.engine()
    engine.hold()
    big = [scheduler.submit("a.gguf", f"big {i}", PARAMS, scope="key-a") for i in range(16)]
    await wait_for_thread(engine.entered)  # "big 0" runs, held; 15 of key-a wait
    small = scheduler.submit("a.gguf", "small", PARAMS, scope="key-b")
    engine.release()
    texts = await asyncio.gather(*[collect(job) for job in [*big, small]])
    assert texts[-1] == "small "
    # after the job that was running, the next turn is key-b's, not key-a's 15 waiting jobs
    assert engine.prompts[:3] == ["big 0", "small", "big 1"]
    assert engine.prompts[2:] == [f"big {i}" for i in range(1, 16)]  # one key's jobs keep their order
    assert small.started_at <= big[1].started_at


async def test_keys_take_turns_and_each_keeps_its_own_order(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader)
    engine, running = await occupy(scheduler, loader)
    for i in range(3):
        scheduler.submit("a.gguf", f"a{i}", PARAMS, scope="key-a")
    for i in range(2):
        scheduler.submit("a.gguf", f"b{i}", PARAMS, scope="key-b")
    scheduler.submit("a.gguf", "c0", PARAMS, scope="key-c")
    scheduler.submit("a.gguf", "none0", PARAMS)  # no key: one more lane of its own
    engine.release()
    await wait_until(lambda: len(engine.prompts) == 8 and scheduler.running == 0)
    assert engine.prompts == ["running", "a0", "b0", "c0", "none0", "a1", "b1", "a2"]


async def test_a_key_over_its_share_is_refused_and_other_keys_still_get_in(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader, max_queue=4, max_queue_per_key=2)
    engine, running = await occupy(scheduler, loader)
    mine = [scheduler.submit("a.gguf", f"a{i}", PARAMS, scope="key-a") for i in range(2)]
    with pytest.raises(QueueFull) as info:
        scheduler.submit("a.gguf", "a2", PARAMS, scope="key-a")
    error = info.value
    assert error.status == 429 and error.body()["error"]["code"] == "queue_full"
    assert error.headers() == {"Retry-After": str(error.retry_after_s)} and error.retry_after_s >= 1
    assert "this API key already has 2 generation jobs waiting" in error.message
    assert "share of the queue is 2 (MAX_QUEUE_PER_KEY)" in error.message
    theirs = [scheduler.submit("a.gguf", f"b{i}", PARAMS, scope="key-b") for i in range(2)]  # the queue had room
    with pytest.raises(QueueFull, match=r"the generation queue is full \(4 requests waiting\)"):
        scheduler.submit("a.gguf", "c0", PARAMS, scope="key-c")
    assert scheduler.rejected == 2
    engine.release()
    assert [await collect(job) for job in [running, *mine, *theirs]] == ["running ", "a0 ", "a1 ", "b0 ", "b1 "]
    assert engine.prompts == ["running", "a0", "b0", "a1", "b1"]


async def test_a_request_bigger_than_a_keys_share_is_refused_whole_and_cannot_starve_another_key(make_scheduler):
    from types import SimpleNamespace

    from api.generation import GenerationService

    loader = Loader()
    scheduler = await make_scheduler(loader, max_queue=32, max_queue_per_key=16)
    service = GenerationService(scheduler, registry=None, max_n=4, max_prompts=16)
    model = SimpleNamespace(id="a.gguf")
    prompts = [f"p{i}" for i in range(16)]
    with pytest.raises(QueueFull) as info:
        service.submit(model, prompts, PARAMS, 2, scope="key-a")  # 32 jobs: all of MAX_QUEUE
    assert "this request needs 32 generation jobs (prompts × n)" in info.value.message
    assert "one API key may have at most 16 waiting (MAX_QUEUE_PER_KEY)" in info.value.message
    assert scheduler.pending == set() and scheduler.rejected == 1 and scheduler.cancelled == 0  # none was queued

    engine = loader.engine()
    engine.hold()
    big = service.submit(model, prompts, PARAMS, 1, scope="key-a")  # the largest the share allows
    await wait_for_thread(engine.entered)
    with pytest.raises(QueueFull, match="this API key already has 15 generation jobs waiting"):
        service.submit(model, ["one more", "and another"], PARAMS, 1, scope="key-a")  # 15 + 2 > 16
    small = service.submit(model, ["short"], PARAMS, 1, scope="key-b")
    engine.release()
    results = await asyncio.gather(service.complete(big), service.complete(small))
    assert [r.text for r in results[0]] == [p + " " for p in prompts]
    assert engine.prompts[:3] == ["p0", "short", "p1"]  # after the running job, key-b's turn
    assert "one more" not in engine.prompts and len(engine.prompts) == 17


# ---- cancellation ----------------------------------------------------------------------------


async def test_leaving_the_stream_stops_the_engine_within_a_token_and_the_next_job_runs(make_scheduler):
    loader = Loader(delay_s=0.02)
    scheduler = await make_scheduler(loader)
    engine = loader.engine()
    engine.enqueue([f"t{i} " for i in range(200)])
    job = scheduler.submit("a.gguf", "long one", PARAMS)
    nxt = scheduler.submit("a.gguf", "next one", PARAMS)
    received = []
    async with aclosing(job.stream(5)) as stream:
        async for piece in stream:
            received.append(piece)
            if len(received) == 3:
                break
    left_at = time.monotonic()
    assert job.cancelled and job.cancel_reason == "client"
    assert await collect(nxt) == "next one "
    assert time.monotonic() - left_at < 200 * loader.delay_s / 2  # well before the long job would have ended
    assert engine.stopped_early == ["long one"]
    assert job.outcome.completion_tokens <= len(received) + 2
    assert engine.prompts == ["long one", "next one"]
    assert scheduler.cancelled == 1


async def test_cancelling_the_consumer_task_stops_the_engine(make_scheduler):
    loader = Loader(delay_s=0.02)
    scheduler = await make_scheduler(loader)
    engine = loader.engine()
    engine.enqueue([f"t{i} " for i in range(200)])
    job = scheduler.submit("a.gguf", "long one", PARAMS)
    received = []

    async def consume():
        async for piece in job.stream(5):
            received.append(piece)

    task = asyncio.create_task(consume())
    await wait_until(lambda: len(received) >= 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: job.finished_at is not None, timeout=1)
    assert engine.stopped_early == ["long one"]
    assert job.outcome.completion_tokens <= len(received) + 2
    assert await collect(scheduler.submit("a.gguf", "after", PARAMS)) == "after "


async def test_queued_job_whose_consumer_left_is_skipped_and_frees_its_slot_at_once(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader, max_queue=1)
    engine, running = await occupy(scheduler, loader)
    abandoned = scheduler.submit("a.gguf", "abandoned", PARAMS)
    with pytest.raises(QueueFull):
        scheduler.submit("a.gguf", "no room", PARAMS)

    waiter = asyncio.create_task(collect(abandoned))
    await asyncio.sleep(0.02)
    waiter.cancel()  # the client went away while its job waited
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert abandoned.cancelled
    assert scheduler.pending == set()  # the slot is free before the engine moved on
    replacement = scheduler.submit("a.gguf", "replacement", PARAMS)

    engine.release()
    assert await collect(running) == "running "
    assert await collect(replacement) == "replacement "
    assert engine.prompts == ["running", "replacement"]  # never saw "abandoned"
    assert abandoned.started_at is None
    assert scheduler.cancelled == 1


async def test_job_cancelled_before_dispatch_is_never_run(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader)
    job = scheduler.submit("a.gguf", "gone", PARAMS)
    job.cancel()
    assert scheduler.pending == set()
    assert await collect(scheduler.submit("a.gguf", "kept", PARAMS)) == "kept "
    assert loader.engine().prompts == ["kept"]


# ---- timeouts --------------------------------------------------------------------------------


async def test_queue_timeout_is_unavailable_and_the_job_is_skipped(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader, queue_timeout_s=0.1)
    engine, running = await occupy(scheduler, loader)
    late = scheduler.submit("a.gguf", "late", PARAMS)
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await collect(late, timeout=scheduler.queue_timeout_s)
    assert scheduler.queue_timeout_s * 0.9 <= time.monotonic() - started < scheduler.queue_timeout_s * 10
    assert info.value.status == 503
    assert "generation queue" in info.value.message
    assert info.value.headers() == {"Retry-After": "1"}
    assert scheduler.pending == set()
    engine.release()
    assert await collect(running) == "running "
    assert await collect(scheduler.submit("a.gguf", "after", PARAMS)) == "after "
    assert engine.prompts == ["running", "after"]


async def test_generation_timeout_ends_with_finish_reason_length(make_scheduler):
    loader = Loader(delay_s=0.02)
    scheduler = await make_scheduler(loader, generation_timeout_s=0.15)
    engine = loader.engine()
    engine.enqueue([f"t{i} " for i in range(500)])
    job = scheduler.submit("a.gguf", "endless", PARAMS)
    started = time.monotonic()
    text = await collect(job)
    assert time.monotonic() - started < 1.5
    assert job.outcome.finish_reason == "length" and job.outcome.limit == "time"
    assert 0 < job.outcome.completion_tokens < 50
    assert text.startswith("t0 t1 ")
    assert engine.stopped_early == ["endless"]
    assert await collect(scheduler.submit("a.gguf", "next", PARAMS)) == "next "


async def test_leaving_during_prompt_evaluation_frees_the_model_within_a_batch(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader)
    engine = loader.engine()
    engine.prompt_s = 5.0  # a prompt that would hold the model for 5 s, asked to go on every 0.5 s
    job = scheduler.submit("a.gguf", "a very long prompt", PARAMS, scope="key-a")
    await wait_until(lambda: job.started_at is not None)
    job.cancel("client")
    engine.prompt_s = 0.0
    assert await collect(scheduler.submit("a.gguf", "next", PARAMS), timeout=10) == "next "
    assert job.outcome.completion_tokens == 0 and engine.prompts == ["a very long prompt", "next"]
    assert engine.scopes == ["key-a", None]  # the job's cache scope reaches the engine


async def test_the_generation_timeout_covers_prompt_evaluation(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader, generation_timeout_s=0.15)
    loader.engine().prompt_s = 5.0
    job = scheduler.submit("a.gguf", "a very long prompt", PARAMS)
    assert await collect(job, timeout=10) == ""
    assert (job.outcome.finish_reason, job.outcome.limit, job.outcome.completion_tokens) == ("length", "time", 0)


async def test_generation_timeout_keeps_text_held_for_a_possible_stop(make_scheduler):
    loader = Loader(delay_s=0.02)
    scheduler = await make_scheduler(loader, generation_timeout_s=0.15)
    engine = loader.engine()
    engine.enqueue(["x"] * 100 + ["END"])
    job = scheduler.submit("a.gguf", "p", SamplingParams(stop=("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxY",)))
    text = await collect(job)
    assert job.outcome.finish_reason == "length"
    # every generated "x" was reported: none is lost in the stop filter's hold-back
    assert text == "x" * job.outcome.completion_tokens


# ---- failures --------------------------------------------------------------------------------


async def test_engine_error_mid_generation_reaches_the_waiter_and_the_next_job_is_served(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader)
    engine = loader.engine()
    engine.enqueue(["partial ", "text ", RuntimeError("native crash")])
    failing = scheduler.submit("a.gguf", "bad", PARAMS)
    following = scheduler.submit("a.gguf", "good", PARAMS)
    received = []
    with pytest.raises(EngineFailure) as info:
        async for delta in failing.stream(5):
            received.append(delta.text)
    assert received == ["partial ", "text "]
    assert info.value.status == 500
    assert info.value.code == "engine_error"
    assert info.value.message == "the model failed during generation"  # stable: the engine's words are not sent
    assert "native crash" in info.value.detail and "a.gguf" in info.value.detail  # they go to the log
    assert await collect(following) == "good "
    assert scheduler.model_state("a.gguf") == ("ready", None)


async def test_server_errors_from_the_engine_pass_through_unchanged(make_scheduler):
    from errors import ContextLengthExceeded

    loader = Loader()
    scheduler = await make_scheduler(loader)
    loader.engine().enqueue([ContextLengthExceeded("too long", param="messages")])
    with pytest.raises(ContextLengthExceeded, match="too long"):
        await collect(scheduler.submit("a.gguf", "x", PARAMS))
    assert await collect(scheduler.submit("a.gguf", "fine", PARAMS)) == "fine "


@pytest.mark.parametrize(
    "failure", [ModelLoadFailed("broken.gguf is not a GGUF file"), OSError("Unable to instantiate model")]
)
async def test_model_load_failure_reaches_the_waiter_and_the_server_keeps_going(make_scheduler, failure):
    loader = Loader(fail={"broken.gguf": failure})
    scheduler = await make_scheduler(loader, max_loaded=1)
    assert await collect(scheduler.submit("a.gguf", "before", PARAMS)) == "before "
    first_engine = loader.engine()
    with pytest.raises(ModelLoadFailed) as info:
        await collect(scheduler.submit("broken.gguf", "x", PARAMS))
    assert info.value.status == 500 and info.value.code == "model_load_failed"
    assert "broken.gguf" in info.value.message
    assert str(failure) in info.value.message
    state, message = scheduler.model_state("broken.gguf")
    assert state == "failed" and "broken.gguf" in message
    # a second request tries the file again (it may have been replaced) and fails the same way
    with pytest.raises(ModelLoadFailed):
        await collect(scheduler.submit("broken.gguf", "y", PARAMS))
    assert loader.calls.count("broken.gguf") == 2
    # the good model loads again on demand and serves
    assert await collect(scheduler.submit("a.gguf", "after", PARAMS)) == "after "
    assert first_engine.closed
    assert loader.engine().prompts == ["after"]
    assert scheduler.pending == set()


async def test_failed_preload_is_reported_by_model_state(make_scheduler):
    loader = Loader(fail={"a.gguf": ModelLoadFailed("a.gguf: unknown architecture 'qwen3'")})
    scheduler = await make_scheduler(loader)
    assert scheduler.model_state("a.gguf") == ("failed", "a.gguf: unknown architecture 'qwen3'")
    assert scheduler.model_state("other.gguf") == ("unloaded", None)


# ---- several models --------------------------------------------------------------------------


async def test_second_model_on_demand_unloads_the_idle_one_when_one_may_be_loaded(make_scheduler):
    loader = Loader(delay_s=0.01)
    scheduler = await make_scheduler(loader, max_loaded=1)
    a = loader.engine("a.gguf")
    a.enqueue(["a1 ", "a2 ", "a3 "])
    job_a = scheduler.submit("a.gguf", "for a", PARAMS)
    job_b = scheduler.submit("b.gguf", "for b", PARAMS)
    text_a, text_b = await asyncio.gather(collect(job_a), collect(job_b))
    assert text_a == "a1 a2 a3 "  # the running job of a was not interrupted
    assert text_b == "for b "
    b = loader.engine("b.gguf")
    assert a.closed and not b.closed
    assert list(scheduler.workers) == ["b.gguf"]
    assert job_a.finished_at <= job_b.started_at
    assert scheduler.model_state("a.gguf") == ("unloaded", None)
    assert scheduler.model_state("b.gguf") == ("ready", None)


async def test_least_recently_used_idle_model_is_the_one_unloaded(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader, max_loaded=2)
    for model in ("a.gguf", "b.gguf", "a.gguf"):
        await collect(scheduler.submit(model, model, PARAMS))
    assert set(scheduler.workers) == {"a.gguf", "b.gguf"}
    await collect(scheduler.submit("c.gguf", "c", PARAMS))
    assert set(scheduler.workers) == {"a.gguf", "c.gguf"}
    assert loader.engine("b.gguf").closed
    assert not loader.engine("a.gguf").closed
    assert loader.calls == ["a.gguf", "b.gguf", "c.gguf"]  # a stayed loaded: not loaded twice


# ---- shutdown --------------------------------------------------------------------------------


async def test_close_answers_every_waiter_and_frees_the_engines(make_scheduler):
    loader = Loader(delay_s=0.01)
    scheduler = await make_scheduler(loader, max_loaded=1)
    engine = loader.engine()
    engine.enqueue([f"t{i} " for i in range(1000)])
    running = scheduler.submit("a.gguf", "running", PARAMS)
    waiting = [scheduler.submit("a.gguf", f"w{i}", PARAMS) for i in range(3)]
    other_model = scheduler.submit("b.gguf", "needs b", PARAMS)
    consumers = [asyncio.create_task(collect(job)) for job in [running, *waiting, other_model]]
    await wait_until(lambda: running.first_token_at is not None)

    started = time.monotonic()
    await scheduler.close(grace_s=0.1)
    results = await asyncio.wait_for(asyncio.gather(*consumers, return_exceptions=True), 2)
    assert time.monotonic() - started < 2
    # ended, not left hanging, and with an error: a cut-short text must not pass for a whole answer
    assert isinstance(results[0], Unavailable) and "shut down before" in results[0].message
    assert running.cancel_reason == "shutdown"
    for result in results[1:]:
        assert isinstance(result, Unavailable) and "shutting down" in result.message
    await wait_until(lambda: engine.closed, timeout=2)
    assert engine.prompts == ["running"]
    assert scheduler.workers == {}
    assert scheduler.pending == set()


async def test_retry_after_grows_with_the_queue_and_typical_generation_time(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader, max_queue=4)
    scheduler._recent_seconds = [2.0, 2.0, 2.0]
    engine, _ = await occupy(scheduler, loader)
    for i in range(4):
        scheduler.submit("a.gguf", f"w{i}", PARAMS)
    with pytest.raises(QueueFull) as info:
        scheduler.submit("a.gguf", "x", PARAMS)
    assert info.value.retry_after_s == 8  # 4 waiting × 2 s each on 1 worker
    engine.release()


async def test_errors_are_server_errors():
    # the HTTP layer maps exactly this tree; nothing the scheduler raises may fall outside it
    for error in (QueueFull("x"), Unavailable("x"), EngineFailure("x"), ModelLoadFailed("x")):
        assert isinstance(error, ServerError)


# ---- robustness ------------------------------------------------------------------------------


async def test_a_failing_listener_does_not_stop_the_worker(make_scheduler):
    scheduler = await make_scheduler()

    def broken_listener(job):
        raise RuntimeError("metrics bug")

    scheduler.listeners.append(broken_listener)
    assert await collect(scheduler.submit("a.gguf", "first", PARAMS)) == "first "
    assert await collect(scheduler.submit("a.gguf", "second", PARAMS), timeout=2) == "second "


async def test_an_engine_that_fails_to_close_does_not_stop_model_switching(make_scheduler):
    class BadCloseLoader(Loader):
        def __call__(self, name):
            engine = super().__call__(name)

            def close():
                engine.closed = True
                raise RuntimeError("native close failed")

            engine.close = close
            return engine

    loader = BadCloseLoader()
    scheduler = await make_scheduler(loader, max_loaded=1)
    assert await collect(scheduler.submit("b.gguf", "on b", PARAMS), timeout=2) == "on b "
    assert loader.engine("a.gguf").closed
    assert await collect(scheduler.submit("a.gguf", "on a", PARAMS), timeout=2) == "on a "


# ---- idle time ---------------------------------------------------------------------------------


async def test_the_engine_settles_when_its_queue_runs_empty_not_between_waiting_jobs(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader)
    engine = loader.engine()
    engine.hold()
    jobs = [scheduler.submit("a.gguf", f"job {i}", PARAMS) for i in range(3)]
    await wait_for_thread(engine.entered)
    engine.release()
    for job in jobs:
        await collect(job)
    await wait_until(lambda: engine.settled == 1)  # once, after the third: the others had a job waiting
    assert await collect(scheduler.submit("a.gguf", "later", PARAMS)) == "later "
    await wait_until(lambda: engine.settled == 2)


async def test_a_failing_settle_does_not_stop_the_worker(make_scheduler):
    loader = Loader()
    scheduler = await make_scheduler(loader)
    engine = loader.engine()
    engine.settle = lambda keep_going=None: 1 / 0
    assert await collect(scheduler.submit("a.gguf", "one", PARAMS)) == "one "
    assert await collect(scheduler.submit("a.gguf", "two", PARAMS)) == "two "
