"""The one exception tree of the server; `api/errors.py` maps it to HTTP once.

    ServerError                      500 server_error
    ├── InvalidRequest               400 invalid_request_error
    │   ├── ContextLengthExceeded    400 code=context_length_exceeded
    │   ├── UnsupportedParameter     400 code=unsupported_parameter
    │   └── SchemaRefused            400 code=unsupported_schema (a JSON Schema we cannot enforce exactly)
    ├── AuthenticationFailed         401 code=invalid_api_key
    ├── NotFound                     404 code=not_found
    │   └── ModelNotFound            404 code=model_not_found
    ├── MethodNotAllowed             405
    ├── PayloadTooLarge              413
    ├── HeadersTooLarge              431 (the request line and headers)
    ├── UnsupportedMediaType         415 (a body not sent as application/json)
    ├── HostNotAllowed               421 code=host_not_allowed (a Host not in ALLOWED_HOSTS: DNS rebinding)
    ├── QueueFull                    429 code=queue_full (+ Retry-After)
    ├── Unavailable                  503 code=unavailable (queue timeout, shutting down, loading)
    │   └── StorageUnavailable       503 code=storage_unavailable (the stored responses' database is
    │                                    locked, full or corrupt)
    ├── ModelLoadFailed              500 code=model_load_failed
    └── EngineFailure                500 code=engine_error
        └── ConstraintFailed         500 (a token the output constraint refuses, or the constraint library's own failure)

Any module may raise these; nothing here knows about HTTP frameworks.
"""

from __future__ import annotations


class ServerError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None, detail: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.detail = detail  # for the server log only: never sent to a client
        if code is not None:
            self.code = code

    def body(self, request_id: str | None = None) -> dict:
        """The envelope; a 5xx names `request_id`, which the server log names too."""
        message = self.message if request_id is None or self.status < 500 else self.message_with_id(request_id)
        return {"error": {"message": message, "type": self.type, "param": self.param, "code": self.code}}

    def message_with_id(self, request_id: str) -> str:
        return f"{self.message} (request {request_id})"

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequest(ServerError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceeded(InvalidRequest):
    code = "context_length_exceeded"


class UnsupportedParameter(InvalidRequest):
    code = "unsupported_parameter"


class SchemaRefused(InvalidRequest):
    """A JSON Schema the constraint library cannot enforce exactly (models/native/schema_check.py).

    `keyword` is the JSON Schema keyword at fault ("" when none is: the size, the type of the whole
    schema); `path` is the JSON Pointer of the subschema holding it ("" when unknown). The message
    names both, so a client can fix its schema without reading our code.
    """

    code = "unsupported_schema"

    def __init__(self, reason: str, *, keyword: str = "", path: str = "", param: str | None = None):
        where = f"'{keyword}'" if keyword else "the schema"
        at = f" at {path}" if path else ""
        super().__init__(f"{where}{at} cannot be enforced: {reason}", param=param)
        self.keyword = keyword
        self.path = path
        self.reason = reason


class AuthenticationFailed(ServerError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFound(ServerError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(ServerError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(ServerError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class HeadersTooLarge(ServerError):
    status = 431
    type = "invalid_request_error"
    code = "headers_too_large"


class UnsupportedMediaType(ServerError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class HostNotAllowed(ServerError):
    # 421 Misdirected Request: this server is not configured to answer for that authority (RFC 9110 15.5.20).
    status = 421
    type = "invalid_request_error"
    code = "host_not_allowed"


class QueueFull(ServerError):
    status = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, *, retry_after_s: int = 1, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Unavailable(ServerError):
    status = 503
    type = "server_error"
    code = "unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class StorageUnavailable(Unavailable):
    """The stored responses' SQLite file cannot be used now; `detail` (the log only) names the file."""

    code = "storage_unavailable"


class ModelLoadFailed(ServerError):
    code = "model_load_failed"


class EngineFailure(ServerError):
    """The message is stable; what the engine raised is `detail` (and `__cause__`), for the log only."""

    code = "engine_error"

    def message_with_id(self, request_id: str) -> str:
        return f"{self.message}; see the server log for request {request_id}"


class ConstraintFailed(EngineFailure):
    """The decode loop offered a token the constraint refuses, or the library failed mid-way (a resource
    limit). Never a client's fault: the schema was checked before anything was evaluated."""
