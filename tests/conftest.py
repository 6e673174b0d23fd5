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


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A real PostgreSQL 16 with pgvector (``pgserver`` from PyPI), or the server named by
    ``CANONLABEL_TEST_PG`` (a URL whose database may be replaced). Skips without either."""
    import os

    url = os.environ.get("CANONLABEL_TEST_PG")
    if url:
        yield url
        return
    pgserver = pytest.importorskip("pgserver")
    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture
def pg_url(pg_server):
    """A fresh, empty database on the test server."""
    import uuid

    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield _with_database(pg_server, name)


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    """A new store location on each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "contract.db")
    return request.getfixturevalue("pg_url")
