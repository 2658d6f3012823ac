"""Influence: cross-fitted influence scores of every pool sample, their shape, extremes and a ground-truth check."""
from __future__ import annotations

import numpy as np
import streamlit as st

from ifbeta import plots
from ifbeta.influence.solvers import SOLVERS
from pages._studio import state, steps, widgets

state.page_guard(__file__)

st.title("Influence")
st.caption("s_i = change of the proxy's validation KD loss when sample i is removed: **s > 0 helpful**, "
           "s < 0 harmful. Each sample is scored by a fold that does not contain it (cross-fitting).")
with st.expander("Scoring settings"):
    left, right = st.columns(2)
    left.selectbox("Solver", list(SOLVERS), key="influence_solver", help="direct = dense Cholesky (small heads)")
    right.number_input("Cross-fitting folds", min_value=2, max_value=10, key="influence_folds")

ws = steps.workspace()
result, key = steps.scores(ws)
s, labels, names = result.scores, ws.train.labels, ws.train.class_names
columns = st.columns(4)
columns[0].metric("Samples scored", f"{len(s):,}")
columns[1].metric("Helpful (s > 0)", f"{np.mean(s > 0):.1%}")
columns[2].metric("Ridge mu", f"{result.mu:.3g}")
columns[3].metric("Scoring time", f"{result.seconds.get('total', 0.0):.1f} s")

left, right = st.columns(2)
left.plotly_chart(plots.score_histogram(s), key="score_histogram")
with right:
    kind = st.radio("Per-class view", ["violin", "box"], horizontal=True, key="influence_violin_kind")
    st.plotly_chart(plots.class_violin(s, labels, names, kind=kind), key="class_violin")

st.subheader("Most helpful and most harmful samples")
left, right = st.columns([1, 3])
label = left.selectbox("Class", list(range(len(names))), format_func=lambda c: f"{c}: {names[c]}", key="influence_class")
count = right.slider("Samples each", 4, 32, step=4, key="influence_count")
helpful, harmful = plots.extremes_per_class(s, labels, label, count)
st.markdown("**Most helpful** (removing them hurts the student most)")
widgets.gallery(ws, helpful, scores_=s)
st.markdown("**Most harmful** (removing them helps)")
widgets.gallery(ws, harmful, scores_=s)

st.subheader("Influence vs teacher confidence")
statistic = st.selectbox("Teacher statistic", ["margin", "entropy", "el2n", "kd_loss"], key="confidence_statistic",
                         help="margin: p_y - max other (higher = easier); entropy: uncertainty; el2n, kd_loss: difficulty")
shown = plots.downsample(labels, plots.DISPLAY_LIMIT)
if len(shown) < len(s):
    st.caption(f"showing a class-stratified {len(shown):,} of {len(s):,} samples")
st.plotly_chart(plots.confidence_scatter(result.teacher_scores[statistic][shown], s[shown], labels[shown], names,
                                         np.asarray(ws.train.ids, dtype=object)[shown],
                                         confidence_name=f"teacher {statistic}"), key="confidence_scatter")

st.subheader("Leave-one-out check")
st.caption("Refit the proxy without each of a few random samples and compare the true change of the "
           "validation loss with the predicted s_i (one cross-fitting split).")
samples = st.number_input("Samples to refit", min_value=10, max_value=2000, step=10, key="loo_samples")
report = steps.loo(ws, samples, compute=False)
if report is None and st.button("Run the leave-one-out check", help="one proxy refit per sample"):
    report = steps.loo(ws, samples)
if report is not None:
    columns = st.columns(4)
    columns[0].metric("Spearman", f"{report['spearman']:.3f}")
    columns[1].metric("Slope (true on predicted)", f"{report['slope']:.3f}")
    columns[2].metric("Sign agreement", f"{report['sign_agreement']:.1%}")
    columns[3].metric("Samples", report["n"])
    st.plotly_chart(plots.loo_scatter(report["predicted"], report["actual"]), key="loo_scatter")
    columns = st.columns(3)
    columns[0].metric("Remove 10% most harmful: ΔL_V", f"{report['group_harmful_delta']:+.3g}",
                      help="should be < 0 (validation loss goes down)")
    columns[1].metric("Remove 10% most helpful: ΔL_V", f"{report['group_helpful_delta']:+.3g}",
                      help="should be larger than removing a random 10%")
    columns[2].metric("Remove a random 10%: ΔL_V", f"{report['group_random_delta']:+.3g}")
