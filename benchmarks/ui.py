"""Exploration page benchmark: projection time, first paint and frame time while panning.

    .venv/bin/python benchmarks/ui.py                      # 1,000 and 100,000 points
    .venv/bin/python benchmarks/ui.py --sizes 10000 --projection umap

A store is written directly (labels = Banking77 intents, one item per text, texts repeated
with a suffix to reach the size; MiniLM vectors for 1,000 points, the hash embedder above),
projected (timed), served, and opened in headless Chromium (Debian's, via playwright):
time from navigation to the first drawn frame, then 120 frames of drag-panning: render time
per frame as the page measures it (`gl.finish()` included) and wall time between frames. Screenshots go to docs/ui_<n>.png.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "banking77.jsonl"
OUT = ROOT / "benchmarks" / "results"


def build(path: Path, n: int, embedder) -> None:
    from canonlabel.canon import label_text
    from canonlabel.normalize import text_key
    from canonlabel.store import SqliteStore

    rows = [json.loads(x) for x in DATA.open(encoding="utf-8")]
    random.Random(0).shuffle(rows)
    base = [r["text"] for r in rows]
    texts = [base[i % len(base)] + ("" if i < len(base) else f" (#{i})") for i in range(n)]
    intents = [rows[i % len(rows)]["labels"][0].lower() for i in range(n)]
    vectors = embedder.embed(texts)
    store = SqliteStore(path)
    store.bind_embedder(embedder.id, embedder.dim)
    names = sorted(set(intents))
    label_vectors = embedder.embed([label_text(x) for x in names])
    with store.write() as c:
        ids = {x: store.labels.insert(c, x, v) for x, v in zip(names, label_vectors)}
        for x in names:
            store.aliases.insert(c, x, ids[x], None, None)
        store.items.insert(
            c,
            (
                {
                    "ext_id": str(i),
                    "text": t,
                    "text_key": text_key(t),
                    "label_id": ids[g],
                    "raw_label": g,
                    "source": "llm",
                    "vector": v,
                    "cached": True,
                }
                for i, (t, g, v) in enumerate(zip(texts, intents, vectors))
            ),
        )
    store.close()


def measure(n: int, projection: str, shots: Path | None) -> dict:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from canonlabel import Classifier, Settings, explore
    from canonlabel.embed import make_embedder
    from canonlabel.server import create_app
    from canonlabel.testing import FakeLabeler

    embedder = make_embedder("minilm" if n <= 2000 else "hash", Settings())
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "ui.db"
        t = time.perf_counter()
        build(db, n, embedder)
        build_s = time.perf_counter() - t
        s = Settings(db=db, projection=projection, consolidate_every=0, router=False)
        clf = Classifier.open(settings=s, embedder=embedder, labeler=FakeLabeler())
        t = time.perf_counter()
        explore.project(clf.store, clf.dim, projection)
        project_s = time.perf_counter() - t
        port = _port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(s, classifier=clf), port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        time.sleep(1.0)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            t = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}/ui")
            page.wait_for_function(
                "window.__canonlabel && window.__canonlabel.ready", timeout=600_000
            )
            first_paint_s = time.perf_counter() - t
            page.evaluate("window.__canonlabel.frames = []; window.__canonlabel.stamps = []")
            page.mouse.move(500, 450)
            page.mouse.down()
            for step in range(120):
                page.mouse.move(500 + 3 * step, 450 + (step % 20))
                page.evaluate("() => new Promise(requestAnimationFrame)")
            page.mouse.up()
            frames = page.evaluate("window.__canonlabel.frames")
            stamps = page.evaluate("window.__canonlabel.stamps")
            gaps = np.diff(stamps) if len(stamps) > 1 else np.zeros(0)
            if shots is not None:
                page.evaluate(
                    "() => { const v = window.__canonlabel.view; v.x = 0; v.y = 0; v.k = 1; }"
                )
                page.mouse.wheel(0, 1)
                page.wait_for_timeout(300)
                page.click("#labels li .name")
                page.wait_for_selector("#members li")
                page.screenshot(path=str(shots / f"ui_{_short(n)}.png"))
            browser.close()
        server.should_exit = True
        thread.join(10)
        clf.close()
    return {
        "points": n,
        "projection": projection,
        "build_store_s": round(build_s, 1),
        "projection_s": round(project_s, 2),
        "first_paint_s": round(first_paint_s, 2),
        "pan_frame_ms_median": round(float(np.median(frames)), 1) if frames else None,
        "pan_frame_ms_p95": round(float(np.percentile(frames, 95)), 1) if frames else None,
        "frames": len(frames),
        # wall time between successive frames while dragging (includes the browser's work
        # and the driver's mouse events: an upper bound on what a user sees)
        "pan_interval_ms_median": round(float(np.median(gaps)), 1) if len(gaps) else None,
        "pan_interval_ms_p95": round(float(np.percentile(gaps, 95)), 1) if len(gaps) else None,
    }


def _short(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 else str(n)


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--projection", default="pca")
    parser.add_argument("--no-screenshots", action="store_true")
    args = parser.parse_args()
    shots = None if args.no_screenshots else ROOT / "docs"
    if shots:
        shots.mkdir(exist_ok=True)
    report = [measure(int(n), args.projection, shots) for n in args.sizes.split(",")]
    print(json.dumps(report, indent=2))
    OUT.mkdir(exist_ok=True)
    (OUT / f"ui_{args.projection}.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
