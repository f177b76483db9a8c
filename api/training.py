"""`/v1/training/*`: ingest prompt/response examples into JSONL datasets, list, read back, delete."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from api.http import app_context, json_response, parse_body, parse_query
from api.protocol_training import DatasetInfo, DatasetList, DatasetPage, IngestRequest, IngestResponse, PageQuery
from errors import InvalidRequest

bp = Blueprint("training", url_prefix="/v1/training")


@bp.post("/ingest")
async def ingest(request: Request) -> HTTPResponse:
    body = parse_body(request, IngestRequest)
    ctx = app_context(request)
    dataset = body.dataset  # the store checks that it names a file inside its folder
    if len(body.examples) > ctx.settings.max_ingest_examples:
        raise InvalidRequest(
            f"at most {ctx.settings.max_ingest_examples} examples per request (MAX_INGEST_EXAMPLES)", param="examples"
        )
    examples = [e.model_dump(exclude_none=True) for e in body.examples]
    embeddings, dtype = None, "float32"
    if body.store_embeddings:
        batcher = ctx.embeddings.require()
        rows = await batcher.embed([f"{e.prompt}\n{e.response}" for e in body.examples])
        embeddings, dtype = rows.tolist(), ctx.embeddings.dtype or "float32"  # stored beside each vector
    result = await ctx.training.ingest(dataset, examples, upsert=body.upsert, embeddings=embeddings,
                                       embedding_dtype=dtype)
    ctx.metrics.observe_training_ingest(result)
    return json_response(IngestResponse(dataset=dataset, **result))


@bp.get("/datasets")
async def list_datasets(request: Request) -> HTTPResponse:
    infos = await app_context(request).training.list_datasets()
    return json_response(DatasetList(data=[DatasetInfo(**info) for info in infos]))


@bp.get("/datasets/<name>")
async def read_dataset(request: Request, name: str) -> HTTPResponse:
    query = parse_query(request, PageQuery)
    page = await app_context(request).training.read(name, offset=query.offset, limit=query.limit)
    return json_response(DatasetPage(dataset=name, **page))


@bp.delete("/datasets/<name>")
async def delete_dataset(request: Request, name: str) -> HTTPResponse:
    await app_context(request).training.delete(name)
    return json_response({"object": "training.dataset.deleted", "dataset": name, "deleted": True})
