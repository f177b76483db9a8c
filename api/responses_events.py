"""From a parsed reply (TextDelta / CallStart / CallArguments, then the outcome) to a Response and its stream.

`ResponseBuilder` keeps the Response being made and returns, for each step, the Server-Sent Events
that tell it, in OpenAI's order, each with `type` and an increasing `sequence_number`:

    response.created, response.in_progress
    per message:  response.output_item.added, response.content_part.added,
                  response.output_text.delta..., response.output_text.done,
                  response.content_part.done, response.output_item.done
    per call:     response.output_item.added, response.function_call_arguments.delta...,
                  response.function_call_arguments.done, response.output_item.done
    at the end:   response.completed | response.incomplete | response.failed

The non-streamed answer is the same builder's Response with the events dropped, so a streamed and
a plain request assemble the same object (the SDK's stream helper checks it in a unit test).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from api.responses_objects import (
    FunctionCallOutput,
    IncompleteDetails,
    OutputMessage,
    OutputText,
    ResponseErrorInfo,
    ResponseObject,
    ResponseUsage,
    new_id,
)
from errors import ServerError
from models.conversation import CallArguments, CallStart, ReplyEvent, TextDelta
from models.interfaces import GenerationOutcome

Event = dict[str, Any]


def sse_event(event: Event) -> bytes:
    """One event as SSE: its `event:` line (the type) and its `data:` line."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def error_code(error: ServerError) -> str:
    """The Response's `error.code` (OpenAI's small set) for one of our errors."""
    if error.status == 429:
        return "rate_limit_exceeded"
    return "invalid_prompt" if error.status < 500 else "server_error"


class ResponseBuilder:
    def __init__(self, response: ResponseObject):
        self.response = response
        self._sequence = 0
        self._open: OutputMessage | FunctionCallOutput | None = None
        self._calls: dict[int, int] = {}  # a call's index among the reply's calls -> its output index

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _snapshot(self, kind: str) -> Event:
        return self._event(kind, response=self.response.model_dump(mode="json"))

    def begin(self) -> list[Event]:
        self.response.status = "in_progress"
        return [self._snapshot("response.created"), self._snapshot("response.in_progress")]

    def add(self, event: ReplyEvent) -> list[Event]:
        if isinstance(event, TextDelta):
            return self._text(event.text)
        if isinstance(event, CallStart):
            return self._call_start(event)
        if isinstance(event, CallArguments):
            return self._arguments(event)
        raise TypeError(f"not a reply event: {event!r}")

    def _text(self, text: str) -> list[Event]:
        if not text:
            return []
        events: list[Event] = []
        if not isinstance(self._open, OutputMessage):
            events += self._close("completed")
            message = OutputMessage(id=new_id("msg"))
            events += self._add_item(message)
            message.content.append(OutputText())
            events.append(self._event("response.content_part.added", item_id=message.id, output_index=self._index,
                                      content_index=0, part=OutputText().model_dump()))
        part = self._open.content[0]
        part.text += text
        events.append(self._event("response.output_text.delta", item_id=self._open.id, output_index=self._index,
                                  content_index=0, delta=text, logprobs=[]))
        return events

    def _call_start(self, start: CallStart) -> list[Event]:
        events = self._close("completed")
        call = FunctionCallOutput(id=new_id("fc"), call_id=start.id, name=start.name)
        events += self._add_item(call)
        self._calls[start.index] = self._index
        return events

    def _arguments(self, fragment: CallArguments) -> list[Event]:
        index = self._calls.get(fragment.index)
        if index is None:
            raise ValueError(f"arguments for call {fragment.index}, which never started")
        call = self.response.output[index]
        call.arguments += fragment.fragment
        return [self._event("response.function_call_arguments.delta", item_id=call.id, output_index=index,
                            delta=fragment.fragment)] if fragment.fragment else []

    @property
    def _index(self) -> int:
        return len(self.response.output) - 1

    def _add_item(self, item: OutputMessage | FunctionCallOutput) -> list[Event]:
        self.response.output.append(item)
        self._open = item
        return [self._event("response.output_item.added", output_index=self._index, item=item.model_dump())]

    def _close(self, status: str) -> list[Event]:
        """End the open item (if any) with `status`, and say so."""
        item, self._open = self._open, None
        if item is None:
            return []
        index = self._index  # items are closed before the next one is added: the open one is the last
        item.status = status
        events: list[Event] = []
        if isinstance(item, OutputMessage):
            part = item.content[0]
            events.append(self._event("response.output_text.done", item_id=item.id, output_index=index,
                                      content_index=0, text=part.text, logprobs=[]))
            events.append(self._event("response.content_part.done", item_id=item.id, output_index=index,
                                      content_index=0, part=part.model_dump()))
        else:
            events.append(self._event("response.function_call_arguments.done", item_id=item.id,
                                      output_index=index, arguments=item.arguments))
        events.append(self._event("response.output_item.done", output_index=index, item=item.model_dump()))
        return events

    def finish(self, outcome: GenerationOutcome) -> list[Event]:
        """The reply ended: close the last item, set usage and status, and the terminal event."""
        cut = outcome.finish_reason == "length"
        events = self._close("incomplete" if cut else "completed")
        response = self.response
        response.usage = ResponseUsage.of(outcome)
        if cut:
            response.status, response.incomplete_details = "incomplete", IncompleteDetails(reason="max_output_tokens")
            return events + [self._snapshot("response.incomplete")]
        response.status, response.completed_at = "completed", int(time.time())
        return events + [self._snapshot("response.completed")]

    def fail(self, error: ServerError) -> list[Event]:
        """The generation failed after it began: what was made so far, and `response.failed`."""
        self._stop("failed")
        self.response.error = ResponseErrorInfo(code=error_code(error), message=error.message)
        return [self._snapshot("response.failed")]

    def error_event(self, error: ServerError) -> Event:
        """OpenAI's `error` event: for a failure after the response's own terminal event was made."""
        return self._event("error", code=error.code, message=error.message, param=error.param)

    def cancel(self) -> None:
        """Stopped before its end (a cancel, or the client left): no events, nobody is listening."""
        self._stop("cancelled")

    def _stop(self, status: str) -> None:
        self._open = None
        for item in self.response.output:
            if item.status == "in_progress":
                item.status = "incomplete"
        self.response.status = status
