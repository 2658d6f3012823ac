"""The per-sample table and its queries (subsets/query.py) against brute-force references, on the
real digits workspace (teacher logits, ids) with synthetic scores that have ties, and on small arrays."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from ifbeta.subsets import query


@pytest.fixture(scope="module")
def workspace(digits, digits_features):
    return SimpleNamespace(train=digits[0], features=digits_features)


@pytest.fixture(scope="module")
def arrays(workspace):
    n = len(workspace.train.ids)
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=n), 1)  # one decimal: many ties
    kept = rng.random(n) < 0.4
    tags = {"exclude": list(workspace.train.ids[:40:3]), "suspect label": list(workspace.train.ids[10:30])}
    return scores, kept, tags


@pytest.fixture(scope="module")
def table(workspace, arrays):
    scores, kept, tags = arrays
    return query.sample_table(workspace, scores=scores, kept=kept, tags=tags)


def _softmax_row(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits.astype(np.float64) - logits.max())
    return e / e.sum()


def test_the_table_holds_every_column_row_by_row(workspace, arrays, table):
    scores, kept, tags = arrays
    train, logits = workspace.train, np.asarray(workspace.features.logits)
    assert list(table.columns) == ["index", "id", "short_id", "label", "class_name", "prediction", "predicted_class",
                                   "confidence", "label_probability", "disagrees", "score", "rank", "kept", "tags"]
    assert len(table) == len(train.ids)
    for i in range(0, len(train.ids), 97):
        row, p = table.iloc[i], _softmax_row(logits[i])
        assert row["index"] == i and row["id"] == train.ids[i] and row["short_id"] == train.ids[i].split("/")[-1]
        assert row["label"] == train.labels[i] and row["class_name"] == train.class_names[train.labels[i]]
        assert row["prediction"] == int(np.argmax(logits[i]))
        assert row["predicted_class"] == train.class_names[int(np.argmax(logits[i]))]
        assert row["confidence"] == pytest.approx(p.max()) and row["label_probability"] == pytest.approx(p[train.labels[i]])
        assert row["disagrees"] == (np.argmax(logits[i]) != train.labels[i])
        assert row["score"] == scores[i] and row["kept"] == kept[i]
        assert row["tags"] == tuple(sorted(tag for tag, ids in tags.items() if train.ids[i] in ids))
    predictions = np.asarray(logits).argmax(1)
    assert np.array_equal(table["disagrees"].to_numpy(), predictions != np.asarray(train.labels))  # every row


def test_the_rank_is_the_within_class_percentile_by_brute_force(workspace, arrays, table):
    scores, labels = arrays[0], workspace.train.labels
    for i in range(0, len(labels), 53):
        members = [j for j in range(len(labels)) if labels[j] == labels[i]]
        below = sum(1 for j in members if scores[j] < scores[i] or (scores[j] == scores[i] and j < i))
        assert table.at[i, "rank"] == pytest.approx(100.0 * below / (len(members) - 1))
    for c in np.unique(labels):  # 0 = most harmful, 100 = most helpful of each class
        ranks = table["rank"][labels == c]
        assert ranks.min() == 0.0 and ranks.max() == 100.0
        assert scores[labels == c][np.argmax(ranks.to_numpy())] == scores[labels == c].max()
    assert query.within_class_percentile(np.array([3.0, 1.0, 2.0]), np.array([0, 0, 1])).tolist() == [100.0, 0.0, 50.0]


def test_short_ids_are_readable_and_short():
    assert query.short_id("airplane/0007.jpg") == "0007"
    assert query.short_id("digits/12") == "12"
    assert query.short_id("cats\\tabby\\x.png") == "x"
    assert query.short_id("folder/a_really_long_file_name_0001.png") == "…e_name_0001"
    assert len(query.short_id("folder/a_really_long_file_name_0001.png")) == query.SHORT_ID_LENGTH


def _brute(table, rows, *, classes=None, predictions=None, disagrees=None, kept=None, tag=None,
           sort="given", descending=True) -> list[int]:
    records = table.to_dict("records")
    chosen = [int(i) for i in rows if (classes is None or records[i]["label"] in classes)
              and (predictions is None or records[i]["prediction"] in predictions)
              and (disagrees is None or records[i]["disagrees"] == disagrees)
              and (kept is None or records[i]["kept"] == kept)
              and (tag is None or tag in records[i]["tags"])]
    column = query.SORT_KEYS[sort]
    if column is None:
        return chosen
    return sorted(chosen, key=lambda i: records[i][column], reverse=descending)  # Python's sort is stable


FILTERS = [{}, {"classes": [3]}, {"classes": [1, 7]}, {"predictions": [8]}, {"disagrees": True},
           {"disagrees": False}, {"kept": True}, {"kept": False}, {"tag": "exclude"}, {"tag": "suspect label"},
           {"classes": [2], "kept": False, "disagrees": False}, {"tag": "nothing tagged so"}]


@pytest.mark.parametrize("filters", FILTERS, ids=[str(f) for f in FILTERS])
def test_every_filter_matches_brute_force(table, filters):
    rng = np.random.default_rng(5)
    for rows in (None, rng.permutation(len(table))[:500]):
        expected = _brute(table, np.arange(len(table)) if rows is None else rows, **filters)
        assert query.query(table, rows, **filters).tolist() == expected


@pytest.mark.parametrize("sort, descending", list(itertools.product(query.SORT_KEYS, [True, False])))
def test_every_sort_matches_brute_force_with_stable_ties(table, sort, descending):
    rows = np.random.default_rng(7).permutation(len(table))[:400]
    got = query.query(table, rows, sort=sort, descending=descending)
    assert got.tolist() == _brute(table, rows, sort=sort, descending=descending)
    got = query.query(table, rows, sort=sort, descending=descending, classes=[4], disagrees=False)
    assert got.tolist() == _brute(table, rows, sort=sort, descending=descending, classes=[4], disagrees=False)


def test_queries_refuse_what_the_table_cannot_answer(workspace, table):
    bare = query.sample_table(workspace)
    assert "score" not in bare.columns and "kept" not in bare.columns and "tags" not in bare.columns
    with pytest.raises(ValueError, match="needs influence scores"):
        query.query(bare, sort="score")
    with pytest.raises(ValueError, match="needs a subset"):
        query.query(bare, kept=True)
    with pytest.raises(ValueError, match="needs tags"):
        query.query(bare, tag="exclude")
    with pytest.raises(ValueError, match="unknown sort key"):
        query.query(table, sort="colour")
    with pytest.raises(ValueError, match="rows must lie"):
        query.query(table, [len(table)])
    with pytest.raises(ValueError, match="entries but the pool has"):
        query.sample_table(workspace, scores=np.zeros(3))


def test_tails_and_disagreement_counts_match_brute_force(workspace, arrays):
    scores, labels = arrays[0], workspace.train.labels
    predictions = np.asarray(workspace.features.logits).argmax(1)
    predictions[::11] = (labels[::11] + 1) % 10  # more teacher-wrong samples, so the counts are not all 0
    names = workspace.train.class_names
    for fraction in (0.05, 0.1, 0.5):
        helpful, harmful = query.tail_masks(scores, labels, fraction)
        counts = query.disagreement_by_tail(scores, labels, predictions, fraction, names)
        assert len(counts) == 2 * len(names)
        for c in range(len(names)):
            members = sorted(np.flatnonzero(labels == c), key=lambda j: (scores[j], j))  # ascending, ties by row
            m = max(1, round(fraction * len(members)))
            assert set(np.flatnonzero(harmful & (labels == c))) == set(members[:m])
            assert set(np.flatnonzero(helpful & (labels == c))) == set(members[-m:])
            for tail, chosen in (("most helpful", members[-m:]), ("most harmful", members[:m])):
                row = counts[(counts["class"] == c) & (counts["tail"] == tail)].iloc[0]
                wrong = sum(1 for j in chosen if predictions[j] != labels[j])
                assert (row["samples"], row["teacher_wrong"], row["teacher_right"]) == (m, wrong, m - wrong)
                assert row["class_samples"] == len(members)
                assert row["class_wrong"] == sum(1 for j in members if predictions[j] != c)
    counts = query.disagreement_by_tail(scores, labels, predictions, 0.1, names)
    harmful = counts[counts["tail"] == "most harmful"]
    helpful = counts[counts["tail"] == "most helpful"]
    line = query.disagreement_summary(counts, 0.1)
    assert line == (f"Of the 10% most harmful samples of each class, "
                    f"{harmful['teacher_wrong'].sum() / harmful['samples'].sum():.1%} are ones the teacher gets wrong "
                    f"({helpful['teacher_wrong'].sum() / helpful['samples'].sum():.1%} of the most helpful), against "
                    f"{np.mean(predictions != labels):.1%} overall.")
    with pytest.raises(ValueError, match="tail fraction"):
        query.tail_masks(scores, labels, 0.6)
