"""One key cannot starve another, through HTTP on the real model: each key's share of the queue, keys take turns."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from tests.conftest import start_server

BIG, SMALL = "sk-big", "sk-small"
COUNTING = "1, 2, 3, 4,"  # greedy SmolLM2 keeps counting: every job runs to max_tokens
PROMPTS = [f"{COUNTING} {i}" for i in range(16)]  # MAX_PROMPTS


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # MAX_QUEUE is left at 32, so a key's share is 16. One thread: on a busy 2-core machine two spin on each other.
    server = start_server(tmp_path_factory.mktemp("fair"), API_KEYS=f"{BIG},{SMALL}", N_THREADS="1")
    yield server
    server.stop()


def generation(server) -> dict:
    return httpx.get(server.base_url + "/metrics", headers=server.headers(), timeout=30).json()["schedulers"]["generation"]


def completions(server, key: str, body: dict) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/completions", json={"temperature": 0, **body}, headers=server.headers(key),
                      timeout=600)


def test_a_request_over_a_keys_share_is_refused_whole(server):
    before = generation(server)
    response = completions(server, BIG, {"prompt": PROMPTS, "n": 2, "max_tokens": 4})  # 32 jobs: all of MAX_QUEUE
    assert response.status_code == 429
    assert re.fullmatch(r"[1-9][0-9]*", response.headers["retry-after"])
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "queue_full")
    assert "needs 32 generation jobs" in error["message"] and "at most 16 waiting (MAX_QUEUE_PER_KEY)" in error["message"]
    after = generation(server)
    assert after["rejected"] - before["rejected"] == 1
    assert after["completed"] == before["completed"] and after["queue_depth"] == after["running"] == 0  # none of it ran


def test_another_keys_short_request_starts_within_a_few_jobs_of_the_largest_request_a_key_may_send(server):
    big: dict[str, httpx.Response] = {}
    sender = threading.Thread(target=lambda: big.update(response=completions(
        server, BIG, {"prompt": PROMPTS, "max_tokens": 12})))  # 16 jobs, the share of one key
    sender.start()
    deadline = time.monotonic() + 60
    while generation(server)["queue_depth"] < 12:  # its jobs are queued and at most 4 have started
        assert sender.is_alive() and time.monotonic() < deadline, "the big request never filled the queue"
        time.sleep(0.05)

    small = completions(server, SMALL, {"prompt": "Hello", "max_tokens": 2})
    waiting_then = generation(server)["queue_depth"]
    assert small.status_code == 200, small.text
    # answered while most of the big request still waited: it did not queue behind all 16 jobs
    assert sender.is_alive() and waiting_then >= 8, waiting_then

    sender.join(600)
    assert big["response"].status_code == 200
    choices = big["response"].json()["choices"]
    assert [c["index"] for c in choices] == list(range(16)) and all(c["text"] for c in choices)
