"""Feature map: the teacher's feature space in 2-D (PCA at once, UMAP cached); select points to see them."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from ifbeta import plots
from pages._studio import state, steps, widgets

state.page_guard(__file__)

st.title("Feature map")
st.caption("Teacher penultimate features, standardised. Draw a lasso or a box to open the selected samples.")
ws = steps.workspace()
ids, labels, names = np.asarray(ws.train.ids, dtype=object), ws.train.labels, ws.train.class_names

left, middle, right = st.columns([1, 2, 1])
method = left.radio("Projection", ["PCA", "UMAP"], horizontal=True, key="map_method")
colour = middle.radio("Colour by", ["class", "influence score", "kept / pruned", "inclusion probability"],
                      horizontal=True, key="map_colour")
show_all = right.checkbox(f"Show all points (> {plots.DISPLAY_LIMIT:,} is slow)", key="map_show_all",
                          disabled=len(ids) <= plots.DISPLAY_LIMIT)

coords = None
if method == "UMAP":
    with st.expander("UMAP settings"):
        neighbours = st.slider("Neighbours", 5, 100, key="umap_neighbours")
        min_dist = st.slider("Minimum distance", 0.0, 0.99, step=0.01, key="umap_min_dist")
    coords = steps.umap(ws, neighbours, min_dist, compute=False)
    if coords is None:
        st.info("UMAP for these settings is not computed yet; showing PCA meanwhile. The result is stored, "
                "so this happens once per dataset, teacher and settings.")
        if st.button("Compute UMAP", type="primary"):
            coords = steps.umap(ws, neighbours, min_dist)
if coords is None:
    coords = steps.pca(ws)

options: dict = {"labels": labels, "class_names": names}
if colour == "influence score":
    result, _ = steps.scores(ws)
    options = {"values": result.scores, "value_name": "s", "colorscale": plots.HELPFUL_SCALE, "midpoint": 0.0}
elif colour == "kept / pruned":
    method_name, ratio, seed = (st.session_state["subset_method"], st.session_state["subset_ratio"],
                                st.session_state["subset_seed"])
    st.caption(f"Subset of the Subset page: **{method_name}** at pruning ratio {ratio:g}, seed {seed}.")
    chosen = steps.choose(ws, method_name, ratio, seed)
    kept = np.zeros(len(ids), dtype=bool)
    kept[chosen.indices] = True
    options = {"kept": kept}
elif colour == "inclusion probability":
    config = state.policy_config()
    st.caption(f"The policy of the Policy page's teaching mode: ranks of **{config.axis}**"
               f"{' within each class' if config.stratify else ' over the pool'}, seed {config.seed}.")
    alpha, beta, ratio = widgets.policy_shape()
    shown_policy = steps.preview(ws, alpha=alpha, beta=beta, ratio=ratio)
    options = {"values": shown_policy.probabilities, "value_name": "inclusion p", "colorscale": "Viridis"}

shown = np.arange(len(ids)) if show_all else plots.downsample(labels, plots.DISPLAY_LIMIT)
if len(shown) < len(ids):
    st.caption(f"showing a class-stratified {len(shown):,} of {len(ids):,} points")
subset_options = {k: (v[shown] if isinstance(v, np.ndarray) and k != "class_names" else v) for k, v in options.items()}
figure = plots.sample_map(coords[shown], ids[shown], title=f"{method} of the teacher features", **subset_options)
event = st.plotly_chart(figure, key="map_chart", on_select="rerun", selection_mode=("lasso", "box"))

points = event.selection.points if event is not None else []
selected_ids = [p["customdata"][0] if isinstance(p.get("customdata"), list) else p.get("customdata")
                for p in points if p.get("customdata") is not None]
if selected_ids:
    position = {sample_id: i for i, sample_id in enumerate(ws.train.ids)}
    selected = np.array(sorted({position[i] for i in selected_ids if i in position}), dtype=np.int64)
    st.subheader(f"Selection: {len(selected):,} samples")
    table = pd.DataFrame({"class": [names[c] for c in range(len(names))],
                          "selected": np.bincount(labels[selected], minlength=len(names))})
    left, right = st.columns([1, 3])
    left.dataframe(table[table["selected"] > 0], hide_index=True)
    with right:
        limit = st.slider("Images shown", 8, 256, step=8, key="map_gallery_limit")
        result, _ = steps.scores(ws)
        widgets.gallery(ws, selected, key="map_gallery", scores=result.scores, limit=limit, width=750)
else:
    st.caption("No selection yet: pick the lasso or box tool on the chart and draw around points.")
