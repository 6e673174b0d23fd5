"""A label hierarchy: canonical labels grouped into named parents, level by level.

* **Themes proposed by the LLM** (as Clio does). For the first level, the LLM is shown
  the labels, ``PROPOSALS_PER_CALL`` per call, each with its typical texts, and names the
  broader theme of each; labels whose theme names are alike (``THEME_JOIN``) start as
  one group. Embeddings see what texts are *about*; a theme such as "joy" over
  "gratitude" and "amusement" is a judgement they miss (GoEmotions -> Ekman: ARI 0.29
  from embeddings alone).
* **Grouping.** Each group is a point: its labels' member centroids and names' embeddings,
  weighted ``NAME_WEIGHT`` (the evidence consolidation uses). Groups merge
  agglomeratively, closest first, until a level has its target number of parents; a
  merge that would give one parent more than ``BALANCE`` times its fair share of the
  items is skipped while another is possible, so no parent swallows half the stream.
  Level sizes fall geometrically from the number of labels to ``top``. Ties go by label
  id, so the grouping depends on the labels, not on the order texts arrived in.
* **Names.** Each parent is named by the LLM from its children's names and typical
  texts (one call per parent; a local model gets a grammar). A parent whose children are
  the same as at the last fit keeps its id and its name, so ids are stable across runs.
* **New labels** made after a fit join the level-1 parent whose centroid is nearest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from canonlabel.canon import InvalidLabel, clean_label

NAME_WEIGHT = 0.3
BALANCE = 2.0  # a parent may hold at most this many times its fair share of the items
EXAMPLES = 2  # typical texts shown per child when naming
QUESTION = "Name the common theme of these labels with one short snake_case label."
PROPOSE = (
    "For each numbered label, name the broader theme it belongs to with one short "
    "snake_case label; labels of one theme get the same name."
)
PROPOSALS_PER_CALL = 16
ROUNDS = 5  # theme questions a label may get
# typical texts shown per label in a theme question: with two, one misleading text ties
# the vote and the theme is a coin flip (GoEmotions at 10% wrong: `approval`, 244 texts,
# went under anger in one order of three, parents' order ARI 0.97 -> 0.79)
THEME_EXAMPLES = 3
BIG_LEAF = 0.02  # share of the items from which a label's theme needs three agreeing votes
THEME_JOIN = 0.8  # proposed theme names at least this similar are one theme
# A consolidation refits the stored tree once this share of the items sits under labels
# the tree does not hold (made, or split off, since the fit; see refit_if_drifted)
DRIFT = 0.2
FIT_KEY = "hierarchy_fit"  # meta: the last fit's top and levels


@dataclass(frozen=True)
class Parent:
    """A parent at ``level`` (1: its children are labels; 2: level-1 parents, ...)."""

    id: int
    level: int
    name: str
    children: tuple[int, ...]
    count: int = 0


@dataclass
class Tree:
    """Parents by id, and the level-1 parent of each label."""

    parents: dict[int, Parent] = field(default_factory=dict)
    label_parent: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    calls: int = 0  # LLM calls the fit made (theme proposals and names)

    def top(self) -> list[Parent]:
        if not self.parents:
            return []
        level = max(p.level for p in self.parents.values())
        return sorted(
            (p for p in self.parents.values() if p.level == level), key=lambda p: (-p.count, p.id)
        )

    @cached_property
    def up(self) -> dict[int, int]:
        """Parent of each parent (the top level has none); children never change once a
        tree is built, so this is computed once."""
        return {c: p.id for p in self.parents.values() if p.level > 1 for c in p.children}

    def path(self, label_id: int) -> list[str]:
        """Names from the top level down to the label's level-1 parent (empty if the
        label has no parent)."""
        up, out = self.up, []
        node = self.label_parent.get(label_id)
        while node is not None:
            out.append(self.parents[node].name)
            node = up.get(node)
        return out[::-1]


def load(store) -> Tree:
    """The stored hierarchy (an empty tree before the first fit)."""
    rows, links = store.hierarchy.rows()
    kids: dict[int, list[int]] = {}
    for pid, _, _, up, _ in rows:
        if up is not None:
            kids.setdefault(int(up), []).append(int(pid))
    for label, pid in links:
        kids.setdefault(int(pid), []).append(int(label))
    tree = Tree(label_parent={int(a): int(b) for a, b in links})
    for pid, level, name, _, count in rows:
        children = tuple(sorted(kids.get(int(pid), [])))
        tree.parents[int(pid)] = Parent(int(pid), int(level), name, children, int(count))
    return tree


def save(store, tree: Tree) -> None:
    up = tree.up
    parents = [(p.id, p.level, p.name, up.get(p.id), p.count) for p in tree.parents.values()]
    store.hierarchy.save(parents, list(tree.label_parent.items()))


def level_sizes(n_labels: int, top: int, levels: int) -> list[int]:
    """Parents per level, from level 1 up: geometric from ``n_labels`` down to ``top``."""
    top = max(1, min(top, n_labels))
    sizes: list[int] = []
    for level in range(1, levels + 1):
        size = round(n_labels ** (1 - level / levels) * top ** (level / levels))
        sizes.append(max(top, min(size, sizes[-1] if sizes else n_labels)))
    return sizes


def balanced_groups(
    X: np.ndarray, weights: np.ndarray, k: int, start: np.ndarray | None = None
) -> np.ndarray:
    """Group the rows of ``X`` (unit vectors) into ``k`` groups by centroid linkage,
    closest first, skipping while possible a merge whose weight would exceed ``BALANCE``
    times the fair share; rows with the same ``start`` group begin together. Returns the
    group (0..g-1, by first member) of each row; g is ``k``, or fewer when ``start``
    already has fewer groups."""
    n = len(X)
    sums = np.asarray(X, dtype=np.float64) * np.maximum(weights, 1)[:, None]
    size = np.asarray(weights, dtype=np.float64).copy()
    cap = max(BALANCE * size.sum() / max(k, 1), size.max(initial=0))
    owner = np.arange(n)
    alive = np.ones(n, dtype=bool)
    if start is not None:
        for rows in _runs(start):
            head = rows[0]
            for r in rows[1:]:
                sums[head] += sums[r]
                size[head] += size[r]
                alive[r] = False
                owner[r] = head
    unit = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    sim[~alive, :] = -np.inf
    sim[:, ~alive] = -np.inf
    for _ in range(max(0, int(alive.sum()) - k)):
        fits = (size[:, None] + size[None, :] <= cap) & alive[:, None] & alive[None, :]
        pick = np.where(fits, sim, -np.inf)
        if not np.isfinite(pick.max()):
            pick = np.where(alive[:, None] & alive[None, :], sim, -np.inf)
        i, j = divmod(int(pick.argmax()), n)
        i, j = min(i, j), max(i, j)
        sums[i] += sums[j]
        size[i] += size[j]
        alive[j] = False
        owner[owner == j] = i
        row = sums[i] / max(float(np.linalg.norm(sums[i])), 1e-12)
        unit[i] = row
        sim[i] = np.where(alive, unit @ row, -np.inf)
        sim[:, i] = sim[i]
        sim[i, i] = -np.inf
        sim[j, :] = sim[:, j] = -np.inf
    _, groups = np.unique(owner, return_inverse=True)
    return groups


def _runs(start: np.ndarray) -> list[list[int]]:
    rows: dict[int, list[int]] = {}
    for r, g in enumerate(np.asarray(start).tolist()):
        rows.setdefault(int(g), []).append(r)
    return [v for v in rows.values() if len(v) > 1]


def theme_prompt(labels: Sequence[tuple[str, Sequence[str]]]) -> str:
    """One proposal question: numbered labels, each with typical texts."""
    lines = [PROPOSE, "Answer one line per label, like `1: theme`."]
    for n, (name, texts) in enumerate(labels, 1):
        lines.append(f"{n}: {name}")
        lines += [f"- {' '.join(t.split())[:160]}" for t in texts]
    lines.append("Themes:")
    return "\n".join(lines)


def theme_grammar(n: int) -> str:
    """GBNF for exactly ``n`` numbered snake_case answers (local models)."""
    from canonlabel.labelspace.adjudicate import numbered_grammar
    from canonlabel.llm.llamacpp import _NEW_LABEL

    return numbered_grammar(n, _NEW_LABEL, answer="new")


def propose_themes(
    clf,
    leaves: list[int],
    labeler,
    counts: dict[int, int] | None = None,
    stored: dict[int, list[int]] | None = None,
) -> dict[int, str]:
    """The LLM's theme for each label, by consensus: every label is asked about with
    other typical texts each round until one theme has two votes (three for a label
    holding at least ``BIG_LEAF`` of the items, since its wrong theme moves that many;
    up to ``ROUNDS`` rounds); else the most voted, earliest first. ``PROPOSALS_PER_CALL``
    labels a call; a label without any valid answer has no theme. ``stored``: the ids
    each label's items are stored under (:func:`stored_ids`; read when not given)."""
    counts = counts or {}
    total = sum(counts.values()) or 1
    need = {lab: 3 if counts.get(lab, 0) >= BIG_LEAF * total else 2 for lab in leaves}
    centroids = clf.space.centroids(leaves)
    stored = stored_ids(clf)[1] if stored is None else stored
    texts = {  # every round's examples, read once a label
        lab: clf.store.members.typical_label_texts(
            stored.get(lab, [lab]), centroid, THEME_EXAMPLES * ROUNDS
        )
        for lab, centroid in zip(leaves, centroids, strict=True)
    }
    votes: dict[int, list[str]] = {lab: [] for lab in leaves}
    for variant in range(ROUNDS):
        asked = [lab for lab in leaves if not _settled(votes[lab], need[lab], variant)]
        if not asked:
            break
        for lab, theme in _proposals(clf, asked, labeler, texts, variant).items():
            votes[lab].append(theme)
    return {lab: max(v, key=lambda t: (v.count(t), -v.index(t))) for lab, v in votes.items() if v}


