"""Feature map: the teacher's feature space in 2-D (PCA at once, UMAP cached), coloured by class,
influence, kept / pruned or inclusion probability. A lasso or box selects samples; the selection
(ids in session_state) drives a histogram over the pool, a per-class table, the gallery and tags."""
from __future__ import annotations

import numpy as np
import streamlit as st

from ifbeta import plots
from ifbeta.subsets import query, tags
from pages._studio import gallery, selection, state, steps, widgets

state.page_guard(__file__)

INFLUENCE_SCALES = ["within-class percentile", "raw s (clipped at 1–99%)"]
CUSTOM_TAG = "custom ..."


def projection(ws, method: str) -> tuple[np.ndarray, str]:
    """(coords (N, 2), the name of what they are): UMAP from the store when asked for and computed,
    else PCA. The notice and its button show only while UMAP is missing; computing reruns the page."""
    if method == "UMAP":
        with st.expander("UMAP settings"):
            neighbours = st.slider("Neighbours", 5, 100, key="umap_neighbours")
            min_dist = st.slider("Minimum distance", 0.0, 0.99, step=0.01, key="umap_min_dist")
        coords = steps.umap(ws, neighbours, min_dist, compute=False)
        if coords is not None:
            return coords, "UMAP"
        st.info("UMAP for these settings is not computed yet; showing PCA meanwhile. The result is stored, "
                "so this happens once per dataset, teacher and settings.")
        if st.button("Compute UMAP", type="primary"):
            steps.umap(ws, neighbours, min_dist)
            st.rerun()
    return steps.pca(ws), "PCA"


def focus_subset(ws, *, compute: bool) -> tuple[np.ndarray | None, str]:
    """(kept mask (N,) bool or None, a caption) of the Subset page's subset (method, ratio, seed, and
    its 'leave out tagged exclude' choice); without ``compute`` only a stored one (else None)."""
    method, ratio, seed = (st.session_state["subset_method"], st.session_state["subset_ratio"],
                           int(st.session_state["subset_seed"]))
    exclude = steps.tagged(ws, tags.EXCLUDE) if st.session_state["subset_exclude"] else []
    chosen = (steps.choose if compute else steps.peek_choose)(ws, method, ratio, seed, exclude=exclude or None)
    if chosen is None:
        return None, ""
    kept = np.zeros(len(ws.train), dtype=bool)
    kept[chosen.indices] = True
    left_out = f", {len(exclude):,} tagged {tags.EXCLUDE} left out" if exclude else ""
    return kept, (f"Subset of the Subset page: **{method}** at pruning ratio {ratio:g}, seed {seed}{left_out}: "
                  f"{kept.sum():,} kept ({kept.mean():.0%}), {(~kept).sum():,} pruned.")


def score_percentile(ws) -> np.ndarray:
    """(N,) within-class percentile of the influence s (100 = the most helpful of its class)."""
    return query.within_class_percentile(steps.scores(ws)[0].scores, ws.train.labels)


def colouring(ws, colour: str) -> dict:
    """The sample_map options of the chosen colouring (arrays of the whole pool)."""
    if colour == "influence score":
        scale = st.radio("Influence colour scale", INFLUENCE_SCALES, horizontal=True, key="map_influence_scale")
        if scale == INFLUENCE_SCALES[0]:
            return {"values": score_percentile(ws), "value_name": plots.PERCENTILE_TITLE, "colorscale": plots.HELPFUL_SCALE,
                    "value_range": (0.0, 100.0)}
        s = steps.scores(ws)[0].scores
        return {"values": s, "value_name": "s, clipped at the<br>1st and 99th percentile", "colorscale": plots.HELPFUL_SCALE,
                "value_range": plots.quantile_range(s, symmetric_about=0.0)}
    if colour == "kept / pruned":
        kept, caption = focus_subset(ws, compute=True)
        st.caption(caption + " Pruned points are drawn larger and opaque, beneath translucent kept points.")
        return {"kept": kept}
    if colour == "inclusion probability":
        config = state.policy_config()
        st.caption(f"The policy of the Policy page's teaching mode: ranks of **{config.axis}**"
                   f"{' within each class' if config.stratify else ' over the pool'}, seed {config.seed}.")
        alpha, beta, ratio = widgets.policy_shape()
        p = steps.preview(ws, alpha=alpha, beta=beta, ratio=ratio).probabilities
        return {"values": p, "value_name": "inclusion p<br>(1–99% range)", "colorscale": "Viridis",
                "value_range": plots.quantile_range(p)}
    return {"labels": ws.train.labels, "class_names": ws.train.class_names}


def draw_map(ws, coords: np.ndarray, title: str, options: dict, show_all: bool):
    """The map (a class-stratified sample above plots.DISPLAY_LIMIT points); -> the chart's event."""
    labels = ws.train.labels
    shown = np.arange(len(labels)) if show_all else plots.downsample(labels, plots.DISPLAY_LIMIT)
    if len(shown) < len(labels):
        st.caption(f"showing a class-stratified {len(shown):,} of {len(labels):,} points")
    options = {k: (v[shown] if isinstance(v, np.ndarray) else v) for k, v in options.items()}
    ids = np.asarray(ws.train.ids, dtype=object)[shown]
    figure = plots.sample_map(coords[shown], ids, title=title, size=st.session_state["map_point_size"],
                              opacity=st.session_state["map_opacity"], selected=st.session_state["map_selection"],
                              **options)
    return st.plotly_chart(figure, key="map_chart", on_select="rerun", selection_mode=("lasso", "box"))


