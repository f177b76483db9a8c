"""`POST /v1/embeddings`: validate, decode token ids, embed through the micro-batcher, wrap."""

from __future__ import annotations

import base64

import numpy as np
import orjson
from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from api.http import app_context, parse_body
from api.protocol_embeddings import EmbeddingRequest
from errors import InvalidRequest, ModelNotFound

bp = Blueprint("embeddings", url_prefix="/v1")


@bp.post("/embeddings")
async def create_embeddings(request: Request) -> HTTPResponse:
    body = parse_body(request, EmbeddingRequest)
    ctx = app_context(request)
    batcher, name = ctx.embeddings.require(), ctx.embeddings.model_id
    _check_model(request, body.model, name)
    items = body.items()
    if len(items) > ctx.settings.max_embedding_inputs:
        raise InvalidRequest(
            f"at most {ctx.settings.max_embedding_inputs} inputs per request (MAX_EMBEDDING_INPUTS)", param="input"
        )
    if body.dimensions is not None and body.dimensions != batcher.engine.dimensions:
        raise InvalidRequest(
            f"{name} makes {batcher.engine.dimensions}-dimensional vectors and was not trained to be shortened; "
            f"dimensions must be {batcher.engine.dimensions} or absent",
            param="dimensions",
        )
    texts = [item if isinstance(item, str) else await batcher.decode(item) for item in items]
    rows, counts = await batcher.embed_counted(texts)
    tokens = int(sum(counts))
    return HTTPResponse(
        orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": _encode(row, body.encoding_format)}
                    for i, row in enumerate(rows)
                ],
                "model": name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            option=orjson.OPT_SERIALIZE_NUMPY,
        ),
        content_type="application/json",
    )


def _check_model(request: Request, asked: str | None, name: str) -> None:
    if asked is None or asked == name:
        return
    try:
        app_context(request).registry.get(asked)
    except ModelNotFound:
        raise ModelNotFound(f"The embedding model `{asked}` does not exist; this server has `{name}`", param="model") from None
    raise InvalidRequest(f"`{asked}` is a chat model; embeddings come from `{name}`", param="model")


def _encode(row: np.ndarray, encoding_format: str) -> np.ndarray | str:
    if encoding_format == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return row