def stored_ids(clf) -> tuple[dict[int, int], dict[int, list[int]]]:
    """(items per label, the label ids its items are stored under), by the label the
    ids resolve to: a label's members include those of the labels merged into it.
    (Reading the root's own id alone, a label made by merges showed its one or two texts
    in every theme round, and the same question got the same wrong theme twice: NLU++
    `withdraw`, 28 texts, under general.)"""
    counts: dict[int, int] = {}
    ids: dict[int, list[int]] = {}
    for label_id, n in sorted(clf.store.members.label_counts().items()):
        root = clf.space.resolve(label_id)
        counts[root] = counts.get(root, 0) + n
        ids.setdefault(root, []).append(label_id)
    return counts, ids


def _settled(votes: list[str], need: int, asked: int) -> bool:
    """Whether a label's theme is decided: ``need`` votes agree, or no further round can
    change the leader (a small label asked ``need`` times with no two alike stays)."""
    if any(votes.count(t) >= need for t in votes):
        return True
    return need == 2 and asked >= 3


def _proposals(
    clf, leaves: list[int], labeler, texts: dict[int, list[str]], variant: int
) -> dict[int, str]:
    """One round of proposals, showing each label's ``variant``-th ``THEME_EXAMPLES``
    typical texts (the first ones when there are too few)."""
    import re

    space, found, k = clf.space, {}, THEME_EXAMPLES
    for start in range(0, len(leaves), PROPOSALS_PER_CALL):
        chunk = leaves[start : start + PROPOSALS_PER_CALL]
        shown = [
            (space.names[lab], texts[lab][k * variant : k * (variant + 1)] or texts[lab][:k])
            for lab in chunk
        ]
        try:
            out = labeler.complete(
                theme_prompt(shown), grammar=theme_grammar(len(chunk)), max_tokens=12 * len(chunk)
            ).output
        except Exception:  # no free completion, or a failed call: those labels go unthemed
            continue
        for number, theme in re.findall(r"(\d+)\s*[:.)]\s*`?([A-Za-z][\w ]*)", out):
            k = int(number) - 1
            if 0 <= k < len(chunk) and chunk[k] not in found:
                try:
                    found[chunk[k]] = clean_label(theme)
                except InvalidLabel:
                    pass
    return found


