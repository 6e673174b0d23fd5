"""Property-based: any interleaving of classify / merge / rename / split / undo /
consolidate keeps the store's invariants, and an undo right after a merge or a
consolidation restores the label of every item and alias exactly."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from canonlabel import Classifier, Settings
from canonlabel.errors import CurationError
from canonlabel.labelspace import LabelSpace
from canonlabel.testing import FakeLabeler, HashEmbedder

WORDS = ["card", "declined", "pin", "refund", "transfer", "pending", "rate", "cash", "lost"]
texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map(" ".join)


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp())
        s = Settings(db=self.tmp / "p.db", min_similarity=0.9, consolidate_every=0)
        self.clf = Classifier.open(settings=s, embedder=HashEmbedder(), labeler=FakeLabeler())
        self.answered = 0

    def teardown(self) -> None:
        self.clf.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ------------------------------------------------------------------------
    def _live(self) -> list[int]:
        return sorted({self.clf.space.resolve(i) for i in self.clf.space.names})

    def _snapshot(self) -> tuple[dict, dict]:
        space = self.clf.space
        rows = self.clf.store.conn.execute("SELECT id, label_id FROM items")
        items = {i: (space.resolve(label), space.name(label)) for i, label in rows}
        aliases = {
            raw: (space.resolve(label), space.name(label)) for raw, label in space.aliases.items()
        }
        return items, aliases

    def _curate(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except CurationError:
            return None  # refused with a reason: the store must be unchanged and valid

    # -- rules --------------------------------------------------------------------------
    @rule(batch=st.lists(texts, min_size=1, max_size=6))
    def classify(self, batch):
        results = self.clf.classify_many(batch)
        assert all(r.ok for r in results)
        self.answered += len(batch)

    @precondition(lambda self: len(self._live()) >= 2)
    @rule(data=st.data())
    def merge(self, data):
        live = self._live()
        a, b = data.draw(st.sampled_from(live)), data.draw(st.sampled_from(live))
        self._curate(self.clf.merge, a, b)

    @precondition(lambda self: len(self._live()) >= 2)
    @rule(data=st.data())
    def merge_then_undo(self, data):
        live = self._live()
        a, b = data.draw(st.sampled_from(live)), data.draw(st.sampled_from(live))
        before = self._snapshot()
        if self._curate(self.clf.merge, a, b) is not None:
            event("merge undone")
            self.clf.undo()
            assert self._snapshot() == before

    @precondition(lambda self: len(self._live()) >= 1)
    @rule(data=st.data(), word=st.sampled_from(WORDS))
    def rename(self, data, word):
        label = data.draw(st.sampled_from(self._live()))
        self._curate(self.clf.rename, label, f"renamed_{word}_{label}")

    @precondition(lambda self: len(self._live()) >= 1)
    @rule(data=st.data())
    def split(self, data):
        label = data.draw(st.sampled_from(self._live()))
        self._curate(self.clf.split, label, k=2)

    @rule()
    def undo(self):
        self._curate(self.clf.undo)

    @rule()
    def consolidate(self):
        self.clf.consolidate()

    @rule()
    def consolidate_then_undo(self):
        before = self._snapshot()
        if "entry" in self.clf.consolidate():  # it wrote something
            event("consolidation undone")
            self.clf.undo()
            assert self._snapshot() == before

    # -- invariants -----------------------------------------------------------------------
    @invariant()
    def every_item_has_one_live_label(self):
        store, space = self.clf.store, self.clf.space
        assert store.count("SELECT count(*) FROM items") <= self.answered
        for (label,) in store.conn.execute("SELECT DISTINCT label_id FROM items"):
            root = space.resolve(label)
            assert root in space.names and space.resolve(root) == root

    @invariant()
    def aliases_resolve_to_live_labels(self):
        space = self.clf.space
        for raw, label in space.aliases.items():
            root = space.resolve(label)
            assert root in space.names and space.resolve(root) == root, raw

    @invariant()
    def memory_agrees_with_the_store(self):
        fresh = LabelSpace.load(
            self.clf.store,
            self.clf.dim,
            self.clf.embedder,
            self.clf.store.items.cached(self.clf.dim),
        )
        space = self.clf.space
        assert {i: space.resolve(i) for i in space.names} == {
            i: fresh.resolve(i) for i in fresh.names
        }
        assert {i: space.names[space.resolve(i)] for i in space.names} == {
            i: fresh.names[fresh.resolve(i)] for i in fresh.names
        }
        assert {r: space.resolve(v) for r, v in space.aliases.items()} == {
            r: fresh.resolve(v) for r, v in fresh.aliases.items()
        }

    @invariant()
    def names_are_unique_and_integrity_holds(self):
        live = self._live()
        names = [self.clf.space.names[i] for i in live]
        assert len(names) == len(set(names))
        assert self.clf.store.integrity_check() == "ok"


StoreMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_store_interleavings = StoreMachine.TestCase
