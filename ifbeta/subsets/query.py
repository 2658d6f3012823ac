"""Per-sample tables of a pool and the queries galleries run on them (pure numpy / pandas).

``sample_table`` builds one row per pool sample from a workspace (its training pool and the teacher's
logits) plus optional per-sample arrays (influence scores, a kept mask, tags). ``query`` filters and
sorts rows of that table and returns pool rows in display order. ``tail_masks`` and
``disagreement_by_tail`` answer "where does the teacher disagree with the label" for the most helpful
and most harmful tails of each class.

Conventions: a pool row is an index in [0, N) of the workspace's training pool (``DatasetSplit``
order). Influence s > 0 is helpful (removing the sample raises the validation KD loss). The
within-class rank percentile of s is 0 for the most harmful and 100 for the most helpful sample of
each class.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

SHORT_ID_LENGTH = 12

SORT_KEYS = {
    "given": None,  # the order of ``rows``
    "score": "score",
    "rank": "rank",
    "teacher confidence": "confidence",
    "id": "id",
}
"""Sort key a person picks -> the table column ``query`` sorts by (None: keep the order given)."""

TAILS = ("most helpful", "most harmful")


# ------------------------------------------------------------------------------------------- columns
def short_id(sample_id: str, *, length: int = SHORT_ID_LENGTH) -> str:
    """A readable short form of a sample id: its last path part without the file extension
    ("airplane/0007.jpg" -> "0007", "digits/12" -> "12"); if that is longer than ``length``
    characters, "…" followed by its last ``length - 1`` characters."""
    name = str(sample_id).replace("\\", "/").rstrip("/").rpartition("/")[2]
    stem = name.rpartition(".")[0] if name.rpartition(".")[0] else name  # ".hidden" keeps its name
    return stem if len(stem) <= length else "…" + stem[-(length - 1):]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits -> (N, C) float64 probabilities (rows sum to 1)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))  # (N, C)
    return shifted / shifted.sum(axis=1, keepdims=True)


def within_class_ranks(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) int64: the ascending rank 0..n_c - 1 of each value among the samples of its class.
    Ties keep pool order (a stable sort), so the earlier row gets the lower rank."""
    values, labels = np.asarray(values, dtype=np.float64).reshape(-1), np.asarray(labels).reshape(-1)
    if len(values) != len(labels):
        raise ValueError(f"{len(values)} values but {len(labels)} labels")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"values hold NaN or infinity at row {int(np.flatnonzero(~np.isfinite(values))[0])}")
    ranks = np.empty(len(values), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        ranks[members[np.argsort(values[members], kind="stable")]] = np.arange(len(members))
    return ranks


def within_class_percentile(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(N,) float64 in [0, 100]: 100 * rank / (n_c - 1) with ``within_class_ranks`` (ascending, so
    for influence scores 0 = the most harmful and 100 = the most helpful sample of its class); a
    class of one sample gets 50."""
    ranks = within_class_ranks(values, labels)
    sizes = _class_sizes(labels)
    return np.where(sizes > 1, 100.0 * ranks / np.maximum(sizes - 1, 1), 50.0)


def _class_sizes(labels: np.ndarray) -> np.ndarray:
    """(N,) int64: the number of samples of each sample's class."""
    _, inverse, counts = np.unique(np.asarray(labels).reshape(-1), return_inverse=True, return_counts=True)
    return counts[inverse]


def sample_table(ws, *, scores: np.ndarray | None = None, kept: np.ndarray | None = None,
                 tags: Mapping[str, Iterable[str]] | None = None) -> pd.DataFrame:
    """One row per pool sample, in pool order (row i is pool row i).

    ``ws``: a ``pipeline.Workspace`` (anything with ``train.ids``, ``train.labels``,
    ``train.class_names`` and ``features.logits`` (N, C)). ``scores``: (N,) influence s (> 0 helpful);
    ``kept``: (N,) bool of a subset; ``tags``: tag -> sample ids (``subsets.tags.load``).

    Columns: index (int), id, short_id (``short_id``), label (int), class_name, prediction (teacher
    argmax, int), predicted_class, confidence (softmax probability of the prediction, in (0, 1]),
    label_probability (teacher probability of the label), disagrees (prediction != label); with
    ``scores``: score and rank (``within_class_percentile`` of s: 0 most harmful, 100 most helpful);
    with ``kept``: kept (bool); with ``tags``: tags (sorted tuple of the sample's tag names)."""
    ids, labels, names = list(ws.train.ids), np.asarray(ws.train.labels, dtype=np.int64), list(ws.train.class_names)
    n = len(ids)
    probabilities = softmax(np.asarray(ws.features.logits))  # (N, C)
    if probabilities.shape[0] != n or len(labels) != n:
        raise ValueError(f"the pool has {n} ids, {len(labels)} labels and {probabilities.shape[0]} logit rows")
    prediction = probabilities.argmax(axis=1)
    table = pd.DataFrame({
        "index": np.arange(n), "id": ids, "short_id": [short_id(i) for i in ids], "label": labels,
        "class_name": np.asarray(names, dtype=object)[labels], "prediction": prediction,
        "predicted_class": np.asarray(names, dtype=object)[prediction],
        "confidence": probabilities[np.arange(n), prediction],
        "label_probability": probabilities[np.arange(n), labels], "disagrees": prediction != labels,
    })
    if scores is not None:
        table["score"] = _per_sample(scores, n, "scores", np.float64)
        table["rank"] = within_class_percentile(table["score"].to_numpy(), labels)
    if kept is not None:
        table["kept"] = _per_sample(kept, n, "kept", bool)
    if tags is not None:
        carried: dict[str, list[str]] = {}
        for tag, tagged in sorted(tags.items()):
            for sample_id in tagged:
                carried.setdefault(str(sample_id), []).append(str(tag))
        table["tags"] = [tuple(carried.get(i, ())) for i in ids]
    return table


def _per_sample(values, n: int, name: str, dtype) -> np.ndarray:
    array = np.asarray(values, dtype=dtype).reshape(-1)
    if len(array) != n:
        raise ValueError(f"{name} has {len(array)} entries but the pool has {n} samples")
    return array


# --------------------------------------------------------------------------------------------- query
def query(table: pd.DataFrame, rows: Sequence[int] | np.ndarray | None = None, *,
          classes: Iterable[int] | None = None, predictions: Iterable[int] | None = None,
          disagrees: bool | None = None, kept: bool | None = None, tag: str | None = None,
          sort: str = "given", descending: bool = True) -> np.ndarray:
    """Pool rows of ``table`` (``sample_table``) that pass every filter, in display order; (m,) int64.

    ``rows``: the candidate pool rows, in their given order (None: all rows, in pool order). Filters
    (None = no filter; they combine with AND): ``classes``: the label is one of these class indices
    (the class filter and the label filter are one and the same); ``predictions``: the teacher's
    prediction is one of these; ``disagrees``: True keeps samples whose teacher prediction differs
    from the label, False those where they agree; ``kept``: True keeps the subset's kept samples,
    False its pruned ones (needs the kept column); ``tag``: samples carrying this tag (needs tags).

    ``sort``: a key of ``SORT_KEYS``: "given" keeps the order of ``rows``; "score" (s), "rank" (within-
    class percentile of s), "teacher confidence" or "id" (string order) sort by that column,
    ``descending`` or ascending. The sort is stable: ties keep the order of ``rows``, in both
    directions. ValueError for an unknown key or a filter / sort whose column the table lacks."""
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r}; use one of {', '.join(SORT_KEYS)}")
    candidates = np.arange(len(table)) if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(candidates) and (candidates.min() < 0 or candidates.max() >= len(table)):
        raise ValueError(f"rows must lie in [0, {len(table)}), found {candidates.min()}..{candidates.max()}")
    frame = table.iloc[candidates]
    keep = np.ones(len(frame), dtype=bool)
    if classes is not None:
        keep &= frame["label"].isin(list(classes)).to_numpy()
    if predictions is not None:
        keep &= frame["prediction"].isin(list(predictions)).to_numpy()
    if disagrees is not None:
        keep &= frame["disagrees"].to_numpy() == bool(disagrees)
    if kept is not None:
        keep &= _column(frame, "kept", "the kept / pruned filter needs a subset").to_numpy() == bool(kept)
    if tag is not None:
        keep &= np.fromiter((tag in tags for tags in _column(frame, "tags", "the tag filter needs tags")),
                            dtype=bool, count=len(frame))
    frame = frame[keep]
    column = SORT_KEYS[sort]
    if column is not None:
        _column(frame, column, f"sorting by {sort} needs influence scores")
        frame = frame.sort_values(column, ascending=not descending, kind="stable")
    return frame["index"].to_numpy(dtype=np.int64)


def _column(frame: pd.DataFrame, name: str, why: str) -> pd.Series:
    if name not in frame.columns:
        raise ValueError(f"{why}: the sample table has no {name!r} column")
    return frame[name]


# ------------------------------------------------------------------------- teacher disagreement tails
def tail_masks(scores: np.ndarray, labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(helpful, harmful): (N,) bool masks of the ``fraction`` most helpful (highest s) and most
    harmful (lowest s) samples of each class: m_c = max(1, round(fraction * n_c)) samples each, by
    ``within_class_ranks`` (ties: the earlier pool row counts as more harmful). ``fraction`` in
    (0, 0.5], so the two tails never overlap."""
    if not 0.0 < float(fraction) <= 0.5:
        raise ValueError(f"the tail fraction must lie in (0, 0.5], got {fraction}")
    labels = np.asarray(labels).reshape(-1)
    ranks = within_class_ranks(scores, labels)
    n_class = _class_sizes(labels)
    tail = np.maximum(1, np.round(fraction * n_class)).astype(np.int64)
    return ranks >= n_class - tail, ranks < tail


def disagreement_by_tail(scores: np.ndarray, labels: np.ndarray, predictions: np.ndarray, fraction: float,
                         class_names: Sequence[str]) -> pd.DataFrame:
    """Per class and tail, how many samples the teacher gets right and wrong; 2 * C rows.

    Columns: class (index), class_name, tail ("most helpful" or "most harmful", ``tail_masks`` with
    ``fraction``), samples, teacher_right (prediction == label), teacher_wrong, and class_samples,
    class_wrong (the whole class, for the base rate). Rows: the helpful tail of every class, then
    the harmful tail of every class."""
    labels, predictions = np.asarray(labels).reshape(-1), np.asarray(predictions).reshape(-1)
    if len(predictions) != len(labels):
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    wrong = predictions != labels
    classes = np.arange(len(class_names))
    class_samples = np.bincount(labels, minlength=len(classes))
    class_wrong = np.bincount(labels[wrong], minlength=len(classes))
    parts = []
    for tail, mask in zip(TAILS, tail_masks(scores, labels, fraction)):
        samples = np.bincount(labels[mask], minlength=len(classes))
        wrong_in_tail = np.bincount(labels[mask & wrong], minlength=len(classes))
        parts.append(pd.DataFrame({"class": classes, "class_name": list(class_names), "tail": tail,
                                   "samples": samples, "teacher_right": samples - wrong_in_tail,
                                   "teacher_wrong": wrong_in_tail, "class_samples": class_samples,
                                   "class_wrong": class_wrong}))
    return pd.concat(parts, ignore_index=True)


def disagreement_summary(counts: pd.DataFrame, fraction: float) -> str:
    """One line from ``disagreement_by_tail``: the share of teacher-wrong samples in each tail
    against the whole pool (shares with one decimal), e.g. "Of the 10% most harmful samples of each
    class, 63.0% are ones the teacher gets wrong (1.2% of the most helpful), against 4.1% overall."."""
    rates = {tail: _share(part["teacher_wrong"].sum(), part["samples"].sum())
             for tail, part in counts.groupby("tail", sort=False)}
    first = counts[counts["tail"] == TAILS[0]]
    overall = _share(first["class_wrong"].sum(), first["class_samples"].sum())
    return (f"Of the {fraction:.0%} most harmful samples of each class, {rates['most harmful']:.1%} are ones the "
            f"teacher gets wrong ({rates['most helpful']:.1%} of the most helpful), against {overall:.1%} overall.")


def _share(part: int, whole: int) -> float:
    return float(part) / float(whole) if whole else 0.0
