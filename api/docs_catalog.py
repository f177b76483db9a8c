"""What `/openapi.json` says about each endpoint: summary, tag, request and response models, examples.

Keyed by (method, path) so it documents routes whatever blueprint registers them; an entry whose
route does not exist is skipped. Models are the request and response classes themselves; which
routes need the key is `api/auth.py`'s rule; error types and codes are `errors.py`'s classes.
The request examples are the original README's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

import errors
from api.protocol import ChatCompletionRequest, CompletionRequest
from api.protocol_responses import ChatCompletion, Completion, ModelList
from api.protocol_embeddings import EmbeddingList, EmbeddingRequest
from api.responses_objects import ResponseDeleted, ResponseItemList, ResponseObject
from api.responses_request import INPUT_ITEMS_PAGE, ResponseCreateRequest
from api.protocol_training import MAX_PAGE, DatasetList, DatasetPage, IngestRequest, IngestResponse

SSE_EXAMPLE = (
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"SmolLM2-135M-Instruct.Q4_1.gguf",'
    '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}]}\n\n'
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"SmolLM2-135M-Instruct.Q4_1.gguf",'
    '"choices":[{"index":0,"delta":{"content":"Red"},"finish_reason":null,"logprobs":null}]}\n\n'
    "data: [DONE]\n\n"
)
TIMING_NOTE = (
    "Responses carry TEI-style timing headers in milliseconds: `x-queue-time`, `x-time-to-first-token` "
    "and (non-streaming) `x-generation-time`."
)
# Error statuses each kind of endpoint can answer, besides the ones every protected endpoint has (401).
GENERATION_ERRORS = (400, 404, 413, 415, 429, 500, 503)
EMBEDDING_ERRORS = (400, 404, 413, 415, 429, 500, 503)
TRAINING_ERRORS = (400, 413, 415, 429, 500, 503)


@dataclass(frozen=True)
class Endpoint:
    summary: str
    tag: str
    operation_id: str
    description: str = ""
    body: type[BaseModel] | None = None
    examples: dict[str, dict] = field(default_factory=dict)  # request examples by name
    response: type[BaseModel] | None = None
    response_example: dict | None = None
    stream: bool = False  # also answers text/event-stream
    sse_example: str = SSE_EXAMPLE
    errors: tuple[int, ...] = ()
    content_type: str = "application/json"
    query: tuple["QueryParameter", ...] = ()
    other_responses: dict[int, tuple[str, dict]] = field(default_factory=dict)  # status -> (description, example)


@dataclass(frozen=True)
class QueryParameter:
    name: str
    description: str
    schema: dict



CHAT_EXAMPLES = {
    "chat": {"summary": "Chat (non-streaming)", "value": {
        "model": "mistral-7b.gguf",
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": "Say hello in one short sentence."}],
        "max_tokens": 64}},
    "stream": {"summary": "Chat (streaming)", "value": {
        "messages": [{"role": "user", "content": "List 3 colors."}], "stream": True, "max_tokens": 64}},
}
COMPLETION_EXAMPLES = {"completion": {"summary": "Completion (prompt-based)", "value": {
    "prompt": "Write a short haiku about autumn.", "max_tokens": 64}}}
EMBEDDING_EXAMPLES = {"embeddings": {"summary": "Two inputs", "value": {
    "model": "all-MiniLM-L6-v2", "input": ["A quick brown fox", "jumps over the lazy dog"]}}}
INGEST_EXAMPLES = {"ingest": {"summary": "Upsert two FAQ examples with embeddings", "value": {
    "dataset": "my-support-faq", "upsert": True, "store_embeddings": True,
    "examples": [
        {"prompt": "How do I reset my password?",
         "response": "Go to Settings > Account > Reset Password and follow the instructions.",
         "meta": {"source": "faq", "lang": "en"}},
        {"prompt": "What is your refund policy?",
         "response": "We offer a 30-day money-back guarantee on all purchases.",
         "meta": {"source": "policy", "lang": "en"}},
    ]}}}

RESPONSES_EXAMPLES = {
    "plain": {"summary": "A response (stored)", "value": {
        "input": "Say hello in one short sentence.", "instructions": "You are terse.", "max_output_tokens": 64}},
    "stream": {"summary": "Streamed, continuing a stored response", "value": {
        "input": "And now in French.", "previous_response_id": "resp_...", "stream": True, "max_output_tokens": 64}},
    "tools": {"summary": "A function tool", "value": {
        "input": "What is the weather in Oslo?", "tool_choice": "auto",
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather in a city",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]}},
}
RESPONSES_SSE_EXAMPLE = (
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1",'
    '"object":"response","status":"in_progress","output":[],"...":"..."}}\n\n'
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":4,'
    '"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello","logprobs":[]}\n\n'
    'event: response.completed\ndata: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_1",'
    '"object":"response","status":"completed","...":"..."}}\n\n'
)
RESPONSES_DESCRIPTION = (
    "OpenAI Responses API. `store` (default true) keeps the response for `RESPONSES_TTL_S`, scoped to the API key, "
    "for GET and `previous_response_id`. With `stream: true` the answer is Server-Sent Events with `event:` and `data:` "
    "lines: `response.created`, `response.in_progress`, output items and their deltas, then `response.completed`, "
    "`response.incomplete` or `response.failed`. `background: true` answers at once with `status: queued`; poll GET. "
    "Parameters accepted and ignored are named in the `X-Ignored-Params` header; those that cannot be honoured are a 400 "
    "naming them (README)."
)
STORED_ERRORS = (400, 404, 503)

CHAT_RESPONSE = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1700000000, "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 24, "completion_tokens": 9, "total_tokens": 33}, "system_fingerprint": None,
}

ENDPOINTS: dict[tuple[str, str], Endpoint] = {
    ("GET", "/"): Endpoint("Server info", "System", "getServerInfo", "Name, version, default models and the list of endpoints.",
                           response_example={
                               "name": "gpt4all-openai-server", "version": "1.0.0", "default_model": "SmolLM2-135M-Instruct.Q4_1.gguf",
                               "embedding_model": "all-MiniLM-L6-v2", "endpoints": ["GET /health", "GET /v1/models", "..."]}),
    ("GET", "/health"): Endpoint(
        "Health check", "System", "getHealth",
        "200 with `status: ok` when the default chat model (and every other part) is ready; 503 while loading or failed.",
        response_example={
            "status": "ok", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "model_state": "ready",
            "embedding_model": "all-MiniLM-L6-v2", "embedding_state": "ready"},
        other_responses={503: ("A model is still loading, or failed (then `error` or `embedding_error` gives a short "
                                "reason; the detail is in `/metrics`, behind the key)", {
            "status": "loading", "model": "SmolLM2-135M-Instruct.Q4_1.gguf", "model_state": "loading",
            "embedding_model": "all-MiniLM-L6-v2", "embedding_state": "ready"})}),
    ("GET", "/v1/models"): Endpoint("List models", "OpenAI", "listModels", "The local `.gguf` chat models and the embedding model.",
                                    response=ModelList),
    ("POST", "/v1/chat/completions"): Endpoint(
        "Create a chat completion", "OpenAI", "createChatCompletion",
        "OpenAI Chat Completions. With `stream: true` the answer is Server-Sent Events: `chat.completion.chunk` objects, "
        "then `data: [DONE]`; an error in the middle of a stream is a `data: {\"error\": ...}` event before `[DONE]`. "
        + TIMING_NOTE,
        body=ChatCompletionRequest, examples=CHAT_EXAMPLES, response=ChatCompletion, response_example=CHAT_RESPONSE,
        stream=True, errors=GENERATION_ERRORS),
    ("POST", "/v1/completions"): Endpoint(
        "Create a text completion", "OpenAI", "createCompletion",
        "OpenAI (legacy) Completions; `prompt` may be a list (one choice each). `stream: true` sends SSE chunks of the "
        "same shape, then `data: [DONE]`. " + TIMING_NOTE,
        body=CompletionRequest, examples=COMPLETION_EXAMPLES, response=Completion, stream=True,
        errors=GENERATION_ERRORS),
    ("POST", "/v1/responses"): Endpoint(
        "Create a response", "OpenAI", "createResponse", RESPONSES_DESCRIPTION, body=ResponseCreateRequest,
        examples=RESPONSES_EXAMPLES, response=ResponseObject, stream=True, sse_example=RESPONSES_SSE_EXAMPLE,
        errors=GENERATION_ERRORS),
    ("GET", "/v1/responses/{response_id}"): Endpoint(
        "Retrieve a stored response", "OpenAI", "getResponse",
        "A stored response of this API key; a background one shows its progress (`queued`, `in_progress`...).",
        response=ResponseObject, errors=STORED_ERRORS),
    ("DELETE", "/v1/responses/{response_id}"): Endpoint(
        "Delete a stored response", "OpenAI", "deleteResponse", "It can no longer be read nor continued.",
        response=ResponseDeleted, errors=STORED_ERRORS),
    ("GET", "/v1/responses/{response_id}/input_items"): Endpoint(
        "List a stored response's input items", "OpenAI", "listInputItems",
        "This request's own input items (not those of the responses it continued), with ids; OpenAI's cursor pagination.",
        response=ResponseItemList, errors=STORED_ERRORS,
        query=(QueryParameter("after", "An item id: the page starts after it.", {"type": "string", "maxLength": 128}),
               QueryParameter("limit", "Items in the page.", {"type": "integer", "minimum": 1, "maximum": INPUT_ITEMS_PAGE,
                                                             "default": 20}),
               QueryParameter("order", "`asc`: oldest first; `desc`: newest first.",
                              {"type": "string", "enum": ["asc", "desc"], "default": "desc"}))),
    ("POST", "/v1/responses/{response_id}/cancel"): Endpoint(
        "Cancel a background response", "OpenAI", "cancelResponse",
        "A background response that is queued or in progress stops and reads `cancelled`; a finished one is returned "
        "as it is. Only background responses can be cancelled.",
        response=ResponseObject, errors=STORED_ERRORS),
    ("POST", "/v1/embeddings"): Endpoint(
        "Create embeddings", "OpenAI", "createEmbedding",
        "Embeddings with sentence-transformers (`all-MiniLM-L6-v2` by default). Requests are micro-batched together.",
        body=EmbeddingRequest, examples=EMBEDDING_EXAMPLES, response=EmbeddingList, errors=EMBEDDING_ERRORS),
    ("POST", "/v1/training/ingest"): Endpoint(
        "Ingest training examples", "Training", "ingestTrainingData",
        "Store prompt/response examples in a JSONL dataset under `TRAINING_DATA_DIR`, optionally with embeddings. "
        "With `upsert: true` an example with a known id replaces the stored one.",
        body=IngestRequest, examples=INGEST_EXAMPLES, response=IngestResponse, errors=TRAINING_ERRORS),
    ("GET", "/v1/training/datasets"): Endpoint(
        "List training datasets", "Training", "listTrainingDatasets", "The ingested JSONL datasets with their sizes.",
        response=DatasetList),
    ("GET", "/v1/training/datasets/{name}"): Endpoint(
        "Read a training dataset", "Training", "readTrainingDataset",
        "One page of a dataset's records, in the order they were stored.",
        response=DatasetPage, errors=(400, 404),
        query=(QueryParameter("offset", "Records to skip.", {"type": "integer", "minimum": 0, "maximum": 2**31, "default": 0}),
               QueryParameter("limit", "Records in the page.", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 100}))),
    ("DELETE", "/v1/training/datasets/{name}"): Endpoint(
        "Delete a training dataset", "Training", "deleteTrainingDataset", "Remove the dataset's JSONL file.",
        response_example={"object": "training.dataset.deleted", "dataset": "my-support-faq", "deleted": True},
        errors=(400, 404)),
    ("GET", "/metrics"): Endpoint(
        "Metrics", "Observability", "getMetrics",
        "A JSON snapshot (server time, uptime, requests by endpoint and status, tokens per model, per-model stats, process "
        "stats, and for each scheduler: queue depth and maximum, running, 429s, cancellations, p50/p95 queue wait, time to "
        "first token, generation time and tokens/s over a recent window, embedding batch sizes and inputs/s). "
        "`?format=prometheus` or `Accept: text/plain` gives the same registry in Prometheus text format.",
        response_example={
            "object": "metrics", "version": "1.0.0", "server_time": "2025-01-01T12:00:00Z", "uptime_s": 3600.0,
            "default_model": "SmolLM2-135M-Instruct.Q4_1.gguf",
            "requests": {"total": 3, "by_status": {"200": 3},
                         "by_endpoint": {"POST /v1/chat/completions": {"total": 3, "by_status": {"200": 3}, "mean_latency_s": 0.41}}},
            "tokens": {"prompt": 72, "completion": 60, "by_model": {"SmolLM2-135M-Instruct.Q4_1.gguf": {"prompt": 72, "completion": 60}}},
            "process": {"pid": 4242, "cpu_percent": 12.5, "rss_bytes": 812000000, "threads": 11, "uptime_s": 3601.2, "cpu_count": 2},
            "schedulers": {"generation": {"queue_depth": 0, "max_queue": 32, "running": 0, "rejected": 0, "cancelled": 0,
                                          "time_to_first_token_s": {"count": 3, "p50": 0.09, "p95": 0.12, "max": 0.12}}}}),
    ("GET", "/status"): Endpoint(
        "Status dashboard", "Observability", "getStatusPage",
        "A live HTML dashboard polling `/metrics`; the API key is typed into the page.",
        content_type="text/html"),
}

@dataclass(frozen=True)
class ErrorExample:
    summary: str
    error: type[errors.ServerError]  # its status, type and code are the documented ones
    message: str
    param: str | None = None

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.error.type, "param": self.param, "code": self.error.code}}


ERROR_EXAMPLES = {example.error.status: example for example in (
    ErrorExample("Invalid request", errors.InvalidRequest, "messages: List should have at least 1 item after validation, not 0",
                 "messages"),
    ErrorExample("Missing or wrong API key", errors.AuthenticationFailed, "Incorrect API key provided."),
    ErrorExample("Unknown model or dataset", errors.ModelNotFound, "The model `nope.gguf` does not exist", "model"),
    ErrorExample("Request body too large", errors.PayloadTooLarge, "Request body exceeds the size limit"),
    ErrorExample("Body not sent as JSON", errors.UnsupportedMediaType, "Content-Type must be application/json, not 'text/plain'"),
    ErrorExample("Queue full (see `Retry-After`)", errors.QueueFull, "the generation queue is full (32 requests waiting); retry later"),
    ErrorExample("Server or engine error", errors.EngineFailure, "The server had an error while processing your request."),
    ErrorExample("Loading, queue timeout or shutting down (see `Retry-After`)", errors.Unavailable, "the server is shutting down"),
)}
