"""``canonlabel explore``: serve the exploration page locally, or export it as one file."""

from __future__ import annotations

import threading
import webbrowser
from pathlib import Path

from canonlabel.config import Settings
from canonlabel.llm.base import NoLabeler


def run_explore(
    settings: Settings, *, port: int, export: Path | None, open_browser: bool, console
) -> None:
    """With ``export``, write the self-contained page and return; else serve it on
    loopback (curation needs no token there: nothing beyond this machine can reach it).
    The store ``settings.db`` must exist."""
    from canonlabel.errors import CanonlabelError
    from canonlabel.store import store_exists

    if not store_exists(settings.db):
        raise CanonlabelError(f"store {settings.db} does not exist; pass --db")
    if export is not None:
        from canonlabel.pipeline import Classifier
        from canonlabel.ui import export_html

        with Classifier.open(settings=settings, labeler=NoLabeler()) as clf:
            export_html(clf, export, settings.projection)
        console.print(f"wrote {export}")
        return
    import uvicorn

    from canonlabel.pipeline import Classifier
    from canonlabel.server import create_app

    url = f"http://127.0.0.1:{port}/ui"
    console.print(f"exploring {settings.db} at {url} (Ctrl-C stops)")
    if open_browser:
        threading.Timer(1.5, webbrowser.open, args=(url,)).start()
    clf = Classifier.open(settings=settings, labeler=NoLabeler())  # explore never labels
    app = create_app(settings, classifier=clf)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
