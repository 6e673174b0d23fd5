"""Beyond one machine, measured on this one: service workers on PostgreSQL vs SQLite, a Ray
batch vs the plain CLI, and pgvector HNSW vs exact search.

    .venv/bin/python benchmarks/scaling.py [--part service|ray|hnsw|all] [--out FILE.json]

1. service: 1 `canonlabel serve` on SQLite, 1 and 2 on one PostgreSQL database (requests
   spread round-robin, as a load balancer would), MiniLM, fake LLM with 500 ms latency:
   mixed traffic (half repeats, open loop) and all-hit traffic (closed loop, 16 clients);
   requests/s and p50/p95. Two SQLite writers are refused by design (one writer lock).
2. ray: 10,000 shuffled Banking77 texts through the plain CLI and ``classify --ray``
   (SQLite, one labeller; PostgreSQL, two labellers), fake LLM with 50 ms latency:
   seconds, labels agreeing with the plain job, LLM calls.
3. hnsw: recall@1 and latency of the HNSW index against exact search over cached items.
4. lock: how long each LLM answer's canonicalisation holds the label-space lock.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from load import closed_loop, free_port, mixed_texts, start, summary  # benchmarks/ is on the path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77.jsonl"


def _postgres(tmp: Path):
    import pgserver
    import psycopg

    server = pgserver.get_server(tmp / "pg", cleanup_mode="stop")
    base = server.get_uri()

    def database(name: str) -> str:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
            conn.execute(f"CREATE DATABASE {name}")
        return base.replace("/postgres?", f"/{name}?")

    return server, database


async def _open_loop_spread(urls, texts, rate, seconds) -> dict:
    """Open loop at ``rate`` requests/s, request i to ``urls[i % len(urls)]``."""
    import httpx

    latencies, errors = [], 0
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    clients = [httpx.AsyncClient(base_url=u, timeout=30, limits=limits) for u in urls]

    async def one(i, text):
        nonlocal errors
        t = time.perf_counter()
        try:
            r = await clients[i % len(clients)].post("/v1/classify", json={"text": text})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t)
            else:
                errors += 1
        except httpx.HTTPError:
            errors += 1

    tasks, start = [], time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, texts[i % len(texts)])))
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in clients:
        await c.aclose()
    return summary(latencies, errors, time.perf_counter() - start)


async def _closed_spread(urls, texts, seconds) -> dict:
    parts = await asyncio.gather(*(closed_loop(u, texts, 16 // len(urls), seconds) for u in urls))
    ok = sum(p["ok"] for p in parts)
    return {
        "ok": ok,
        "errors": sum(p["errors"] for p in parts),
        "rps": round(sum(p["rps"] for p in parts), 1),
        "p50_ms": max(p["p50_ms"] for p in parts),
        "p95_ms": max(p["p95_ms"] for p in parts),
    }


def part_service(tmp: Path, rate: float, seconds: float) -> dict:
    rows = [json.loads(x) for x in DATA.open(encoding="utf-8")]
    pool = [r["text"] for r in rows if r["split"] == "test"]
    texts = mixed_texts(pool, int(rate * seconds))
    server, database = _postgres(tmp)
    out = {}
    try:
        for name, db, workers in (
            ("sqlite_1", str(tmp / "s.db"), 1),
            ("postgres_1", database("svc1"), 1),
            ("postgres_2", database("svc2"), 2),
        ):
            ports = [free_port() for _ in range(workers)]
            procs = [start(db, p, "minilm") for p in ports]  # a URL works as --db too
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            try:
                mixed = asyncio.run(_open_loop_spread(urls, texts, rate, seconds))
                hits = asyncio.run(_closed_spread(urls, list(dict.fromkeys(texts)), 10))
            finally:
                for p in procs:
                    p.terminate()
                    p.wait(60)
            out[name] = {"workers": workers, "mixed": mixed, "all_hits": hits}
            print(name, json.dumps(out[name]), flush=True)
    finally:
        server.cleanup()
    return out


def _classify(args: list[str]) -> float:
    # router off and one LLM call at a time: then the job is deterministic (otherwise the
    # order in which concurrent answers land changes the candidates later texts are shown)
    env = dict(os.environ, CANONLABEL_ROUTER="0")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "canonlabel.cli", "classify", *args],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return time.perf_counter() - start


def part_ray(tmp: Path, n: int) -> dict:
    rows = [json.loads(x) for x in DATA.open(encoding="utf-8")]
    random.Random(0).shuffle(rows)
    src = tmp / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"b{i}", "text": r["text"]}) + "\n"
                           for i, r in enumerate(rows[:n])), encoding="utf-8")  # fmt: skip
    server, database = _postgres(tmp)
    common = ["--llm", "fake:latency=0.02", "--embedder", "minilm", "--concurrency", "1"]
    runs = {}
    try:
        for name, db, extra in (
            ("plain_sqlite", str(tmp / "plain.db"), []),
            ("ray_sqlite_1", str(tmp / "ray.db"), ["--ray"]),
            ("ray_postgres_2", database("ray2"), ["--ray", "--ray-labelers", "2"]),
        ):
            out, summ = tmp / f"{name}.jsonl", tmp / f"{name}.summary.json"
            seconds = _classify(
                [str(src), "-o", str(out), "--db", db, "--summary-json", str(summ), *common, *extra]
            )
            s = json.loads(summ.read_text())
            labels = {}
            for line in out.read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                labels[r["id"]] = r.get("label")
            runs[name] = {
                "seconds": round(seconds, 1),
                "llm_calls": s["llm_calls"],
                "labels": s["labels"],
                "failed": s["failed"],
                "_labels": labels,
            }
            print(name, {k: v for k, v in runs[name].items() if k != "_labels"}, flush=True)
    finally:
        server.cleanup()
    from sklearn.metrics import adjusted_rand_score

    base = runs["plain_sqlite"]["_labels"]
    keys = sorted(base)
    for run in runs.values():
        mine = run.pop("_labels")
        run["same_label_as_plain"] = round(sum(mine[k] == v for k, v in base.items()) / n, 4)
        run["ari_vs_plain"] = round(
            adjusted_rand_score([base[k] for k in keys], [mine[k] for k in keys]), 4
        )
    return {"items": n, "llm": "fake, 20 ms", "concurrency": 1, "router": False, **runs}


def part_hnsw(tmp: Path, sizes=(100_000,), queries: int = 500) -> dict:
    """Recall@1 and latency of pgvector HNSW (ef_search 40/100) vs exact search: real
    MiniLM embeddings of Banking77 (10,000 cached, the other 3,083 as queries), and
    synthetic clustered vectors at larger sizes."""
    from canonlabel.config import Settings
    from canonlabel.embed import make_embedder

    rows = [json.loads(x)["text"] for x in DATA.open(encoding="utf-8")]
    random.Random(2).shuffle(rows)
    real = make_embedder("minilm", Settings()).embed(rows)
    rng = np.random.default_rng(0)
    cases = {"banking77_minilm_10000": (real[:10_000], real[10_000:])}
    for n in sizes:
        # 2,000 topics, spread like text embeddings around them (cosine ~0.6 to the centre)
        centres = rng.normal(size=(2_000, 384)).astype(np.float32)
        pick = rng.integers(0, 2_000, n + queries)
        vecs = centres[pick] + 1.3 * rng.normal(size=(n + queries, 384))
        vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
        cases[f"synthetic_{n}"] = (vecs[:n], vecs[n:])
    server, database = _postgres(tmp)
    out = {}
    try:
        for name, (vecs, q) in cases.items():
            out[name] = _hnsw_case(database(name.lower()), vecs, q)
            print(name, out[name], flush=True)
    finally:
        server.cleanup()
    return out


def _hnsw_case(url: str, vecs: np.ndarray, q: np.ndarray) -> dict:
    from canonlabel.store import open_store

    store = open_store(url)
    store.bind_embedder("bench", vecs.shape[1])
    start = time.perf_counter()
    with store.write() as c:
        label = store.labels.insert(c, "x", vecs[0])
        store.items.insert(
            c,
            [{"ext_id": str(i), "text": f"t{i}", "text_key": f"t{i}", "label_id": label,
              "source": "cache", "vector": v, "cached": True} for i, v in enumerate(vecs)],
        )  # fmt: skip
    load = time.perf_counter() - start
    start = time.perf_counter()
    store.ensure_vector_index()
    build = time.perf_counter() - start
    by_ext = dict(store.query("SELECT ext_id, id FROM items"))
    ids = np.array([by_ext[str(i)] for i in range(len(vecs))])
    start = time.perf_counter()
    exact_best = ids[(q @ vecs.T).argmax(axis=1)]
    row = {
        "items": len(vecs),
        "queries": len(q),
        "insert_seconds": round(load, 1),
        "build_seconds": round(build, 1),
        "exact_ms_per_query": round((time.perf_counter() - start) * 1000 / len(q), 3),
    }
    for ef in (40, 100):
        start = time.perf_counter()
        _, found = store.nearest_cached(q, 1, ef_search=ef)
        row[f"hnsw_ef{ef}_ms_per_query"] = round((time.perf_counter() - start) * 1000 / len(q), 3)
        row[f"hnsw_ef{ef}_recall_at_1"] = round(float((found[:, 0] == exact_best).mean()), 4)
    start = time.perf_counter()  # rows written while the index exists, as a live service does
    with store.write() as c:
        store.items.insert(
            c,
            [{"ext_id": f"late{i}", "text": f"late{i}", "text_key": f"late{i}", "label_id": label,
              "source": "cache", "vector": v, "cached": True} for i, v in enumerate(q[:500])],
        )  # fmt: skip
    row["insert_with_index_ms_per_row"] = round((time.perf_counter() - start) * 2, 2)
    row["insert_without_index_ms_per_row"] = round(load * 1000 / len(vecs), 2)
    size = store.query_one("SELECT pg_relation_size('items_embedding')")[0]
    row["hnsw_index_mb"] = round(size / 2**20, 1)
    row["table_mb"] = round(store.query_one("SELECT pg_total_relation_size('items')")[0] / 2**20, 1)
    store.close()
    return row


def part_lock(tmp: Path, n: int = 3000) -> dict:
    """How long canonicalisation holds the label-space lock: the store time of each LLM
    answer's transaction (MiniLM, fake LLM without latency), SQLite vs PostgreSQL."""
    from canonlabel import Classifier, Settings
    from canonlabel.embed import make_embedder
    from canonlabel.store import open_store
    from canonlabel.testing import FakeLabeler

    rows = [json.loads(x) for x in DATA.open(encoding="utf-8")]
    random.Random(1).shuffle(rows)
    texts = [r["text"] for r in rows[:n]]
    server, database = _postgres(tmp)
    embedder = make_embedder("minilm", Settings())
    out = {}
    try:
        for name, db in (("sqlite", str(tmp / "lock.db")), ("postgres", database("lock"))):
            s = Settings(db=db, consolidate_every=0, router=False)
            with Classifier(open_store(db), embedder, FakeLabeler(), s) as clf:
                results = clf.classify_many(texts)
            hold = np.array([r.timings["store"] for r in results if r.source == "llm"]) * 1000
            out[name] = {
                "llm_items": len(hold),
                "lock_hold_p50_ms": round(float(np.percentile(hold, 50)), 2),
                "lock_hold_p95_ms": round(float(np.percentile(hold, 95)), 2),
                "canonicalisations_per_s_bound": round(1000 / float(np.mean(hold)), 1),
            }
            print(name, out[name], flush=True)
    finally:
        server.cleanup()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", default="all", choices=["service", "ray", "hnsw", "lock", "all"])
    ap.add_argument("--rate", type=float, default=40)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    report: dict = {"cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.part in ("hnsw", "all"):
            report["hnsw"] = part_hnsw(tmp)
        if args.part in ("lock", "all"):
            report["lock"] = part_lock(tmp)
        if args.part in ("service", "all"):
            report[f"service_rate{args.rate:g}"] = part_service(tmp, args.rate, args.seconds)
        if args.part in ("ray", "all"):
            report["ray"] = part_ray(tmp, args.items)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        old = json.loads(args.out.read_text()) if args.out.exists() else {}
        args.out.write_text(json.dumps(old | report, indent=1) + "\n")


if __name__ == "__main__":
    main()
