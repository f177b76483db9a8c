"""`/v1/training/*`: ingest prompt/response examples into JSONL datasets, list, read back, delete."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from api.http import app_context, json_response, parse_body
from api.protocol_data import DatasetInfo, DatasetList, DatasetPage, IngestRequest, IngestResponse
from data.training_store import validate_dataset_name
from errors import InvalidRequest

bp = Blueprint("training", url_prefix="/v1/training")


@bp.post("/ingest")
async def ingest(request: Request) -> HTTPResponse:
    body = parse_body(request, IngestRequest)
    ctx = app_context(request)
    dataset = validate_dataset_name(body.dataset)
    if len(body.examples) > ctx.settings.max_ingest_examples:
        raise InvalidRequest(
            f"at most {ctx.settings.max_ingest_examples} examples per request (MAX_INGEST_EXAMPLES)", param="examples"
        )
    examples = [e.model_dump(exclude_none=True) for e in body.examples]
    embeddings = None
    if body.store_embeddings:
        rows = await ctx.embeddings.require().embed([f"{e.prompt}\n{e.response}" for e in body.examples])
        embeddings = rows.tolist()
    result = await ctx.training.ingest(dataset, examples, upsert=body.upsert, embeddings=embeddings)
    ctx.metrics.observe_training_ingest(result)
    return json_response(IngestResponse(dataset=dataset, **result))


@bp.get("/datasets")
async def list_datasets(request: Request) -> HTTPResponse:
    infos = await app_context(request).training.list_datasets()
    return json_response(DatasetList(data=[DatasetInfo(**info) for info in infos]))


@bp.get("/datasets/<name>")
async def read_dataset(request: Request, name: str) -> HTTPResponse:
    offset = _int_arg(request, "offset", 0, 0, 1 << 31)
    limit = _int_arg(request, "limit", 100, 1, 1000)
    page = await app_context(request).training.read(validate_dataset_name(name), offset=offset, limit=limit)
    return json_response(DatasetPage(dataset=name, **page))


@bp.delete("/datasets/<name>")
async def delete_dataset(request: Request, name: str) -> HTTPResponse:
    await app_context(request).training.delete(validate_dataset_name(name))
    return json_response({"object": "training.dataset.deleted", "dataset": name, "deleted": True})


def _int_arg(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", param=name) from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be between {low} and {high}", param=name)
    return value
