"""``/v1/labels`` curation: merge, rename, split and undo (the admin token). Each runs
alone on the service's worker thread (``exclusive``), between batches."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from canonlabel.routes.deps import admin, run

router = APIRouter(prefix="/v1/labels", dependencies=[admin])


class MergeIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: int = Field(alias="from")
    into: int


class RenameIn(BaseModel):
    name: str


class HierarchyIn(BaseModel):
    top: int = Field(12, ge=1, le=1000)
    levels: int = Field(1, ge=1, le=4)


class SplitIn(BaseModel):
    k: int | None = None
    aliases: list[str] | None = None
    items: list[int] | None = None
    name: str | None = None


@router.post("/merge")
async def merge(body: MergeIn, request: Request) -> dict:
    return await run(request, lambda clf: clf.merge(body.from_, body.into), True)


@router.post("/{label_id}/rename")
async def rename(label_id: int, body: RenameIn, request: Request) -> dict:
    return await run(request, lambda clf: clf.rename(label_id, body.name), True)


@router.post("/{label_id}/split")
async def split(label_id: int, body: SplitIn, request: Request) -> dict:
    how = body.model_dump(exclude_none=True)
    name = how.pop("name", None)
    return await run(request, lambda clf: clf.split(label_id, name=name, **how), True)


@router.post("/undo")
async def undo(request: Request) -> dict:
    return await run(request, lambda clf: clf.undo(), True)


@router.post("/hierarchy")
async def fit_hierarchy(body: HierarchyIn, request: Request) -> dict:
    """Group the labels into named parents (see ``canonlabel hierarchy``)."""
    from canonlabel.hierarchy import as_dict

    def fit(clf) -> dict:
        tree = clf.hierarchy(top=body.top, levels=body.levels)
        parents = as_dict(tree, clf.space, clf.label_counts())
        return {"parents": parents, "seconds": tree.seconds, "calls": tree.calls}

    return await run(request, fit, True)


class MoveIn(BaseModel):
    label: int
    parent: int


@router.post("/hierarchy/parents/{parent_id}/rename")
async def rename_parent(parent_id: int, body: RenameIn, request: Request) -> dict:
    from canonlabel import parents

    return await run(request, lambda clf: parents.rename(clf, parent_id, body.name), True)


@router.post("/hierarchy/move")
async def move_label(body: MoveIn, request: Request) -> dict:
    """Put a label under another level-1 parent."""
    from canonlabel import parents

    return await run(request, lambda clf: parents.move(clf, body.label, body.parent), True)


@router.post("/hierarchy/parents/merge")
async def merge_parents(body: MergeIn, request: Request) -> dict:
    from canonlabel import parents

    return await run(request, lambda clf: parents.merge(clf, body.from_, body.into), True)


@router.post("/hierarchy/undo")
async def undo_parents(request: Request) -> dict:
    """Undo the latest parent edit."""
    from canonlabel import parents

    return await run(request, parents.undo, True)
