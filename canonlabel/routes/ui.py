"""``/ui``: the exploration page (HTML, JS, CSS shipped in the package) and its JSON API.

The page itself holds no data, so it loads without a token; every ``/ui/api`` route needs
the same bearer token as ``/v1``, and the page's curation buttons call the ``/v1`` curation
routes with the admin token typed into the page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from canonlabel import explore
from canonlabel.routes.deps import run, user
from canonlabel.ui import ASSETS

router = APIRouter(prefix="/ui")


def mount(app) -> None:
    """Add the page's routes and its static files to ``app``."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=ASSETS), name="ui")


@router.get("", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(ASSETS / "index.html")


@router.get("/api/points", dependencies=[user])
async def points(request: Request) -> dict:
    projection = request.app.state.settings.projection

    def load(clf):
        explore.project(clf.store, clf.dim, projection)
        return explore.points(clf)

    return await run(request, load)


@router.get("/api/items/{item_id}", dependencies=[user])
async def item(item_id: int, request: Request) -> dict:
    found = await run(request, lambda clf: explore.item_detail(clf, item_id))
    if found is None:
        raise HTTPException(404, f"item {item_id} does not exist")
    return found


@router.get("/api/labels/{label_id}/members", dependencies=[user])
async def members(
    label_id: int, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 200
) -> dict:
    rows = await run(request, lambda clf: explore.members(clf, label_id, limit))
    return {"label_id": label_id, "members": rows}


@router.get("/api/search", dependencies=[user])
async def search(
    request: Request,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    mode: Annotated[str, Query(pattern="^(name|text)$")] = "name",
) -> dict:
    return {"labels": await run(request, lambda clf: explore.search_labels(clf, q, mode))}


@router.get("/api/curves", dependencies=[user])
async def curves(request: Request) -> dict:
    return await run(request, explore.curves)
