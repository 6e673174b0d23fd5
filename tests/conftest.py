from __future__ import annotations

import pytest

from canonlabel import Classifier, Settings
from canonlabel.store import SqliteStore
from canonlabel.testing import FakeLabeler, HashEmbedder


@pytest.fixture
def make_clf(tmp_path):
    """Build a Classifier on fakes; returns (clf, labeler)."""
    opened = []

    def make(db="t.db", labeler=None, embedder=None, **settings):
        labeler = labeler or FakeLabeler()
        clf = Classifier(
            SqliteStore(tmp_path / db),
            embedder or HashEmbedder(),
            labeler,
            Settings(db=tmp_path / db, **settings),
        )
        opened.append(clf)
        return clf, labeler

    yield make
    for clf in opened:
        try:
            clf.close()
        except Exception:
            pass


def run_cli(*args, timeout=300, **kw):
    """Run ``python -m canonlabel.cli ARGS`` and return the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "canonlabel.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def with_app(app, fn):
    """Run ``await fn(client)`` against ``app`` in-process, lifespan included."""
    import asyncio

    import httpx

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await fn(client)

    return asyncio.run(go())
