"""The Feature map's sample selection, kept as sample ids in session_state (``map_selection``).

A lasso or box on the map arrives as a chart event (``event.selection.points``, ids in customdata).
The event stays in the chart's widget state for as long as the chart is shown and is gone after a
page change, so the selection lives on its own key: a chart event is adopted once, when it differs
from the last event seen; an empty event never clears it (``clear`` does), so the selection survives
reruns, page changes and the chart's own reset. ``map_selection_version`` counts adoptions, so
widgets that refer to rows of the selection (the per-class table) start fresh with a new one.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

SELECTION = "map_selection"  # sorted sample ids (list of str)
VERSION = "map_selection_version"
_SEEN = "_map_event_seen"  # the ids of the last chart event looked at (tuple)


def event_ids(event) -> tuple[str, ...]:
    """Sorted unique sample ids of a plotly selection event (the chart's return value, or its state
    under the chart's key; customdata: an id, or a list whose first item is the id); () for no event
    or an empty selection."""
    try:
        points = event["selection"]["points"] or []
    except (KeyError, TypeError):  # no event yet
        points = []
    found = set()
    for point in points:
        data = point.get("customdata")
        data = data[0] if isinstance(data, list) and data else data
        if isinstance(data, str):
            found.add(data)
    return tuple(sorted(found))


def adopt(event, known: dict[str, int]) -> None:
    """Take the chart event as the selection if it is new and not empty (ids outside ``known``, the
    pool's id -> row, are dropped)."""
    ids = event_ids(event)
    if ids == st.session_state.get(_SEEN, ()):
        return
    st.session_state[_SEEN] = ids
    if ids:
        st.session_state[SELECTION] = [i for i in ids if i in known]
        st.session_state[VERSION] = st.session_state.get(VERSION, 0) + 1


def clear() -> None:
    """Forget the selection (the chart event that made it is not adopted again)."""
    st.session_state[SELECTION] = []
    st.session_state[VERSION] = st.session_state.get(VERSION, 0) + 1


def rows(known: dict[str, int]) -> np.ndarray:
    """The selection as sorted pool rows (int64), ids no longer in the pool left out."""
    return np.array(sorted({known[i] for i in st.session_state.get(SELECTION, []) if i in known}), dtype=np.int64)
