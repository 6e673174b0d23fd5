"""Consolidation evidence: learned filler words, core names, shared neighbours."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from canonlabel.labelspace.evidence import core_names, similarity, word_weights


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _store(seed: int = 0):
    """Raw labels of three topics, each padded with fillers used across all topics."""
    rng = np.random.default_rng(seed)
    topics = {"refund": 0, "pin": 1, "arrival": 2}
    axes = np.eye(8)[:3]
    raws, sums, counts = [], [], []
    for topic, k in topics.items():
        for filler in ("issue", "request", "question", "help"):
            for extra in ("", "card"):
                raw = "_".join(w for w in (extra, topic, filler) if w)
                n = 3
                members = _unit(axes[k] + 0.3 * rng.standard_normal((n, 8)))
                raws.append(raw)
                sums.append(members.sum(0))
                counts.append(n)
    return raws, np.array(sums), np.array(counts, dtype=float)


def test_filler_words_are_learned_from_where_their_texts_lie():
    raws, sums, counts = _store()
    w = word_weights(raws, sums, counts)
    for filler in ("issue", "request", "question", "help", "card"):
        assert w[filler] < 0.15, (filler, w[filler])
    for topic in ("refund", "pin", "arrival"):
        assert w[topic] > 0.35, (topic, w[topic])


def test_core_names_keep_informative_words_in_order():
    w = {"question": 0.0, "about": 0.01, "top": 0.4, "up": 0.3, "reverted": 0.5}
    assert core_names(["question_about_top_up_reverted"], w) == ["top up reverted"]
    # nothing informative: the whole name is kept rather than an empty one
    assert core_names(["question_about"], w) == ["question about"]
    # a word never seen in the store counts as informative
    assert core_names(["top_up_declined"], w) == ["top up declined"]


def test_a_word_used_once_is_not_trusted_fully():
    raws = ["alpha_x", "beta_y", "gamma_z"]
    sums = _unit(np.eye(3))
    w = word_weights(raws, sums, np.ones(3))
    assert all(0 < w[x] < 1 for x in ("alpha", "x"))


@settings(max_examples=25, deadline=None)
@given(st.integers(6, 30), st.integers(0, 10_000))
def test_similarity_does_not_depend_on_the_order_of_units(n, seed):
    rng = np.random.default_rng(seed)
    names = _unit(rng.standard_normal((n, 5)).astype(np.float32))
    content = _unit(rng.standard_normal((n, 5)).astype(np.float32))
    perm = rng.permutation(n)
    a = similarity(names, content, 0.6)
    b = similarity(names[perm], content[perm], 0.6)
    np.testing.assert_allclose(a[np.ix_(perm, perm)], b, atol=1e-5)
    np.testing.assert_allclose(a, a.T, atol=1e-6)


def test_shared_neighbours_pull_fragments_of_one_topic_together():
    rng = np.random.default_rng(1)
    centre = _unit(rng.standard_normal(16))
    other = _unit(rng.standard_normal(16))
    frag = _unit(np.stack([centre + 0.45 * rng.standard_normal(16) for _ in range(5)]))
    far = _unit(np.stack([other + 0.45 * rng.standard_normal(16) for _ in range(5)]))
    v = np.vstack([frag, far]).astype(np.float32)
    plain = similarity(v, v, 1.0, neighbour_weight=0.0)
    shared = similarity(v, v, 1.0)
    same = np.ix_(range(5), range(5))
    cross = np.ix_(range(5), range(5, 10))
    gap_plain = plain[same].mean() - plain[cross].mean()
    gap_shared = shared[same].mean() - shared[cross].mean()
    assert gap_shared > gap_plain * 0.8 + 0.05


def _evidence(n_topics: int, per_topic: int, seed: int = 0):
    """Raw labels in tight topics (name and member vectors near a topic axis)."""
    from canonlabel.labelspace.evidence import Evidence

    rng = np.random.default_rng(seed)
    dim = 32
    axes = _unit(rng.standard_normal((n_topics, dim)))
    topic = np.repeat(np.arange(n_topics), per_topic)
    names = _unit(axes[topic] + 0.07 * rng.standard_normal((len(topic), dim)))
    sums = 3 * _unit(axes[topic] + 0.05 * rng.standard_normal((len(topic), dim)))
    raws = [f"r{i:04d}" for i in range(len(topic))]
    n = len(topic)
    ev = Evidence(raws, np.arange(n) + 1, names, sums, np.full(n, 3.0), np.full(n, 3.0), cores=raws)
    ev.core = names
    return ev


def _partition(assigned) -> set[frozenset]:
    groups: dict[int, set] = {}
    for i, g in enumerate(np.asarray(assigned).tolist()):
        groups.setdefault(g, set()).add(i)
    return {frozenset(g) for g in groups.values()}


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([0.6, 0.75, 0.85]))
def test_many_raw_labels_are_grouped_per_component_exactly_as_on_one_matrix(seed, cut):
    from canonlabel.labelspace import evidence
    from canonlabel.labelspace.consolidate import group

    ev = _evidence(12, 6, seed)
    pinned = {1, 2, 40}  # hand-curated labels stay apart in both paths
    dense = group(ev, pinned, threshold=cut, dense_units=10**9)
    old, evidence.ROW_BLOCK = evidence.ROW_BLOCK, 16  # several blocks, a ragged last one
    try:
        blocked = group(ev, pinned, threshold=cut, dense_units=0)
    finally:
        evidence.ROW_BLOCK = old
    assert _partition(dense) == _partition(blocked)
    assert 1 < len(_partition(dense)) < len(ev.raw_labels)  # the cut did something


def test_borderline_pairs_computed_in_row_blocks_match_the_dense_matrix():
    from canonlabel.labelspace import adjudicate, evidence

    ev = _evidence(9, 5, seed=3)
    names, content = ev.core, _unit(ev.member_sums)
    sim = 0.6 * names @ names.T + 0.4 * content @ content.T
    np.fill_diagonal(sim, -1.0)
    want = {}
    for g in range(len(sim)):
        for h in np.argsort(-sim[g], kind="stable")[: adjudicate.PARTNERS]:
            if 0.3 <= sim[g, h] < 0.9:
                want[(min(g, int(h)), max(g, int(h)))] = sim[g, h]
    old, evidence.ROW_BLOCK = evidence.ROW_BLOCK, 7  # several blocks, a ragged last one
    try:
        got = adjudicate.borderline_pairs(names, content, 0.6, 0.3, 0.9)
    finally:
        evidence.ROW_BLOCK = old
    assert {(g, h) for g, h, _ in got} == set(want)
    assert all(abs(s - want[(g, h)]) < 1e-9 for g, h, s in got)