def class_table(ws, chosen: np.ndarray, percentile: np.ndarray, kept: np.ndarray | None) -> int | None:
    """The per-class table of the selection; a clicked row narrows the gallery -> that class or None."""
    table = plots.selection_table(ws.train.labels, chosen, ws.train.class_names, percentile=percentile, kept=kept)
    formats = {"share of class": st.column_config.NumberColumn(format="percent"),
               "mean percentile": st.column_config.NumberColumn(format="%.1f"),
               "kept share": st.column_config.NumberColumn(format="percent")}
    event = st.dataframe(table, hide_index=True, on_select="rerun", selection_mode="single-row",
                         key=f"map_class_table_{st.session_state.get(selection.VERSION, 0)}", column_config=formats)
    picked = [row for row in event.selection.rows if row < len(table)]
    return int(table.index[picked[0]]) if picked else None


def tag_panel(ws, chosen_ids: list[str]) -> None:
    """Tag or untag the selected samples (stored per pool: the Subset page and the CLI read them)."""
    left, middle, right = st.columns([2, 2, 3])
    choice = left.selectbox("Tag", [tags.EXCLUDE, tags.SUSPECT, CUSTOM_TAG], key="map_tag")
    tag = (middle.text_input("Custom tag", key="map_custom_tag", placeholder="a name, up to 64 characters")
           if choice == CUSTOM_TAG else choice)
    with right:
        buttons = st.columns(2)
        if buttons[0].button(f"Tag {len(chosen_ids):,} selected", key="map_tag_add"):
            if steps.tag_samples(ws, tag, chosen_ids) is not None:
                st.success(f"tagged {len(chosen_ids):,} samples {tag!r}", icon="🏷️")
        if buttons[1].button(f"Untag {len(chosen_ids):,} selected", key="map_tag_remove"):
            if steps.tag_samples(ws, tag, chosen_ids, remove=True) is not None:
                st.success(f"removed {tag!r} from the selection", icon="🏷️")
    stored = steps.tag_map(ws)
    chosen = set(chosen_ids)
    counts = [f"**{name}** {len(ids):,} ({len(chosen.intersection(ids)):,} selected)" for name, ids in stored.items()]
    st.caption("Tags of this pool: " + (" · ".join(counts) if counts else "none yet") +
               f". The Subset page can leave out the samples tagged {tags.EXCLUDE}.")


def selection_panel(ws, chosen: np.ndarray, kept: np.ndarray | None) -> None:
    """What the selection holds: histogram over the pool, per-class table, gallery, tags."""
    heading, clear = st.columns([4, 1])
    heading.subheader(f"Selection: {len(chosen):,} samples")
    if clear.button("Clear selection", key="map_clear"):
        selection.clear()
        st.rerun()
    s = steps.scores(ws)[0].scores
    low, high = plots.quantile_range(s)
    left, right = st.columns([3, 2])
    left.plotly_chart(plots.selection_histogram(s, chosen, value_range=(low, high),
                                                x_title="s (clipped at the 1st and 99th percentile; > 0 helpful)"),
                      key="map_selection_histogram")
    with right:
        label = class_table(ws, chosen, score_percentile(ws), kept)
        st.caption("Click a row to show only that class below." if label is None else
                   f"Showing class **{ws.train.class_names[label]}**; click the row again for every class.")
    rows = chosen if label is None else chosen[ws.train.labels[chosen] == label]
    rows = rows[np.argsort(-s[rows], kind="stable")]  # most helpful first
    gallery.gallery(ws, rows, key="map_gallery", scores=s, kept=kept, width=750)
    tag_panel(ws, [ws.train.ids[i] for i in chosen])


# ---------------------------------------------------------------------------------------------- page
st.title("Feature map")
st.caption("Teacher penultimate features, standardised. Draw a lasso or a box to select samples; the selection "
           "stays until you clear it or draw another.")
ws = steps.workspace()
position = {sample_id: i for i, sample_id in enumerate(ws.train.ids)}

left, middle, right = st.columns([1, 2, 1])
method = left.radio("Projection", ["PCA", "UMAP"], horizontal=True, key="map_method")
colour = middle.radio("Colour by", ["class", "influence score", "kept / pruned", "inclusion probability"],
                      horizontal=True, key="map_colour")
show_all = right.checkbox(f"Show all points (> {plots.DISPLAY_LIMIT:,} is slow)", key="map_show_all",
                          disabled=len(ws.train) <= plots.DISPLAY_LIMIT)
with st.expander("Points"):
    columns = st.columns(2)
    columns[0].slider("Point size", 2, 12, key="map_point_size")
    columns[1].slider("Opacity (pruned points stay opaque)", 0.1, 1.0, step=0.05, key="map_opacity")

coords, drawn = projection(ws, method)
options = colouring(ws, colour)
title = f"{drawn} of the teacher features" + (" (UMAP not computed yet)" if drawn != method else "")
selection.adopt(st.session_state.get("map_chart"), position)  # a new lasso, before the map draws the selection
selection.adopt(draw_map(ws, coords, title, options, show_all), position)

chosen = selection.rows(position)
if len(chosen):
    kept = options["kept"] if "kept" in options else focus_subset(ws, compute=False)[0]
    selection_panel(ws, chosen, kept)
else:
    st.caption("No selection yet: pick the lasso or box tool on the chart and draw around points.")
