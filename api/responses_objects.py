"""The bodies `/v1/responses` answers with, in OpenAI's shapes (openai-python's `types/responses/`).

`ResponseObject` is the Response: what POST answers, what GET reads back, and what the stream's
`response.*` events carry. Its output holds `message` items (with `output_text` parts) and
`function_call` items. `output_text` is not sent: OpenAI computes it in its SDKs (a property of
the SDK's `Response`), and its API does not send it either.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from models.interfaces import GenerationOutcome

Status = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: `resp_`, `msg_`, `fc_`... and 48 random hex digits."""
    return f"{prefix}_{secrets.token_hex(24)}"


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str = ""
    annotations: list[dict[str, Any]] = Field(default_factory=list, description="Always empty here.")
    logprobs: list[dict[str, Any]] = Field(default_factory=list, description="Always empty here.")


class OutputMessage(BaseModel):
    id: str = Field(description="`msg_...`")
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus = "in_progress"
    content: list[OutputText] = Field(default_factory=list)


class FunctionCallOutput(BaseModel):
    """A call of one of the request's function tools: run it, and send its result as `function_call_output`."""

    id: str = Field(description="`fc_...`: this output item's id.")
    type: Literal["function_call"] = "function_call"
    call_id: str = Field(description="`call_...`: what the `function_call_output` answering it names.")
    name: str
    arguments: str = Field("", description="The arguments object, as JSON text.")
    status: ItemStatus = "in_progress"


OutputItem = Annotated[OutputMessage | FunctionCallOutput, Field(discriminator="type")]


class InputTokensDetails(BaseModel):
    cached_tokens: int = Field(0, description="Input tokens reused from a cached context instead of evaluated.")
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int = Field(description="The whole prompt, cached part included.")
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int

    @classmethod
    def of(cls, outcome: GenerationOutcome) -> "ResponseUsage":
        return cls(input_tokens=outcome.prompt_tokens, output_tokens=outcome.completion_tokens,
                   input_tokens_details=InputTokensDetails(cached_tokens=outcome.cached_tokens),
                   total_tokens=outcome.prompt_tokens + outcome.completion_tokens)


class ResponseErrorInfo(BaseModel):
    code: str = Field(description="`server_error`, `rate_limit_exceeded` or `invalid_prompt`.")
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"] = Field(
        description="The output was cut: by `max_output_tokens`, the context window or the generation time limit.")


class ResponseObject(BaseModel):
    id: str = Field(description="`resp_...`")
    object: Literal["response"] = "response"
    created_at: int
    status: Status
    background: bool = False
    completed_at: int | None = None
    error: ResponseErrorInfo | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    prompt_cache_key: str | None = None
    reasoning: dict[str, Any] = Field(default_factory=lambda: {"effort": None, "summary": None})
    safety_identifier: str | None = None
    service_tier: str = "default"
    store: bool = True
    temperature: float = 1.0
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}, "verbosity": "medium"})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list, description="The function tools (other tools are ignored).")
    top_logprobs: int = 0
    top_p: float = 1.0
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None


class ResponseItemList(BaseModel):
    """One page of a stored response's input items (OpenAI's list object)."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]] = Field(description="Input items, each with its `id`: messages, function calls and "
                                                   "function call outputs.")
    first_id: str | None = Field(description="The page's first item; null when the page is empty.")
    last_id: str | None = Field(description="The page's last item; null when the page is empty.")
    has_more: bool


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: Literal[True] = True


def page_of_items(items: list[dict[str, Any]], *, after: str | None, limit: int, order: str) -> ResponseItemList | None:
    """OpenAI's cursor pagination over `items` (stored oldest first); None when `after` is not among them."""
    ordered = items if order == "asc" else items[::-1]
    start = 0
    if after is not None:
        ids = [item["id"] for item in ordered]
        if after not in ids:
            return None
        start = ids.index(after) + 1
    page = ordered[start:start + limit]
    return ResponseItemList(data=page, first_id=page[0]["id"] if page else None,
                            last_id=page[-1]["id"] if page else None, has_more=start + limit < len(ordered))
