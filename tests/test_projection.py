"""The map's projection: deterministic, cached in the store, and incremental."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from canonlabel import Classifier, Settings
from canonlabel.explore import project
from canonlabel.testing import FakeLabeler, HashEmbedder

DATA = Path(__file__).parent / "data" / "banking77_200.jsonl"
TEXTS = [json.loads(x)["text"] for x in DATA.read_text(encoding="utf-8").splitlines()]


def _positions(clf) -> dict[int, tuple[float, float]]:
    return {i: (x, y) for i, x, y in clf.store.conn.execute("SELECT item_id, x, y FROM projection")}


def _open(tmp_path: Path, name: str) -> Classifier:
    s = Settings(db=tmp_path / name, consolidate_every=0, router=False)
    return Classifier.open(settings=s, embedder=HashEmbedder(), labeler=FakeLabeler())


@pytest.mark.parametrize("method", ["pca", "umap"])
def test_projection_is_deterministic_cached_and_incremental(tmp_path, method):
    if method == "umap":
        pytest.importorskip("umap")
    maps = []
    for name in ("a.db", "b.db"):
        with _open(tmp_path, name) as clf:
            clf.classify_many(TEXTS[:150])
            placed = project(clf.store, clf.dim, method)
            assert placed == len(_positions(clf)) > 100
            assert project(clf.store, clf.dim, method) == 0  # cached: nothing to redo
            maps.append(_positions(clf))
    assert maps[0] == maps[1]  # same store, same map
    with _open(tmp_path, "a.db") as clf:
        clf.classify_many(TEXTS[150:])
        new = project(clf.store, clf.dim, method)
        after = _positions(clf)
    assert new == len(after) - len(maps[0]) > 0
    assert all(after[i] == xy for i, xy in maps[0].items())  # old points never move
    xs = np.array(list(after.values()))
    assert np.isfinite(xs).all()


def test_new_items_land_next_to_their_nearest_neighbours(tmp_path):
    pytest.importorskip("umap")
    from canonlabel.store import from_blobs

    with _open(tmp_path, "n.db") as clf:
        clf.classify_many(TEXTS[:150])
        project(clf.store, clf.dim, "umap")
        old = _positions(clf)
        clf.classify_many(TEXTS[150:180])
        assert project(clf.store, clf.dim, "umap") > 0
        rows = clf.store.conn.execute(
            "SELECT id, vector FROM items WHERE vector IS NOT NULL ORDER BY id"
        ).fetchall()
        now = _positions(clf)
    ids = [r[0] for r in rows]
    vectors = from_blobs([r[1] for r in rows], clf.dim)
    placed = [n for n, i in enumerate(ids) if i in old]
    xy = np.array([old[ids[n]] for n in placed])
    typical = float(np.median(np.linalg.norm(xy[:, None] - xy[None, :], axis=-1)))
    gaps = []
    for n, i in enumerate(ids):
        if i in old:
            continue
        nearest = ids[placed[int(np.argmax(vectors[placed] @ vectors[n]))]]
        gaps.append(float(np.linalg.norm(np.subtract(now[i], old[nearest]))))
    assert gaps and np.median(gaps) < 0.5 * typical
