"""Subset: choose a selection method and ratio, inspect what is kept and pruned, download or export it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from ifbeta import plots
from ifbeta.selection import registry as selection
from ifbeta.subsets import export, tags
from ifbeta.subsets import files as subset_files
from pages._studio import feedback, gallery, state, steps

state.page_guard(__file__)

CHEAP_COMPARISON = ["random-balanced", "influence-top", "el2n-teacher", "entropy", "margin", "moderate"]

st.title("Subset")
ws = steps.workspace()
names, labels = ws.train.class_names, ws.train.labels
descriptions = dict(selection.describe_methods())

columns = st.columns([2, 2, 1])
method = columns[0].selectbox("Method", list(selection.METHODS), key="subset_method",
                              format_func=lambda m: f"{m} — {descriptions[m]}")
ratio = columns[1].slider("Pruning ratio (fraction removed)", 0.05, 0.95, step=0.05, key="subset_ratio")
seed = columns[2].number_input("Seed", min_value=0, step=1, key="subset_seed")
seed = int(seed)
spec = selection.METHODS[method]
excluded = steps.tagged(ws, tags.EXCLUDE)
exclude = None
if excluded and st.checkbox(f"Leave out samples tagged {tags.EXCLUDE} ({len(excluded):,})", key="subset_exclude",
                            help="they are never kept; the method chooses the same number of samples from the rest"):
    exclude = excluded
chosen = steps.peek_choose(ws, method, ratio, seed, exclude=exclude)  # stored in any session, or by the CLI
if chosen is None and spec.costly:
    offer = st.empty()
    with offer.container():
        st.info(f"**{method}** {'learns the policy' if method.startswith('ifbeta') else 'trains a network'} before "
                "selecting (results are stored, so only once per setting).")
        make = st.button("Make the subset", type="primary")
    if not make:
        st.stop()
    offer.empty()
if chosen is None:
    chosen = steps.choose(ws, method, ratio, seed, exclude=exclude)
directory = steps.write_subset(ws, chosen, method, ratio, seed, exclude=exclude)

kept = np.zeros(len(labels), dtype=bool)
kept[chosen.indices] = True
kept_counts = np.bincount(labels[kept], minlength=len(names))
pruned_counts = np.bincount(labels[~kept], minlength=len(names))
columns = st.columns(4)
columns[0].metric("Kept", f"{kept.sum():,} of {len(kept):,}")
columns[1].metric("Pruned", f"{(~kept).sum():,}")
columns[2].metric("Selection time", f"{chosen.info.get('seconds', 0.0):.2f} s")
if chosen.info.get("alpha") is not None:
    columns[3].metric("Policy (alpha, beta)", f"{chosen.info['alpha']:.3g}, {chosen.info['beta']:.3g}")
left, right = st.columns([3, 2])
left.plotly_chart(plots.kept_pruned_bars(kept_counts, pruned_counts, names), key="kept_pruned")
right.dataframe(pd.DataFrame({"class": names, "kept": kept_counts, "pruned": pruned_counts}), hide_index=True,
                height=320)

# ------------------------------------------------------------------------------------------ galleries
st.subheader("Kept and pruned samples")
result, _ = steps.scores(ws)
rank_by = chosen.scores if chosen.scores is not None else result.scores
st.caption("Given order: the method's own score, highest first" if chosen.scores is not None else
           "The method has no per-sample score: given order is influence, most helpful first")
count = st.slider("Samples shown", 8, 64, step=8, key="subset_count")
order = np.argsort(-np.asarray(rank_by, dtype=np.float64), kind="stable")
st.markdown(f"**Kept** ({kept.sum():,})")
gallery.gallery(ws, order[kept[order]], key="subset_kept", scores=result.scores, kept=kept, limit=count,
                subset=directory)
st.markdown(f"**Pruned** ({(~kept).sum():,})")
gallery.gallery(ws, order[~kept[order]], key="subset_pruned", scores=result.scores, kept=kept, limit=count,
                subset=directory)

# ------------------------------------------------------------------------------------------- overlap
st.subheader("Overlap with other methods")
others = [m for m in selection.METHODS if m != method]
compare = st.multiselect("Compare with (same ratio and seed)", others, key="subset_compare",
                         default=[m for m in CHEAP_COMPARISON if m != method][:4],
                         help="costly methods (ifbeta, el2n-train, forgetting) compute when chosen")
if compare:
    sets = [chosen.indices] + [steps.choose(ws, other, ratio, seed, exclude=exclude).indices
                             for other in compare]
    st.plotly_chart(plots.jaccard_heatmap([method] + compare, sets), key="jaccard")

# ------------------------------------------------------------------------------------ download, export
st.subheader("Download and export")
st.caption(f"Subset directory: `{directory}`")
columns = st.columns(4)
for column, (name, mime) in zip(columns, [("indices.npy", "application/octet-stream"), ("samples.csv", "text/csv"),
                                          ("manifest.json", "application/json")]):
    column.download_button(f"Download {name}", (directory / name).read_bytes(), file_name=name, mime=mime,
                           key=f"download_{name}")
with feedback.engine_errors():
    archive = export.zip_bytes(directory)
columns[3].download_button("Download zip of all three", archive, file_name=f"{directory.name}.zip",
                           mime="application/zip", key="download_zip", type="primary")

with st.form("export_form"):
    destination = st.text_input("Export as ImageFolder to (a folder path)", key="export_path",
                                placeholder="/path/to/exported-subset")
    include_pruned = st.checkbox("Also write the pruned samples (under pruned/)", key="export_pruned")
    exported = st.form_submit_button("Export")
if exported:
    if not destination.strip():
        st.error("give a destination folder", icon="🚫")
    else:
        with feedback.engine_errors(stop=False):
            loaded = subset_files.load(directory, ws.train)
            with st.spinner("Writing PNG files ..."):
                path = export.export_imagefolder(loaded, ws.train.images, ws.train, destination.strip(),
                                                 test=ws.test, include_pruned=include_pruned)
            st.success(f"exported {loaded.k:,} images to {path}, with the {len(ws.test):,} test images beside "
                       f"them; it loads back as imagefolder:{path}")
