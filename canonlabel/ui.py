"""The exploration page's assets (HTML, JS, CSS shipped in the package) and its export
as one self-contained file; the service's routes for it are in :mod:`canonlabel.routes.ui`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from canonlabel import explore

ASSETS = Path(__file__).parent / "static" / "ui"


def export_html(clf, path: Path, projection: str = "pca", members_per_label: int = 20) -> Path:
    """One self-contained HTML file: the page, its script and style, and the data."""
    explore.project(clf.store, clf.dim, projection)
    pts = explore.points(clf)
    texts = clf.store.items.texts()
    pts["texts"] = [texts[i][:300] for i in pts["ids"]]
    from canonlabel.hierarchy import as_dict

    data: dict[str, Any] = {
        "points": pts,
        "curves": explore.curves(clf),
        "hierarchy": as_dict(clf.hierarchy(refit=False), clf.space, clf.label_counts()),
    }
    data["points"]["members"] = {
        lab["id"]: explore.members(clf, lab["id"], members_per_label) for lab in pts["labels"]
    }
    html = (ASSETS / "index.html").read_text(encoding="utf-8")
    css = (ASSETS / "app.css").read_text(encoding="utf-8")
    js = (ASSETS / "app.js").read_text(encoding="utf-8")
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    html = html.replace(
        '<link rel="stylesheet" href="/ui/static/app.css">', f"<style>{css}</style>"
    )
    html = html.replace(
        '<script src="/ui/static/app.js"></script>',
        f"<script>window.__CANONLABEL_DATA__ = {payload};</script>\n<script>{js}</script>",
    )
    path.write_text(html, encoding="utf-8")
    return path
