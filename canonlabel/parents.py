"""Curating the label hierarchy: rename a parent, move a label to another parent, merge
two parents of one level, and undo the latest of these.

Each edit works on the stored tree (with labels made since the fit joined to their
nearest parent), recounts every parent from the labels' items and replaces the stored
tree in one write; the tree it replaced is kept (the last ``UNDO_DEPTH``) so
:func:`undo` restores it exactly. A refit (``canonlabel hierarchy``) regroups the labels:
a parent whose labels it leaves unchanged keeps its id and its (curated) name, moves and
merges are regrouped like everything else.
"""

from __future__ import annotations

import json
from dataclasses import replace

from canonlabel import hierarchy
from canonlabel.errors import CurationError
from canonlabel.hierarchy import Parent, Tree

UNDO_KEY = "hierarchy_undo"  # meta key: the trees replaced by edits, latest last
UNDO_DEPTH = 20


def rename(clf, parent_id: int, name: str) -> dict:
    """Give parent ``parent_id`` a new (snake_case, unused) name."""
    from canonlabel.canon import InvalidLabel, clean_label

    tree = _current(clf)
    parent = _parent(tree, parent_id)
    try:
        name = clean_label(name)
    except InvalidLabel as exc:
        raise CurationError(f"{name!r} is not a usable parent name: {exc}") from None
    if any(p.name == name and p.id != parent_id for p in tree.parents.values()):
        raise CurationError(f"another parent is already named {name!r}; merge them instead")
    tree.parents[parent_id] = replace(parent, name=name)
    _save(clf, tree)
    return {"kind": "rename_parent", "parent": parent_id, "from": parent.name, "to": name}


def move(clf, label_id: int, parent_id: int) -> dict:
    """Put label ``label_id`` under the level-1 parent ``parent_id``."""
    tree = _current(clf)
    label = clf.space.resolve(label_id) if label_id in clf.space.names else None
    if label is None or label not in tree.label_parent:
        raise CurationError(f"no label {label_id} in the hierarchy; see `canonlabel labels --tree`")
    target = _parent(tree, parent_id)
    if target.level != 1:
        raise CurationError(
            f"parent {parent_id} is at level {target.level}; labels go under level 1"
        )
    was = tree.label_parent[label]
    tree.label_parent[label] = parent_id
    _save(clf, tree)
    return {"kind": "move_label", "label": label, "from": was, "to": parent_id}


def merge(clf, source_id: int, into_id: int) -> dict:
    """Merge parent ``source_id`` into ``into_id`` (same level): its children go to
    ``into_id`` and it is removed (with any parent above it left empty)."""
    tree = _current(clf)
    source, into = _parent(tree, source_id), _parent(tree, into_id)
    if source_id == into_id or source.level != into.level:
        raise CurationError("merge two different parents of the same level")
    if source.level == 1:
        for label, pid in tree.label_parent.items():
            if pid == source_id:
                tree.label_parent[label] = into_id
    into = replace(into, children=tuple(sorted({*into.children, *source.children})))
    tree.parents[into_id] = into
    _remove(tree, source_id)
    _save(clf, tree)
    return {"kind": "merge_parents", "from": source_id, "into": into_id}


def undo(clf) -> dict:
    """Restore the tree the latest edit replaced."""
    stack = _stack(clf)
    if not stack:
        raise CurationError("no hierarchy edit to undo")
    parents, links = stack.pop()
    clf.store.hierarchy.save([tuple(r) for r in parents], [tuple(r) for r in links])
    clf.store.set_meta({UNDO_KEY: stack})
    return {"kind": "undo_hierarchy", "left": len(stack)}


def _current(clf) -> Tree:
    tree = hierarchy.load(clf.store)
    if not tree.parents:
        raise CurationError("no hierarchy yet: run `canonlabel hierarchy` first")
    return hierarchy.assign_new(clf, tree)


def _parent(tree: Tree, parent_id: int) -> Parent:
    if parent_id not in tree.parents:
        raise CurationError(f"no parent {parent_id}; see `canonlabel labels --tree --json`")
    return tree.parents[parent_id]


def _remove(tree: Tree, pid: int) -> None:
    """Drop parent ``pid`` from the tree, and the parent above it if that is left empty."""
    above = tree.up.get(pid)
    del tree.parents[pid]
    if above is None:
        return
    parent = tree.parents[above]
    children = tuple(c for c in parent.children if c != pid)
    if children:
        tree.parents[above] = replace(parent, children=children)
    else:
        _remove(tree, above)


def _save(clf, tree: Tree) -> None:
    """Recount, push the stored tree onto the undo stack and store the edited one."""
    parents, links = clf.store.hierarchy.rows()
    stack = [*_stack(clf)[-(UNDO_DEPTH - 1) :], [list(parents), list(links)]]
    counts = clf.label_counts()
    under: dict[int, list[int]] = {}
    for label, pid in tree.label_parent.items():
        under.setdefault(pid, []).append(label)
    edited = Tree(label_parent=dict(tree.label_parent))
    for pid in sorted(tree.parents, key=lambda i: (tree.parents[i].level, i)):
        p = tree.parents[pid]
        if p.level == 1:
            labels = sorted(under.get(pid, []))
            n, children = sum(counts.get(lab, 0) for lab in labels), tuple(labels)
        else:
            n, children = sum(edited.parents[c].count for c in p.children), p.children
        edited.parents[pid] = Parent(pid, p.level, p.name, children, n)
    hierarchy.save(clf.store, edited)
    clf.store.set_meta({UNDO_KEY: stack})


def _stack(clf) -> list:
    raw = clf.store.meta().get(UNDO_KEY)
    return json.loads(raw) if raw else []
