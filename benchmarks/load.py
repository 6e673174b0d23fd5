"""Load and fault checks for `canonlabel serve`, loopback only, bounded in time and count.

    .venv/bin/python benchmarks/load.py [--embedder minilm] [--out benchmarks/results/load.json]

1. mixed traffic: new and repeated texts at a fixed arrival rate (open loop), fake LLM
   with 500 ms latency, concurrency 16: throughput, p50/p95 latency, errors;
2. all-hit traffic: single-text requests for texts already labelled, closed loop;
3. retraining: hit requests (closed loop, 4 workers) while new texts stream in fast
   enough that the online router refits its head in the background: hit p50/p99 and the
   heads fitted meanwhile (the target: retraining never holds a request > 50 ms at p99);
4. SIGKILL under load, restart: integrity check, and every request that got a 200 is in
   the store with the label it returned.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(db: Path, port: int, embedder: str, log=subprocess.DEVNULL) -> subprocess.Popen:
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
            "fake:latency=0.5",
            "--embedder",
            embedder,
            "--concurrency",
            "16",
        ],
        stdout=log,
        stderr=log,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not start")


def summary(latencies, errors, seconds) -> dict:
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies) + errors,
        "ok": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 2),
        "rps": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
    }


async def open_loop(url, texts, rate, seconds, record=None) -> dict:
    """Send at ``rate`` requests/s for ``seconds`` regardless of responses."""
    latencies, errors = [], 0
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one(i, text):
            nonlocal errors
            t = time.perf_counter()
            try:
                r = await client.post("/v1/classify", json={"text": text, "id": f"r{i}"})
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t)
                    if record is not None:
                        record[f"r{i}"] = r.json()["label_id"]
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1

        tasks, start = [], time.perf_counter()
        n = int(rate * seconds)
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, texts[i % len(texts)])))
        await asyncio.gather(*tasks, return_exceptions=True)
        return summary(latencies, errors, time.perf_counter() - start)


async def closed_loop(url, texts, workers, seconds) -> dict:
    latencies, errors = [], 0
    stop = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def worker(w):
            nonlocal errors
            i = w
            while time.perf_counter() < stop:
                t = time.perf_counter()
                try:
                    r = await client.post("/v1/classify", json={"text": texts[i % len(texts)]})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1
                i += workers

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(workers)))
        return summary(latencies, errors, time.perf_counter() - start)


def router_state(url: str) -> dict:
    router = httpx.get(f"{url}/v1/stats", timeout=30).json().get("router") or {}
    return {k: router.get(k) for k in ("version", "trained_on", "train_seconds")}


async def during_retraining(url, hits, fresh, rate, seconds) -> dict:
    """Hit latency while ``fresh`` texts arrive at ``rate``/s (their labelled items make
    the router refit); the heads fitted meanwhile say whether retraining happened."""
    before = router_state(url)
    stream = asyncio.create_task(open_loop(url, fresh, rate, seconds))
    measured = await closed_loop(url, hits, 4, seconds)
    streamed = await stream
    after = router_state(url)
    return {
        "hits": measured,
        "stream": streamed,
        "router_before": before,
        "router_after": after,
        "heads_fitted": (after["version"] or 0) - (before["version"] or 0),
    }


def mixed_texts(pool: list[str], n: int, seed: int = 0) -> list[str]:
    """Half repeats of earlier texts, half new texts."""
    rng = random.Random(seed)
    fresh, out = iter(pool), []
    for _ in range(n):
        out.append(rng.choice(out) if out and rng.random() < 0.5 else next(fresh))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--embedder", default="minilm")
    ap.add_argument("--rate", type=float, default=50)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = [json.loads(x) for x in DATA.open()]
    pool = [r["text"] for r in rows if r["split"] == "test"]
    report = {"embedder": args.embedder, "llm": "fake, 500 ms", "concurrency": 16}
    with tempfile.TemporaryDirectory() as tmp:
        db, port = Path(tmp) / "load.db", free_port()
        url = f"http://127.0.0.1:{port}"
        server_log = (Path(tmp) / "server.log").open("wb")
        proc = start(db, port, args.embedder, server_log)
        try:
            texts = mixed_texts(pool, int(args.rate * args.seconds))
            report["mixed"] = asyncio.run(open_loop(url, texts, args.rate, args.seconds))
            seen = list(dict.fromkeys(texts))
            report["all_hits"] = asyncio.run(closed_loop(url, seen, 16, 10))
            fresh = [t for t in pool[1000:] if t not in set(seen)][:1400]
            report["retraining"] = asyncio.run(during_retraining(url, seen, fresh, 12, 40))
            if proc.poll() is not None:  # the server died: say why, do not go on
                server_log.close()
                raise SystemExit((Path(tmp) / "server.log").read_text()[-3000:])
            # 3. SIGKILL under load, then restart
            record: dict[str, int] = {}
            kill_texts = mixed_texts(pool[2400:], 400, seed=1)

            async def load_then_kill():
                task = asyncio.create_task(open_loop(url, kill_texts, 40, 10, record))
                await asyncio.sleep(4)
                os.kill(proc.pid, signal.SIGKILL)
                return await task

            killed = asyncio.run(load_then_kill())
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
        conn = sqlite3.connect(db)
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        stored = dict(conn.execute("SELECT ext_id, label_id FROM items WHERE ext_id LIKE 'r%'"))
        conn.close()
        proc = start(db, port, args.embedder)  # restart works on the same store
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        missing = [k for k in record if k not in stored]
        wrong = [k for k in record if k in stored and stored[k] != record[k]]
        report["sigkill"] = {
            "acknowledged": len(record),
            "integrity": integrity,
            "missing": len(missing),
            "wrong_label": len(wrong),
            "requests_before_kill": killed["requests"],
        }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_locust(minutes: float, rate: float, embedder: str = "minilm") -> dict:
    """``locust`` headless against a fresh `canonlabel serve` (fake LLM, 500 ms) at a
    steady ``rate`` requests/s for ``minutes``; server memory sampled every 5 s."""
    import csv

    rows = [json.loads(x) for x in DATA.open(encoding="utf-8")]
    random.Random(0).shuffle(rows)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "texts.json").write_text(json.dumps([r["text"] for r in rows[:5000]]))
        port = free_port()
        server = start(tmp / "load.db", port, embedder)
        env = dict(os.environ, CANONLABEL_LOAD_TEXTS=str(tmp / "texts.json"))
        users = max(1, int(rate))
        locust = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")),
             "--headless", "--host", f"http://127.0.0.1:{port}", "-u", str(users), "-r",
             str(users), "--run-time", f"{int(minutes * 60)}s", "--csv", str(tmp / "l"),
             "--only-summary", "--stop-timeout", "10"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        memory = []
        while locust.poll() is None:
            memory.append(round(_rss_mb(server.pid), 1))
            time.sleep(5)
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        with (tmp / "l_stats.csv").open() as fh:
            stats = {r["Name"]: r for r in csv.DictReader(fh)}
        conn = sqlite3.connect(tmp / "load.db")
        integrity = conn.execute("PRAGMA integrity_check").fetchone()
        items = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        cached = conn.execute("SELECT count(*) FROM items WHERE cached = 1").fetchone()[0]
        conn.close()
    total = stats["Aggregated"]
    warm = memory[len(memory) // 5 :] or memory  # after the first fifth: models loaded
    return {
        "minutes": minutes,
        "target_rps": rate,
        "requests": int(total["Request Count"]),
        "failures": int(total["Failure Count"]),
        "rps": round(float(total["Requests/s"]), 2),
        "p50_ms": float(total["50%"]),
        "p95_ms": float(total["95%"]),
        "p99_ms": float(total["99%"]),
        "by_kind_p95_ms": {k: float(v["95%"]) for k, v in stats.items() if k != "Aggregated"},
        "server_rss_mb": {"after_warmup": warm[0], "end": warm[-1], "max": max(warm)},
        # growth per minute over the second half, when only the store's growth remains
        "rss_mb_per_minute_second_half": round(
            (warm[-1] - warm[len(warm) // 2]) / max(1e-9, (len(warm) - len(warm) // 2) * 5 / 60), 2
        ),
        "rss_samples_mb": memory,
        "items_stored": items,
        "cached_items": cached,
        "integrity": integrity[0],
        "locust_exit": locust.returncode,
    }
