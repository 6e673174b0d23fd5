import asyncio
import signal
import socket
import subprocess
import sys
import time

import httpx

from canonlabel import Classifier, Settings
from canonlabel.server import create_app
from canonlabel.store import SqliteStore
from canonlabel.testing import FakeLabeler, HashEmbedder


def _app(tmp_path, labeler=None, **settings):
    s = Settings(db=tmp_path / "s.db", **settings)
    clf = Classifier(SqliteStore(s.db), HashEmbedder(), labeler or FakeLabeler(), s)
    return create_app(s, classifier=clf), clf


async def _with_client(app, fn, headers=None):
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers or {}
        ) as client:
            return await fn(client)


def run(app, fn, headers=None):
    return asyncio.run(_with_client(app, fn, headers))


def test_classify_batch_labels_stats_roundtrip(tmp_path):
    app, _ = _app(tmp_path, min_similarity=0.8)

    async def go(c):
        r = await c.post("/v1/classify", json={"text": "my card has not arrived", "id": "a"})
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["source"] == "llm" and first["label"] and first["id"] == "a"
        r = await c.post(
            "/v1/classify/batch",
            json={
                "items": [
                    {"text": "my card has not arrived"},
                    {"text": "   "},
                    {"text": "my card has not arrived yet"},
                ]
            },
        )
        results = r.json()["results"]
        assert [x["source"] for x in results] == ["exact", None, "cache"]
        assert "empty" in results[1]["error"]
        assert (await c.post("/v1/classify", json={"text": "\u200b"})).status_code == 422
        labels = (await c.get("/v1/labels")).json()
        assert labels["total"] == 1 and labels["labels"][0]["count"] == 3
        detail = (await c.get(f"/v1/labels/{first['label_id']}")).json()
        assert detail["members"] == ["my card has not arrived"]
        assert (await c.get("/v1/labels/999")).status_code == 404
        stats = (await c.get("/v1/stats")).json()
        assert stats["items"] == 3 and stats["llm_items"] == 1
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/openapi.json")).status_code == 200

    run(app, go)


def test_auth_and_admin_tokens(tmp_path):
    app, _ = _app(tmp_path, api_token="user-t", admin_token="admin-t")

    async def go(c):
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.post("/v1/classify", json={"text": "x y"})).status_code == 401
        h = {"Authorization": "Bearer user-t"}
        assert (await c.post("/v1/classify", json={"text": "x y"}, headers=h)).status_code == 200
        assert (await c.post("/v1/labels/undo", headers=h)).status_code == 401
        a = {"Authorization": "Bearer admin-t"}
        assert (await c.post("/v1/labels/undo", headers=a)).status_code == 422  # nothing to undo

    run(app, go)
    app, _ = _app(tmp_path / "open")

    async def open_(c):
        assert (await c.post("/v1/classify", json={"text": "x y"})).status_code == 200

    run(app, open_)


def test_size_limits(tmp_path):
    app, _ = _app(tmp_path, max_text_chars=50, max_batch=3, max_body_bytes=4096)

    async def go(c):
        assert (await c.post("/v1/classify", json={"text": "x" * 51})).status_code == 413
        r = await c.post("/v1/classify/batch", json={"items": [{"text": "a b"}] * 4})
        assert r.status_code == 413
        r = await c.post(
            "/v1/classify",
            content=b'{"text": "' + b"x" * 5000 + b'"}',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 413 and "body" in r.json()["detail"]

        async def chunked():  # no content-length: the bytes are counted as they come
            yield b'{"text": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}'

        r = await c.post(
            "/v1/classify", content=chunked(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413 and "body" in r.json()["detail"]
        assert (await c.post("/v1/classify", json={"txt": "a"})).status_code == 422

    run(app, go)


def test_curation_over_http(tmp_path):
    labels = iter(["card_delivery", "exchange_rate"])
    app, _ = _app(
        tmp_path,
        FakeLabeler(rule=lambda t, c: next(labels)),
        min_similarity=0.99,
        label_similarity=0.99,
    )

    async def go(c):
        a = (await c.post("/v1/classify", json={"text": "my card has not arrived"})).json()
        b = (await c.post("/v1/classify", json={"text": "what exchange rate"})).json()
        r = await c.post("/v1/labels/merge", json={"from": b["label_id"], "into": a["label_id"]})
        assert r.status_code == 200, r.text
        assert (await c.get("/v1/labels")).json()["total"] == 1
        r = await c.post(f"/v1/labels/{a['label_id']}/rename", json={"name": "card_issue"})
        assert r.json()["to"] == "card_issue"
        assert (await c.post("/v1/labels/undo")).status_code == 200
        names = {x["name"] for x in (await c.get("/v1/labels")).json()["labels"]}
        assert names == {"card_issue", "exchange_rate"}
        r = await c.post(f"/v1/labels/{a['label_id']}/split", json={"k": 2})
        assert r.status_code == 422  # one member: nothing to split

    run(app, go)


def test_concurrent_near_duplicates_cost_one_llm_call(tmp_path):
    llm = FakeLabeler(latency=0.3)
    app, _ = _app(tmp_path, llm, min_similarity=0.8, concurrency=4)
    texts = [
        "my new card has not arrived yet",
        "my new card has not arrived yet!",
        "my new card has not arrived yet, help",
        "my new card has not arrived yet?",
        "My new card has not arrived yet",
    ]

    async def go(c):
        rs = await asyncio.gather(*(c.post("/v1/classify", json={"text": t}) for t in texts))
        assert all(r.status_code == 200 for r in rs)
        assert len({r.json()["label_id"] for r in rs}) == 1

    run(app, go)
    assert llm.calls == 1


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_uvicorn_process(tmp_path):
    port = _free_port()
    db = tmp_path / "real.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "canonlabel.cli",
            "serve",
            "--db",
            str(db),
            "--port",
            str(port),
            "--llm",
            "fake:latency=0.05",
            "--embedder",
            "hash",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = httpx.post(f"{url}/v1/classify", json={"text": "card lost abroad", "id": "x1"})
        assert r.status_code == 200 and r.json()["source"] == "llm"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    # uvicorn re-raises SIGTERM after a graceful shutdown
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert b"Application shutdown complete" in out
    import sqlite3

    row = sqlite3.connect(db).execute("SELECT label_id FROM items WHERE ext_id='x1'").fetchone()
    assert row is not None and row[0] == r.json()["label_id"]


def test_labels_filter_by_category(tmp_path):
    from canonlabel import categories as cat

    app, clf = _app(tmp_path)
    clf.classify_many(["my card has not arrived", "euro exchange rate"])
    f = tmp_path / "c.yaml"
    f.write_text(
        "- {name: cards, description: card delivery}\n- {name: money, description: exchange rate}\n"
    )
    cat.define(clf.store, clf.embedder, cat.load_categories(f))
    cat.map_labels(clf)

    async def go(c):
        all_ = (await c.get("/v1/labels")).json()
        assert all(x["category"] for x in all_["labels"])
        some = (await c.get("/v1/labels", params={"category": "cards"})).json()
        assert some["total"] == sum(x["category"] == "cards" for x in all_["labels"])

    run(app, go)
