"""/v1/responses in the background and across server lives (an app each): polling, cancel (also through
another replica sharing the file), a stop or a restart while running, and a corrupt database."""

from __future__ import annotations

import asyncio
import time


from data.response_store import RESTARTED, ResponseStore
from tests.helpers.in_process import API_KEY, served_app
from tests.helpers.sse import assert_envelope

RESPONSES = "/v1/responses"


async def poll(app, id: str, *statuses: str, timeout_s: float = 10.0) -> dict:
    """GET the response until its status is one of `statuses`."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = (await app.client.get(f"{RESPONSES}/{id}", headers=app.headers())).json()
        if body["status"] in statuses or time.monotonic() > deadline:
            assert body["status"] in statuses, body
            return body
        await asyncio.sleep(0.02)


async def start_background(app, pieces: list[str], **extra) -> dict:
    app.chat.enqueue(pieces)
    response = await app.client.post(RESPONSES, json={"input": "work", "background": True, **extra}, headers=app.headers())
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_background_response_answers_queued_at_once_then_completes(tmp_path):
    async with served_app(tmp_path) as app:
        app.chat.delay_s = 0.02
        queued = await start_background(app, ["a", "b", "c"])
        assert queued["status"] == "queued" and queued["background"] is True and queued["output"] == []
        done = await poll(app, queued["id"], "completed")
        assert done["output"][0]["content"][0]["text"] == "abc" and done["usage"]["output_tokens"] == 3
        assert (await app.client.post(f"{RESPONSES}/{done['id']}/cancel", headers=app.headers())).json() == done


async def test_a_cancel_stops_a_running_background_response(tmp_path):
    async with served_app(tmp_path) as app:
        app.chat.delay_s = 0.05
        started = await start_background(app, ["x"] * 200)
        await poll(app, started["id"], "in_progress")
        await asyncio.sleep(0.2)
        cancelled = await app.client.post(f"{RESPONSES}/{started['id']}/cancel", headers=app.headers())
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        deadline = time.monotonic() + 5
        while not app.chat.stopped_early and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert app.chat.stopped_early  # the engine stopped within a token
        kept = await poll(app, started["id"], "cancelled")
        await asyncio.sleep(0.1)  # the runner's last write (the partial output) lands
        kept = await poll(app, started["id"], "cancelled")
        assert 0 < len(kept["output"][0]["content"][0]["text"]) < 200
        again = await app.client.post(f"{RESPONSES}/{started['id']}/cancel", headers=app.headers())
        assert again.json()["status"] == "cancelled"


async def test_a_cancel_sent_to_another_replica_reaches_the_one_running_it(tmp_path):
    shared = str(tmp_path / "shared.sqlite3")
    async with served_app(tmp_path / "a", REPLICA_NAME="a", RESPONSES_DB=shared) as runner, \
            served_app(tmp_path / "b", REPLICA_NAME="b", RESPONSES_DB=shared) as other:
        runner.app.ctx.responses.tick_s = 0.05
        runner.chat.delay_s = 0.05
        started = await start_background(runner, ["y"] * 200)
        await poll(other, started["id"], "in_progress")  # replica b reads what replica a keeps
        cancelled = await other.client.post(f"{RESPONSES}/{started['id']}/cancel", headers=other.headers())
        assert cancelled.json()["status"] == "cancelled"
        deadline = time.monotonic() + 5
        while not runner.chat.stopped_early and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert runner.chat.stopped_early


async def test_a_server_stopping_fails_its_background_responses_and_a_restart_fails_what_it_left(tmp_path):
    async with served_app(tmp_path, SHUTDOWN_GRACE_S="0") as app:
        app.chat.delay_s = 0.05
        started = await start_background(app, ["z"] * 400)
        await poll(app, started["id"], "in_progress")
        db = app.settings.responses_db_path
    # A crash leaves a row running: write one as this replica's previous run would have.
    crashed = ResponseStore(db, ttl_s=3600, max_bytes=10**9)
    await crashed.insert(id="resp_crashed", scope=app_scope(), status="in_progress", background=True,
                         body={"id": "resp_crashed", "status": "in_progress", "output": []}, history=[], input_items=[])
    await crashed.close()
    async with served_app(tmp_path) as again:
        stopped = await poll(again, started["id"], "failed")
        assert "shut down" in stopped["error"]["message"]
        left = await poll(again, "resp_crashed", "failed")
        assert left["error"] == {"code": "server_error", "message": RESTARTED}


def app_scope() -> str:
    from api.auth import cache_scope

    return cache_scope(API_KEY)


async def test_a_corrupt_database_is_a_503_that_says_so_and_the_rest_keeps_working(tmp_path, caplog):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "responses.sqlite3").write_bytes(b"garbage, not SQLite" * 1000)
    async with served_app(tmp_path) as app:
        error = assert_envelope(await app.client.get(f"{RESPONSES}/resp_1", headers=app.headers()), 503)
        assert error["code"] == "storage_unavailable" and "corrupt" in error["message"]
        assert str(tmp_path) not in error["message"]
        assert (await app.client.post(RESPONSES, json={"input": "x", "store": False}, headers=app.headers())).status_code == 200
    assert any("stored responses are unavailable" in r.getMessage() for r in caplog.records)
