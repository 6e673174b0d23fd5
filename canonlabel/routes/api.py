"""``/v1``: classify one text or a batch, read labels and stats (the API token)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel

from canonlabel.errors import EmptyTextError, InputError, RejectedTextError
from canonlabel.routes.deps import check_text, run, service, user, wait
from canonlabel.service import ServiceClosed

router = APIRouter()


class ClassifyIn(BaseModel):
    text: str
    id: str | None = None


class BatchIn(BaseModel):
    items: list[ClassifyIn]


class ResultOut(BaseModel):
    id: str | None = None
    text: str
    label: str | None
    label_id: int | None
    raw_label: str | None
    source: str | None
    similarity: float | None = None
    truncated: bool = False
    error: str | None = None
    timings: dict[str, float] = {}
    usage: dict[str, int] = {}


def _out(result) -> dict:
    data = result.to_dict()
    data["usage"] = {
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
    }
    return data


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@router.post("/v1/classify", response_model=ResultOut, dependencies=[user])
async def classify(body: ClassifyIn, request: Request) -> Any:
    check_text(request, body.text)
    try:
        result, error = await wait(service(request).classify(body.text, body.id))
    except ServiceClosed as exc:
        raise HTTPException(503, str(exc)) from None
    if error is not None:
        code = 422 if isinstance(error, (EmptyTextError, InputError, RejectedTextError)) else 502
        raise HTTPException(code, str(error))
    return _out(result)


@router.post("/v1/classify/batch", dependencies=[user])
async def classify_batch(body: BatchIn, request: Request) -> dict:
    limit = request.app.state.settings.max_batch
    if len(body.items) > limit:
        raise HTTPException(413, f"batch over {limit} items; split it")
    for item in body.items:
        check_text(request, item.text)
    svc = service(request)
    try:
        futures = [svc.classify(i.text, i.id) for i in body.items]
    except ServiceClosed as exc:
        raise HTTPException(503, str(exc)) from None
    pairs = await asyncio.gather(*(wait(f) for f in futures))
    return {"results": [_out(result) for result, _ in pairs]}


@router.get("/v1/labels", dependencies=[user])
async def labels(
    request: Request,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    category: str | None = None,
) -> dict:
    rows = await run(request, lambda clf: clf.labels())
    if category is not None:
        rows = [r for r in rows if r.category == category]
    page = rows[offset : offset + limit]
    return {
        "total": len(rows),
        "offset": offset,
        "limit": limit,
        "labels": [
            {
                "id": r.id,
                "name": r.name,
                "count": r.count,
                "moved": r.moved,
                "aliases": list(r.aliases),
                "category": r.category,
            }
            for r in page
        ],
    }


@router.get("/v1/hierarchy", dependencies=[user])
async def hierarchy(request: Request) -> dict:
    """The label hierarchy as last fitted (``POST /v1/labels/hierarchy``), labels made
    since joined to their nearest parent; top level first, with counts."""
    from canonlabel.hierarchy import as_dict

    def load(clf) -> list:
        return as_dict(clf.hierarchy(refit=False), clf.space, clf.label_counts())

    return {"parents": await run(request, load)}


@router.get("/v1/labels/{label_id}", dependencies=[user])
async def label(label_id: int, request: Request) -> dict:
    detail = await run(request, lambda clf: clf.label_detail(label_id))
    if detail is None:
        raise HTTPException(404, f"label {label_id} does not exist")
    return detail


@router.get("/v1/stats", dependencies=[user])
async def stats(request: Request) -> dict:
    return await run(request, lambda clf: clf.stats())
