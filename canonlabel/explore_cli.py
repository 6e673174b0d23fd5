"""``canonlabel explore``: serve the exploration page locally, or export it as one file."""

from __future__ import annotations

import threading
import webbrowser
from collections.abc import Sequence
from pathlib import Path

from canonlabel.config import Settings
from canonlabel.llm.base import Labeler
from canonlabel.types import LabelRequest, LabelResponse


def run_explore(
    settings: Settings, *, port: int, export: Path | None, open_browser: bool, console
) -> None:
    """With ``export``, write the self-contained page and return; else serve it on
    loopback (curation needs no token there: nothing beyond this machine can reach it)."""
    if export is not None:
        from canonlabel.pipeline import Classifier
        from canonlabel.ui import export_html

        with Classifier.open(settings=settings, labeler=_NoLabeler()) as clf:
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
    clf = Classifier.open(settings=settings, labeler=_NoLabeler())  # explore never labels
    app = create_app(settings, classifier=clf)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class _NoLabeler(Labeler):
    id = "none"

    def label_batch(self, requests: Sequence[LabelRequest]) -> list[LabelResponse]:
        # never called; raises what the method-less stand-in it replaces raised
        raise AttributeError(f"{type(self).__name__!r} object has no attribute 'label_batch'")
