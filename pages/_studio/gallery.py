"""The sample gallery every page shows (Influence tails, Subset kept / pruned, Feature map selection).

``gallery(ws, indices, *, key, scores=None, kept=None, limit=64, subset=None)`` draws, for the pool
rows ``indices``:

- a control row: sort key and direction, filters (class, teacher prediction, teacher agrees or
  disagrees, kept / pruned when ``kept`` is given, tag when the pool has tags), page size and page;
  every widget's session key is ``f"{key}_<name>"`` (``KEYS``), so several galleries live on one page;
- the line "showing m of N" (N: rows left after the filters);
- thumbnails with a one-line caption each: short id · label→prediction · s. The caption is a small
  button: clicking it opens a dialog with the image enlarged and every field of the sample (the
  subset's samples.csv columns when ``subset`` names its directory, then the sample-table columns
  samples.csv lacks; see ``ifbeta.subsets.query.sample_table``).

The engine behind it is ``ifbeta.subsets.query`` (``sample_table``, ``query``); this module holds
widgets and layout only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from ifbeta import pipeline, plots
from ifbeta.subsets import files as subset_files
from ifbeta.subsets import query

from .feedback import engine_errors
from .steps import tag_map

PAGE_SIZES = (16, 32, 64, 128, 256)
TEACHER = {"all": None, "disagrees with the label": True, "agrees with the label": False}
MEMBERSHIP = {"all": None, "kept": True, "pruned": False}
ALL = "(all)"  # the "no filter" choice of the class, prediction and tag boxes (a None value would show as empty)
KEYS = {"sort": "given", "descending": True, "class": ALL, "prediction": ALL, "teacher": "all",
        "subset": "all", "tag": ALL, "page_size": 64, "page": 1}
"""Widget name -> default; the session key is ``f"{key}_{name}"`` (``page_size`` defaults to ``limit`` and
follows it when the page changes ``limit``, remembered under ``f"_{key}_last_limit"``)."""
MAIN_WIDTH, CHARACTER_WIDTH, CELL_PADDING, MAX_COLUMNS = 1000, 8.5, 28, 8  # pixels; cells fit their caption
DETAIL_SIZE = 256


def gallery(ws: pipeline.Workspace, indices, *, key: str, scores: np.ndarray | None = None,
            kept: np.ndarray | None = None, limit: int = 64, subset: str | Path | None = None,
            width: int = MAIN_WIDTH) -> np.ndarray:
    """Draw the gallery of pool rows ``indices`` (any order: "given" sorting keeps it) and return the
    rows it selected after filters and sorting ((m,) int64, all pages).

    ``key``: the prefix of every session key (unique per gallery on a page); ``scores``: (N,) influence
    s (> 0 helpful), enables the score and rank sorts and the s in captions; ``kept``: (N,) bool of a
    subset, enables the kept / pruned filter; ``limit``: the default page size; ``subset``: a subset
    directory whose samples.csv row the detail view lists; ``width``: about how many pixels the gallery
    spans (the page's main column by default; less inside a page column), so captions stay on one line."""
    table = _table(ws, scores, kept)
    rows = np.asarray(indices, dtype=np.int64).reshape(-1)
    options = _controls(table, list(ws.train.class_names), key, limit)
    page_size = int(options.pop("page_size"))
    with engine_errors(stop=False):
        order = query.query(table, rows, **options)
        pages = max(1, -(-len(order) // page_size))
        page = _page(key, pages)
        shown = order[(page - 1) * page_size: page * page_size]
        where = f" (page {page} of {pages})" if pages > 1 else ""
        filtered = f", after the filters, of {len(rows):,}" if len(order) < len(rows) else ""
        st.caption(f"showing {len(shown):,} of {len(order):,}{where}{filtered}")
        _grid(ws, table, shown, key, subset, width)
        return order
    return np.zeros(0, dtype=np.int64)


# -------------------------------------------------------------------------------------------- table
@st.cache_resource(max_entries=8, show_spinner=False)  # shared, not copied: nothing here writes to it
def _cached_table(features_key: str, fingerprint: str, scores, kept, tags: tuple, _ws) -> pd.DataFrame:
    return query.sample_table(_ws, scores=scores, kept=kept, tags=dict(tags))


def _table(ws: pipeline.Workspace, scores, kept) -> pd.DataFrame:
    """The pool's sample table (``query.sample_table``) with the store's tags, in memory per input."""
    tags = tuple((tag, tuple(ids)) for tag, ids in tag_map(ws).items())
    scores = None if scores is None else np.asarray(scores, dtype=np.float64)
    kept = None if kept is None else np.asarray(kept, dtype=bool)
    return _cached_table(ws.features.key, ws.train.fingerprint, scores, kept, tags, ws)


# ----------------------------------------------------------------------------------------- controls
def _controls(table: pd.DataFrame, class_names: list[str], key: str, limit: int) -> dict:
    """The control row -> keyword arguments of ``query.query`` plus ``page_size``."""
    for name, default in KEYS.items():
        st.session_state.setdefault(f"{key}_{name}", int(limit) if name == "page_size" else default)
    if st.session_state.get(f"_{key}_last_limit", int(limit)) != int(limit):  # the page changed its own limit
        st.session_state[f"{key}_page_size"] = int(limit)
    st.session_state[f"_{key}_last_limit"] = int(limit)
    classes = [ALL] + list(range(len(class_names)))
    every = lambda c: "all" if c == ALL else f"{c}: {class_names[c]}"  # noqa: E731
    sorts = [s for s, column in query.SORT_KEYS.items() if column is None or column in table.columns]
    tags = sorted({tag for carried in table["tags"] for tag in carried}) if "tags" in table.columns else []
    has_kept = "kept" in table.columns
    cells = iter(st.columns(6 + has_kept + bool(tags)))
    options = {"sort": next(cells).selectbox("Sort by", sorts, key=f"{key}_sort",
                                             help="given: the order this page chose")}
    options["descending"] = bool(next(cells).toggle("Descending", key=f"{key}_descending"))
    label = next(cells).selectbox("Class (label)", classes, key=f"{key}_class", format_func=every)
    prediction = next(cells).selectbox("Teacher prediction", classes, key=f"{key}_prediction", format_func=every)
    options["classes"] = None if label == ALL else [label]
    options["predictions"] = None if prediction == ALL else [prediction]
    options["disagrees"] = TEACHER[next(cells).selectbox("Teacher", list(TEACHER), key=f"{key}_teacher")]
    if has_kept:
        options["kept"] = MEMBERSHIP[next(cells).selectbox("Subset", list(MEMBERSHIP), key=f"{key}_subset")]
    if tags:
        tag = next(cells).selectbox("Tag", [ALL] + tags, key=f"{key}_tag",
                                    format_func=lambda t: "all" if t == ALL else t)
        options["tag"] = None if tag == ALL else tag
    sizes = sorted(set(PAGE_SIZES) | {int(limit)})
    options["page_size"] = next(cells).selectbox("Page size", sizes, key=f"{key}_page_size")
    return options


def _page(key: str, pages: int) -> int:
    """The page number input (only when there is more than one page), clamped to 1..pages."""
    name = f"{key}_page"
    if int(st.session_state.get(name, 1)) > pages:
        st.session_state[name] = pages
    if pages == 1:
        return 1
    return int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key=name))


# -------------------------------------------------------------------------------------------- cells
def caption(row: pd.Series) -> str:
    """One-line caption of a sample-table row: short id · label→prediction (class names) · s."""
    text = f"{row['short_id']} · {row['class_name']}→{row['predicted_class']}"
    return text + (f" · {score_text(row['score'])}" if "score" in row else "")


def score_text(score: float) -> str:
    """s in two significant digits, short exponent: 0.00123 -> "+1.2e-3", -4.5 -> "-4.5e+0"."""
    mantissa, exponent = f"{score:+.1e}".split("e")
    return f"{mantissa}e{int(exponent):+d}" if int(exponent) < 0 else f"{mantissa}e{int(exponent)}"


def column_count(captions: list[str], width: int = 0) -> int:
    """Cells per row so that the longest caption fits on one line in ``width`` pixels (default
    MAIN_WIDTH), 2..MAX_COLUMNS."""
    widest = max((len(c) for c in captions), default=0) * CHARACTER_WIDTH + CELL_PADDING
    return int(min(MAX_COLUMNS, max(2, (width or MAIN_WIDTH) // max(widest, 1))))


def _grid(ws: pipeline.Workspace, table: pd.DataFrame, rows: np.ndarray, key: str, subset, width: int) -> None:
    if not len(rows):
        st.caption("no samples")
        return
    captions = [caption(table.iloc[i]) for i in rows]
    per_row = column_count(captions, width)
    size = max(64, min(128, int(width / per_row) - CELL_PADDING))
    images = ws.train.images[np.array(rows, dtype=np.int64)].numpy()  # (m, C, H, W) uint8
    for start in range(0, len(rows), per_row):
        cells = st.columns(per_row)
        for cell, offset in zip(cells, range(start, min(start + per_row, len(rows)))):
            i = int(rows[offset])
            cell.image(plots.thumbnail(images[offset], size), width=size, output_format="PNG")
            if cell.button(captions[offset], key=f"{key}_open_{i}", type="tertiary",
                           help=f"{table.at[i, 'id']}: open every field of this sample"):
                _details(ws, table, i, None if subset is None else str(subset))


@st.dialog("Sample", width="large")
def _details(ws: pipeline.Workspace, table: pd.DataFrame, row: int, subset: str | None) -> None:
    """The sample enlarged, and every field of its row (samples.csv first when a subset is given)."""
    fields = {}
    if subset is not None:
        with engine_errors(stop=False):
            csv = Path(subset) / "samples.csv"
            fields.update(_samples(str(subset), csv.stat().st_mtime_ns).iloc[row].to_dict())
    fields.update({name: value for name, value in table.iloc[row].to_dict().items() if name not in fields})
    if "tags" in fields:
        fields["tags"] = ", ".join(fields["tags"]) or "none"
    st.markdown(f"**{fields['id']}**")
    st.image(plots.thumbnail(ws.train.images[row].numpy(), DETAIL_SIZE), width=DETAIL_SIZE, output_format="PNG")
    st.table(pd.DataFrame({"field": list(fields), "value": [_text(v) for v in fields.values()]}).set_index("field"))


@st.cache_data(max_entries=4, show_spinner=False)
def _samples(directory: str, modified: int) -> pd.DataFrame:
    """samples.csv of a subset directory (in memory per directory and modification time)."""
    return subset_files.read_samples(directory)


def _text(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if not np.isfinite(value) else f"{float(value):.6g}"
    return str(value)
