"""The exploration page in a real browser (Playwright driving Debian's Chromium)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from canonlabel import Classifier, Settings
from canonlabel.server import create_app
from canonlabel.testing import FakeLabeler, HashEmbedder

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DATA = Path(__file__).parent / "data" / "banking77_200.jsonl"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Chromium (apt-get install chromium)"
)
ADMIN = "admin-secret"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    tmp = tmp_path_factory.mktemp("ui")
    settings = Settings(db=tmp / "ui.db", admin_token=ADMIN, consolidate_every=0)
    clf = Classifier.open(settings=settings, embedder=HashEmbedder(), labeler=FakeLabeler())
    texts = [json.loads(x)["text"] for x in DATA.read_text(encoding="utf-8").splitlines()]
    clf.classify_many(texts)
    port = _port()
    config = uvicorn.Config(create_app(settings, classifier=clf), port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield url
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(server + "/ui")
    page.wait_for_function("window.__canonlabel && window.__canonlabel.ready", timeout=30_000)
    yield page
    page.close()


PAINTED = """() => {
  const gl = document.getElementById('gl'), c = document.createElement('canvas');
  c.width = gl.width; c.height = gl.height;
  const ctx = c.getContext('2d'); ctx.drawImage(gl, 0, 0);
  const px = ctx.getImageData(0, 0, c.width, c.height).data;
  let lit = 0;
  for (let i = 0; i < px.length; i += 4) if (px[i] + px[i + 1] + px[i + 2] > 150) lit++;
  return lit;
}"""


def _labels(server) -> int:
    return httpx.get(server + "/v1/labels?limit=1000").json()["total"]


def test_the_page_draws_every_point(page):
    state = page.evaluate(
        "() => ({n: window.__canonlabel.pointsDrawn, labels: window.__canonlabel.data.labels.length})"
    )
    assert state["n"] == 200 and state["labels"] > 1
    assert page.evaluate(PAINTED) > 200  # lit pixels: the points are on the canvas
    assert "200 items" in page.inner_text("#status")


def test_clicking_a_label_lists_its_members(page):
    page.click("#labels li .name")
    page.wait_for_selector("#members li")
    assert page.inner_text("#detail-name") and page.locator("#members li").count() >= 1


def test_merge_from_the_page_then_undo(page, server):
    before = _labels(server)
    page.click("#tokens summary")
    page.fill("#admin-token", ADMIN)
    boxes = page.locator("#labels li input[type=checkbox]")
    boxes.nth(0).click()
    boxes.nth(1).click()
    page.click("#merge")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('merged')")
    assert _labels(server) == before - 1
    page.click("#undo")
    page.wait_for_function("document.getElementById('message').textContent === 'undone'")
    assert _labels(server) == before


def test_curation_without_the_admin_token_is_refused(page, server):
    before = _labels(server)
    boxes = page.locator("#labels li input[type=checkbox]")
    boxes.nth(0).click()
    boxes.nth(1).click()
    page.click("#merge")
    page.wait_for_function("document.getElementById('message').textContent.includes('token')")
    assert _labels(server) == before


def test_static_export_opens_offline(browser, server, tmp_path):
    from canonlabel.ui import export_html

    s = Settings(db=tmp_path / "e.db", consolidate_every=0)
    with Classifier.open(settings=s, embedder=HashEmbedder(), labeler=FakeLabeler()) as clf:
        clf.classify_many(["card arrived late", "pin is blocked", "exchange rate wrong"] * 3)
        out = export_html(clf, tmp_path / "report.html")
    page = browser.new_page()
    page.route(
        "**/*",
        lambda route: (
            route.abort() if not route.request.url.startswith("file:") else route.continue_()
        ),
    )
    page.goto(out.as_uri())
    page.wait_for_function("window.__canonlabel && window.__canonlabel.ready", timeout=30_000)
    assert page.evaluate("window.__canonlabel.pointsDrawn") == 9  # hits sit by their match
    page.close()


def test_split_checked_members_into_a_new_label(page, server):
    before = _labels(server)
    big = page.locator("#labels li").filter(has_text="card").first
    big.locator(".name").click()
    page.wait_for_selector("#members li input[type=checkbox]")
    page.locator("#members li input[type=checkbox]").first.click()
    page.click("#tokens summary")
    page.fill("#admin-token", ADMIN)
    page.click("#split")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('moved')")
    assert _labels(server) == before + 1
    spread = page.evaluate("window.__canonlabel.data.labels[0].spread")
    assert spread is None or 0 <= spread <= 2


def _member_on_screen(page) -> dict:
    """The label with the most LLM members: its id, index, member count and first item."""
    return page.evaluate(
        """() => {
      const s = window.__canonlabel, d = s.data, llm = d.sources.indexOf('llm');
      const counts = new Map();
      for (let i = 0; i < d.label.length; i++) if (d.source[i] === llm) counts.set(d.label[i], (counts.get(d.label[i]) || 0) + 1);
      const [lab] = [...counts.entries()].sort((a, b) => b[1] - a[1])[0];
      const i = d.label.findIndex((l, n) => l === lab && d.source[n] === llm);
      return {label: d.labels[lab].id, index: lab, members: counts.get(lab), i};
    }"""
    )


def test_lasso_on_the_map_splits_the_items_inside(page, server):
    before = _labels(server)
    target = _member_on_screen(page)
    assert target["members"] >= 3
    page.locator(f"#labels li[data-id='{target['label']}'] .name").click()
    page.wait_for_selector("#members li")
    box = page.locator("#gl").bounding_box()
    x, y = page.evaluate(
        """(i) => {
      const s = window.__canonlabel, t = s.transform, c = document.getElementById('gl');
      const ux = window.__canonlabelMap.unit[3 * i], uy = window.__canonlabelMap.unit[3 * i + 1];
      return [((ux * t.sx + t.ox) + 1) / 2 * c.clientWidth, (1 - ((uy * t.sy + t.oy) + 1) / 2) * c.clientHeight];
    }""",
        target["i"],
    )
    x0, y0 = box["x"] + x, box["y"] + y
    page.keyboard.down("Shift")
    page.mouse.move(x0 - 3, y0 - 3)
    page.mouse.down()
    for dx, dy in [(3, -3), (3, 3), (-3, 3), (-3, -3)]:
        page.mouse.move(x0 + dx, y0 + dy, steps=2)
    page.mouse.up()
    page.keyboard.up("Shift")
    lassoed = page.evaluate("window.__canonlabel.lasso.length")
    assert 1 <= lassoed < target["members"]
    assert page.inner_text("#message").startswith(f"lasso: {lassoed} item(s)")
    page.click("#tokens summary")
    page.fill("#admin-token", ADMIN)
    page.click("#split")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('moved')")
    assert page.inner_text("#message") == f"moved {lassoed} member(s) to a new label"
    assert _labels(server) == before + 1


def test_split_checked_aliases_into_a_new_label(page, server):
    headers = {"authorization": f"Bearer {ADMIN}"}
    rows = httpx.get(server + "/v1/labels?limit=1000").json()["labels"]
    into, away = rows[0]["id"], rows[1]["id"]
    gone = httpx.get(f"{server}/v1/labels/{away}").json()["aliases"][0]
    r = httpx.post(server + "/v1/labels/merge", json={"from": away, "into": into}, headers=headers)
    assert r.status_code == 200
    before = _labels(server)
    page.reload()
    page.wait_for_function("window.__canonlabel && window.__canonlabel.ready", timeout=30_000)
    page.locator(f"#labels li[data-id='{into}'] .name").click()
    page.wait_for_selector(f"#aliases input[data-alias='{gone}']")
    page.check(f"#aliases input[data-alias='{gone}']")
    page.click("#tokens summary")
    page.fill("#admin-token", ADMIN)
    page.click("#split")
    page.wait_for_function("document.getElementById('message').textContent.startsWith('moved')")
    assert _labels(server) == before + 1
    assert gone not in httpx.get(f"{server}/v1/labels/{into}").json()["aliases"]


CHARTS = """() => [...document.querySelectorAll('#charts canvas.chart')].map((c) => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let curve = 0, text = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i + 3] === 0) continue;
    if (d[i + 2] > 150 && d[i] < 120) curve++; else if (d[i] < 140 && d[i + 2] < 150) text++;
  }
  return {curve, text, width: c.width, box: c.clientWidth, ratio: window.devicePixelRatio};
})"""


def test_the_over_time_charts_draw_curves_and_unstretched_text(page):
    """200 items: the charts hold drawn curve and text pixels, and each canvas is as
    many pixels wide as its box (nothing is stretched)."""
    charts = page.evaluate(CHARTS)
    assert len(charts) >= 3
    for c in charts:
        assert c["curve"] > 50 and c["text"] > 50, c
        assert c["width"] == round(c["box"] * c["ratio"]), c
    # the same panel for a long stream (100,000 items in 50 windows)
    page.evaluate(
        """() => renderCurves({end: Array.from({length: 50}, (_, i) => (i + 1) * 2000),
          hit_rate: Array.from({length: 50}, (_, i) => i / 50),
          llm_per_1000: Array.from({length: 50}, (_, i) => 1000 - 18 * i),
          router_share: Array.from({length: 50}, (_, i) => i / 100),
          labels: Array.from({length: 50}, (_, i) => 10 * i), router: null})"""
    )
    assert all(c["curve"] > 100 for c in page.evaluate(CHARTS))


def test_curves_split_any_store_into_about_fifty_windows():
    from canonlabel import explore
    from canonlabel.store.items import ItemSummary

    class Items:
        def __init__(self, n):
            self.n = n

        def summaries(self):
            return [
                ItemSummary(i, 1, "llm" if i % 3 else "cache", None, float(i))
                for i in range(self.n)
            ]

    class Labels:
        def created_times(self):
            return [0.5, 7.5]

    class Store:
        def __init__(self, n):
            self.items, self.labels = Items(n), Labels()

    class Clf:
        router = None

        def __init__(self, n):
            self.store = Store(n)

    for n, windows in ((200, 50), (100_000, 50), (7, 7)):
        c = explore.curves(Clf(n))
        assert len(c["hit_rate"]) == windows and c["end"][-1] == n


def test_the_tree_panel_shows_parents_and_colours_the_map_by_a_level(browser, server):
    fitted = httpx.post(
        server + "/v1/labels/hierarchy",
        json={"top": 3},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=60,
    )
    assert fitted.status_code == 200, fitted.text
    tops = fitted.json()["parents"]
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.goto(server + "/ui")
    page.wait_for_function("window.__canonlabel && window.__canonlabel.ready", timeout=30_000)
    assert page.is_visible("#tree")
    assert page.locator("#tree-nodes > details").count() == len(tops)
    first = page.locator("#tree-nodes > details").first
    assert not page.is_visible("#tree-nodes > details .leaf")  # children folded
    first.locator("summary").click()
    assert first.locator(".leaf").count() >= 1 and first.locator(".leaf").first.is_visible()
    first.locator(".leaf").first.click()  # a leaf selects its label
    page.wait_for_selector("#members li")
    page.select_option("#colour-by", "1")
    colours = page.evaluate(
        """() => { const u = window.__canonlabelMap.unit, s = new Set();
          for (let i = 2; i < u.length; i += 3) s.add(u[i]); return [...s]; }"""
    )
    assert sorted(colours) == list(range(len(tops)))  # one colour per top parent
    page.wait_for_timeout(200)
    assert page.evaluate(PAINTED) > 200
    page.select_option("#colour-by", "0")
    assert page.evaluate("() => window.__canonlabel.colourLevel") == 0
    page.close()
