"""``canonlabel serve``: FastAPI app over one :class:`~canonlabel.service.Service`."""

from __future__ import annotations

import asyncio
import hmac
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from canonlabel.config import Settings
from canonlabel.errors import (
    CanonlabelError,
    CurationError,
    EmptyTextError,
    InputError,
    RejectedTextError,
    StaleLabelSpaceError,
)
from canonlabel.service import Service, ServiceClosed


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


class MergeIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: int = Field(alias="from")
    into: int


class RenameIn(BaseModel):
    name: str


class SplitIn(BaseModel):
    k: int | None = None
    aliases: list[str] | None = None
    items: list[int] | None = None
    name: str | None = None


def _out(result) -> dict:
    data = result.to_dict()
    data["usage"] = {
        "prompt_tokens": result.usage.prompt_tokens,
        "completion_tokens": result.usage.completion_tokens,
    }
    return data


class BodyLimit:
    """413 for a request body over ``limit`` bytes, declared or streamed (a chunked body
    has no length to check up front, so the bytes are counted as they arrive).

    Plain ASGI: the ``@app.middleware`` form runs every request through an extra task
    and stream (14% of the event loop's samples in a profile under all-hit load)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": self.message}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted, send)

    @property
    def message(self) -> str:
        return f"request body over {self.limit} bytes; send smaller batches"


def create_app(settings: Settings | None = None, *, classifier=None) -> FastAPI:
    """Build the app; the store is opened in the lifespan (or ``classifier`` is used)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from canonlabel.pipeline import Classifier

        clf = classifier or await asyncio.to_thread(Classifier.open, settings=settings)
        app.state.service = Service(clf, settings.concurrency, settings.max_batch)
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.service.close)

    app = FastAPI(
        title="canonlabel",
        version=_version(),
        lifespan=lifespan,
        description="Consistent open-set labels for streams of short texts.",
        docs_url=None,  # served below from packaged assets: the default page needs a CDN
        redoc_url=None,
    )
    _mount_docs(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        # FastAPI's default handler echoes the raw input, and crashes (500) on a body
        # that is not UTF-8; say what is wrong without echoing it.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    def auth(admin: bool):
        async def check(request: Request) -> None:
            tokens = [settings.admin_token] if admin and settings.admin_token else []
            if not tokens and settings.api_token:
                tokens = [settings.api_token]
            if not tokens:
                return
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            if not any(hmac.compare_digest(given.encode(), t.encode()) for t in tokens):
                raise HTTPException(
                    401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
                )

        return Depends(check)

    user, admin = auth(False), auth(True)

    def service(request: Request) -> Service:
        return request.app.state.service

    async def wait(future):
        return await asyncio.wrap_future(future)

    async def run(request: Request, fn, exclusive=False):
        try:
            return await wait(service(request).call(fn, exclusive=exclusive))
        except ServiceClosed as exc:
            raise HTTPException(503, str(exc)) from None
        except CurationError as exc:
            raise HTTPException(409 if "already" in str(exc) else 422, str(exc)) from None
        except StaleLabelSpaceError as exc:  # another replica changed labels meanwhile
            raise HTTPException(409, str(exc)) from None
        except CanonlabelError as exc:
            raise HTTPException(422, str(exc)) from None

    def check_text(text: str) -> None:
        if len(text) > settings.max_text_chars:
            raise HTTPException(413, f"text over {settings.max_text_chars} characters")

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/classify", response_model=ResultOut, dependencies=[user])
    async def classify(body: ClassifyIn, request: Request) -> Any:
        check_text(body.text)
        try:
            result, error = await wait(service(request).classify(body.text, body.id))
        except ServiceClosed as exc:
            raise HTTPException(503, str(exc)) from None
        if error is not None:
            code = (
                422 if isinstance(error, (EmptyTextError, InputError, RejectedTextError)) else 502
            )
            raise HTTPException(code, str(error))
        return _out(result)

    @app.post("/v1/classify/batch", dependencies=[user])
    async def classify_batch(body: BatchIn, request: Request) -> dict:
        if len(body.items) > settings.max_batch:
            raise HTTPException(413, f"batch over {settings.max_batch} items; split it")
        for item in body.items:
            check_text(item.text)
        svc = service(request)
        try:
            futures = [svc.classify(i.text, i.id) for i in body.items]
        except ServiceClosed as exc:
            raise HTTPException(503, str(exc)) from None
        pairs = await asyncio.gather(*(wait(f) for f in futures))
        return {"results": [_out(result) for result, _ in pairs]}

    @app.get("/v1/labels", dependencies=[user])
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
                    "aliases": list(r.aliases),
                    "category": r.category,
                }
                for r in page
            ],
        }

    @app.get("/v1/labels/{label_id}", dependencies=[user])
    async def label(label_id: int, request: Request) -> dict:
        detail = await run(request, lambda clf: clf.label_detail(label_id))
        if detail is None:
            raise HTTPException(404, f"label {label_id} does not exist")
        return detail

    @app.get("/v1/stats", dependencies=[user])
    async def stats(request: Request) -> dict:
        return await run(request, lambda clf: clf.stats())

    @app.post("/v1/labels/merge", dependencies=[admin])
    async def merge(body: MergeIn, request: Request) -> dict:
        return await run(request, lambda clf: clf.merge(body.from_, body.into), True)

    @app.post("/v1/labels/{label_id}/rename", dependencies=[admin])
    async def rename(label_id: int, body: RenameIn, request: Request) -> dict:
        return await run(request, lambda clf: clf.rename(label_id, body.name), True)

    @app.post("/v1/labels/{label_id}/split", dependencies=[admin])
    async def split(label_id: int, body: SplitIn, request: Request) -> dict:
        how = body.model_dump(exclude_none=True)
        name = how.pop("name", None)
        return await run(request, lambda clf: clf.split(label_id, name=name, **how), True)

    @app.post("/v1/labels/undo", dependencies=[admin])
    async def undo(request: Request) -> dict:
        return await run(request, lambda clf: clf.undo(), True)

    from canonlabel import ui

    ui.mount(app, run, user, settings.projection)

    return app


def _version() -> str:
    from canonlabel import __version__

    return __version__


def _mount_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI shipped in the package, so it works offline."""
    from pathlib import Path

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = Path(__file__).parent / "static" / "swagger"
    app.mount("/static/swagger", StaticFiles(directory=assets), name="swagger")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} API",
            swagger_js_url="/static/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/swagger/swagger-ui.css",
            swagger_favicon_url="/static/swagger/favicon-32x32.png",
        )