def theme_groups(clf, leaves: list[int], themes: dict[int, str]) -> np.ndarray:
    """A start group per label: labels whose theme names are at least ``THEME_JOIN``
    similar share one; a label without a theme is a group of its own."""
    names = sorted(set(themes.values()))
    parent = list(range(len(names)))
    if names:
        V = clf.space.phrase_vectors([n.replace("_", " ") for n in names])
        sim = V @ V.T

        def find(a: int) -> int:
            while parent[a] != a:
                a = parent[a]
            return a

        for a, b in zip(*np.nonzero(np.triu(sim, 1) >= THEME_JOIN), strict=True):
            parent[find(int(b))] = find(int(a))
        root = {n: find(i) for i, n in enumerate(names)}
    out = np.empty(len(leaves), dtype=np.int64)
    for r, lab in enumerate(leaves):
        out[r] = root[themes[lab]] if lab in themes else len(names) + r
    return out


def features(space, label_ids: list[int]) -> np.ndarray:
    """Member centroid and name embedding of each label, weighted ``NAME_WEIGHT``."""
    content = space.centroids(label_ids)
    names = np.stack([space.representative(i) for i in label_ids])
    f = (1 - NAME_WEIGHT) * content + NAME_WEIGHT * names
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def fit(clf, *, top: int = 12, levels: int = 1, labeler=None) -> Tree:
    """Group ``clf``'s labels into ``levels`` levels of parents (``top`` at the top),
    name new parents with ``labeler`` (``clf.labeler`` by default) and store the tree."""
    start = time.perf_counter()
    space = clf.space
    counts, stored = stored_ids(clf)
    leaves = sorted(counts)
    if not leaves:
        return Tree()
    labeler = _Counting(labeler or clf.labeler)
    clf.store.set_meta({FIT_KEY: {"top": top, "levels": levels}})
    themes = propose_themes(clf, leaves, labeler, counts, stored)
    X, w = features(space, leaves), np.array([counts[i] for i in leaves], dtype=np.float64)
    members: list[list[int]] = [[i] for i in leaves]  # labels under each node of a level
    nodes: list[tuple[int, list[int]]] = []  # (level, child indices) per parent to make
    for level, k in enumerate(level_sizes(len(members), top, levels), 1):
        start_groups = theme_groups(clf, leaves, themes) if level == levels else None
        groups = balanced_groups(X, w, k, start_groups)
        level_nodes = [np.flatnonzero(groups == g).tolist() for g in range(groups.max() + 1)]
        nodes += [(level, kids) for kids in level_nodes]
        members = [[lab for c in kids for lab in members[c]] for kids in level_nodes]
        X = _pool(X, w, level_nodes)
        w = np.array([w[kids].sum() for kids in level_nodes])
    tree = _persist(clf, leaves, nodes, counts, labeler, themes, stored)
    tree.seconds, tree.calls = round(time.perf_counter() - start, 3), labeler.calls
    return tree


