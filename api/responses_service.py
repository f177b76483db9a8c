"""`/v1/responses` without HTTP: requests into runs, the stored responses, background tasks, cancels.

`create` checks a request against what is stored (`previous_response_id` continues a stored
response: its history, its input and its output come before the new input), builds the
`Conversation` and the Response, and keeps the row first when `store` is on (so a broken database
is a 503 before any work). Background runs are server tasks; a ticker reports their heartbeat
(and that of stored foreground runs) to the store, learns which were cancelled by another replica
sharing the file, and sweeps expired rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from api.protocol_chat import NUL_MESSAGE
from api.responses_items import to_messages
from api.responses_objects import ResponseDeleted, ResponseItemList, ResponseObject, new_id, page_of_items
from api.responses_request import ResponseCreateRequest
from api.responses_run import ReplySource, Run
from data.response_store import RUNNING, ResponseStore, StoredResponse
from errors import InvalidRequest, NotFound, ServerError
from models.conversation import Conversation, Message

log = logging.getLogger("server.responses")


class ResponsesService:
    def __init__(self, store: ResponseStore, source: ReplySource, *, tick_s: float = 2.0, sweep_s: float = 600.0):
        self.store = store
        self.source = source
        self.tick_s = tick_s
        self.sweep_s = sweep_s
        self._runs: dict[str, Run] = {}  # stored runs going on in this process
        self._tasks: dict[str, asyncio.Task] = {}  # background runs
        self._ticker: asyncio.Task | None = None

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            failed = await self.store.open()
            if failed:
                log.warning("%d stored responses were left running by this replica's previous run: now failed", failed)
        except ServerError as exc:  # the routes answer 503 until the file works again
            log.error("stored responses are unavailable: %s (%s)", exc.message, exc.detail)
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="responses-ticker")

    async def stop(self, settle_s: float = 2.0) -> None:
        """Fail the background runs still going (the server is stopping), then close the store.

        The scheduler's drain has answered their jobs by now: they get `settle_s` to keep that error
        in their rows, then the rest are cancelled (and kept as failed too)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for id in self._tasks:
            if id in self._runs:
                self._runs[id].shutdown = True
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=settle_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.close()

    async def _tick(self) -> None:
        last_sweep = time.monotonic()
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                for id in await self.store.heartbeat(list(self._runs)) if self._runs else ():
                    if id in self._tasks:  # cancelled through another replica
                        self._tasks[id].cancel()
                if time.monotonic() - last_sweep > self.sweep_s:
                    last_sweep = time.monotonic()
                    await self.store.sweep()
            except ServerError as exc:
                log.warning("stored responses: heartbeat or sweep failed: %s", exc.detail or exc.message)

    # ---- creating ------------------------------------------------------------------------------

    async def create(self, body: ResponseCreateRequest, scope: str) -> Run:
        """A checked run of `body`, its row kept already when `store` is on; nothing generated yet."""
        model = self.source.model_id(body.model)
        history = await self._history(body.previous_response_id, scope)
        if not body.input:
            raise InvalidRequest("input must not be empty", param="input")
        messages = to_messages(history + body.input, first_new=len(history))
        if body.instructions:
            if "\x00" in body.instructions:
                raise InvalidRequest(f"instructions: {NUL_MESSAGE}", param="instructions")
            messages.insert(0, Message("system", body.instructions))
        tool_indexes, tools, choice = body.conversation_tools()
        run = Run(self._response(body, model), Conversation(tuple(messages), tools, choice), body.to_sampling_params(),
                  scope, self.source, self.store if body.store else None, tool_indexes)
        if body.store:
            await self.store.insert(id=run.id, scope=scope, status=run.response.status, background=body.background,
                                    body=run.body(), history=history, input_items=body.input)
            self._runs[run.id] = run
            run.on_done = self._forget
        return run

    async def _history(self, previous_id: str | None, scope: str) -> list[dict]:
        """The items a continuation comes after: the previous response's history, input and output."""
        if previous_id is None:
            return []
        previous = await self._stored(previous_id, scope, "previous_response_id")
        if previous.status in RUNNING:
            raise InvalidRequest(f"previous_response_id: {previous_id} is still {previous.status}; wait for it to "
                                 "finish", param="previous_response_id")
        return previous.history + previous.input_items + previous.body["output"]

    @staticmethod
    def _response(body: ResponseCreateRequest, model: str) -> ResponseObject:
        tools = [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters,
                  "strict": t.strict} for _, t in body.function_tools()]
        return ResponseObject(
            id=new_id("resp"), created_at=int(time.time()), status="queued" if body.background else "in_progress",
            background=body.background, instructions=body.instructions, max_output_tokens=body.max_output_tokens,
            metadata=body.metadata or {}, model=model, parallel_tool_calls=body.parallel_tool_calls,
            previous_response_id=body.previous_response_id, prompt_cache_key=body.prompt_cache_key,
            safety_identifier=body.safety_identifier, store=body.store, temperature=body.temperature,
            text=body.text_echo(), tool_choice=body.tool_choice, tools=tools, top_p=body.top_p, user=body.user)

    def _forget(self, run: Run) -> None:
        """The run is over (kept, failed or refused): no more heartbeats."""
        self._runs.pop(run.id, None)
        self._tasks.pop(run.id, None)

    def launch(self, run: Run) -> dict:
        """Run it as a server task (it outlives the request); the Response as it is now, `queued`."""
        body = run.body()
        self._tasks[run.id] = asyncio.get_running_loop().create_task(run.run_in_background(), name=f"response-{run.id}")
        return body

    # ---- reading back --------------------------------------------------------------------------

    async def _stored(self, id: str, scope: str, param: str = "response_id") -> StoredResponse:
        stored = await self.store.get(id, scope)
        if stored is None:
            raise NotFound(f"No response with id {id!r} was found (unknown, expired, deleted, not stored, or "
                           "another API key's)", param=param)
        return stored

    async def retrieve(self, id: str, scope: str) -> dict:
        return (await self._stored(id, scope)).body

    async def delete(self, id: str, scope: str) -> ResponseDeleted:
        if id in self._tasks:
            self._tasks[id].cancel()  # its row goes below; the task's last save finds nothing to update
        if not await self.store.delete(id, scope):
            raise NotFound(f"No response with id {id!r} was found", param="response_id")
        return ResponseDeleted(id=id)

    async def input_items(self, id: str, scope: str, *, after: str | None, limit: int, order: str) -> ResponseItemList:
        stored = await self._stored(id, scope)
        page = page_of_items(stored.input_items, after=after, limit=limit, order=order)
        if page is None:
            raise InvalidRequest(f"after: {after!r} is not an input item of {id}", param="after")
        return page

    async def cancel(self, id: str, scope: str) -> dict:
        """Cancel a background response that is queued or in progress; one already finished is returned as it is."""
        stored = await self.store.cancel(id, scope)
        if stored is None:
            raise NotFound(f"No response with id {id!r} was found", param="response_id")
        if not stored.background:
            raise InvalidRequest("Only responses created with background: true can be cancelled", param="response_id")
        task = self._tasks.get(id)
        if task is not None and stored.status == "cancelled":
            task.cancel()
        return stored.body