class _Counting:
    """A labeler's free completions, counted."""

    def __init__(self, labeler) -> None:
        self.labeler, self.calls = labeler, 0

    def complete(self, prompt: str, **kwargs):
        self.calls += 1
        return self.labeler.complete(prompt, **kwargs)


def drift(clf, tree: Tree) -> float:
    """Share of the items under labels that ``tree`` does not hold."""
    counts = clf.label_counts()
    total = sum(counts.values())
    outside = sum(n for label, n in counts.items() if label not in tree.label_parent)
    return outside / total if total else 0.0


def refit_if_drifted(clf) -> dict | None:
    """Refit the stored tree (the last fit's ``top`` and ``levels``) once ``DRIFT`` of
    the items sit under labels it does not hold; parents whose labels are unchanged keep
    their ids and names, so only changed ones are named again. None when nothing was due."""
    raw = clf.store.meta().get(FIT_KEY)
    if not raw:
        return None
    tree = load(clf.store)
    share = drift(clf, tree)
    if not tree.parents or share < DRIFT:
        return None
    fitted = json.loads(raw)
    new = fit(clf, top=fitted["top"], levels=fitted["levels"])
    return {"drift": round(share, 4), "parents": len(new.top()), "calls": new.calls,
            "seconds": new.seconds}  # fmt: skip


def _pool(X: np.ndarray, w: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    out = np.stack([(X[g] * w[g, None]).sum(axis=0) for g in groups])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _persist(clf, leaves, nodes, counts: dict[int, int], labeler, themes, stored) -> Tree:
    """Parents with ids: a parent whose set of labels is unchanged keeps its id and name;
    the others get new ids and are named by the LLM. Replaces the stored tree."""
    old = load(clf.store)
    known = {(p.level, frozenset(_labels_under(old, p))): p for p in old.parents.values()}
    next_id = max(old.parents, default=0) + 1
    tree, ids_by_level, below = Tree(), {0: leaves}, {0: [[lab] for lab in leaves]}
    for level in sorted({lvl for lvl, _ in nodes}):
        ids, under = [], []
        for lvl, kids in nodes:
            if lvl != level:
                continue
            labels = [lab for c in kids for lab in below[level - 1][c]]
            children = tuple(ids_by_level[level - 1][c] for c in kids)
            same = known.get((level, frozenset(labels)))
            if same is not None:
                pid, name = same.id, same.name
            else:  # a new parent: the theme most of its items were given, if any
                pid, name = next_id, _majority_theme(labels, counts, themes or {})
                next_id += 1
            count = sum(counts.get(lab, 0) for lab in labels)
            tree.parents[pid] = Parent(pid, level, name or "", children, count)
            ids.append(pid)
            under.append(labels)
            if level == 1:
                tree.label_parent.update((c, pid) for c in children)
        ids_by_level[level], below[level] = ids, under
    _name_new(clf, tree, labeler, counts, stored)
    save(clf.store, tree)
    return tree


def _majority_theme(labels: list[int], counts: dict[int, int], themes: dict[int, str]):
    votes: dict[str, int] = {}
    for lab in labels:
        if lab in themes:
            votes[themes[lab]] = votes.get(themes[lab], 0) + counts.get(lab, 0)
    return min(votes, key=lambda t: (-votes[t], t)) if votes else None


def _labels_under(tree: Tree, parent: Parent) -> list[int]:
    if parent.level == 1:
        return list(parent.children)
    return [lab for c in parent.children for lab in _labels_under(tree, tree.parents[c])]


def _name_new(
    clf, tree: Tree, labeler, counts: dict[int, int], stored: dict[int, list[int]]
) -> None:
    """One LLM call per parent still without a name (level 1 first); names are unique
    in the tree (a later parent with a taken name gets a suffix)."""
    used: set[str] = set()
    for pid in sorted(tree.parents, key=lambda i: (tree.parents[i].level, i)):
        parent = tree.parents[pid]
        name = parent.name or _ask_name(clf, tree, parent, labeler, counts, stored)
        base, n = name, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        tree.parents[pid] = Parent(pid, parent.level, name, parent.children, parent.count)


def naming_prompt(children: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The question for one parent: its children's names, each with typical texts."""
    lines = [QUESTION, "Labels and example messages:"]
    for name, texts in children:
        lines.append(f"{name}:")
        lines += [f"- {' '.join(t.split())[:160]}" for t in texts]
    lines.append("Theme:")
    return "\n".join(lines)


def _ask_name(
    clf, tree: Tree, parent: Parent, labeler, counts: dict[int, int], stored: dict[int, list[int]]
) -> str:
    space = clf.space
    labels = _labels_under(tree, parent)
    shown = sorted(labels, key=lambda i: (-counts.get(i, 0), i))[:8]
    children = []
    for lab in shown:
        centroid = space.centroids([lab])[0]
        texts = clf.store.members.typical_label_texts(stored.get(lab, [lab]), centroid, EXAMPLES)
        children.append((space.names[lab], texts))
    fallback = space.names[shown[0]] + "_group"
    try:
        from canonlabel.llm.llamacpp import label_grammar

        out = labeler.complete(naming_prompt(children), grammar=label_grammar(()), max_tokens=24)
        return clean_label(out.output.strip().splitlines()[0] if out.output.strip() else "")
    except (NotImplementedError, InvalidLabel, IndexError):
        return fallback
    except Exception:  # a failed call names the parent after its largest child
        return fallback


def assign_new(clf, tree: Tree) -> Tree:
    """Labels made since the fit join the nearest level-1 parent (by centroid)."""
    space = clf.space
    level1 = [p for p in tree.parents.values() if p.level == 1]
    if not level1:
        return tree
    missing = [r for r in space.roots() if r not in tree.label_parent]
    if not missing:
        return tree
    centres = np.stack([features(space, list(p.children)).sum(axis=0) for p in level1])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    near = (features(space, missing) @ centres.T).argmax(axis=1)
    for label, k in zip(missing, near.tolist(), strict=True):
        tree.label_parent[label] = level1[k].id
    return tree


def as_dict(tree: Tree, space, counts: dict[int, int] | None = None) -> list[dict]:
    """The tree as nested dicts, top level first: parents with ``id, name, level, count,
    children``; labels (the leaves) with ``id, name, count``."""
    counts = counts or {}
    by_parent: dict[int, list[int]] = {}
    for label, pid in tree.label_parent.items():
        if label in space.names and space.resolve(label) == label:
            by_parent.setdefault(pid, []).append(label)

    def node(pid: int) -> dict:
        p = tree.parents[pid]
        if p.level == 1:
            kids = [
                {"id": lab, "name": space.names[lab], "count": counts.get(lab, 0)}
                for lab in sorted(by_parent.get(pid, []), key=lambda i: (-counts.get(i, 0), i))
            ]
        else:
            kids = [node(c) for c in p.children]
        total = sum(k["count"] for k in kids)
        return {"id": p.id, "name": p.name, "level": p.level, "count": total, "children": kids}

    return sorted((node(p.id) for p in tree.top()), key=lambda n: (-n["count"], n["id"]))
