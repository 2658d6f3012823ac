"""Influence: cross-fitted influence scores of every pool sample, their shape, extremes and a ground-truth check."""
from __future__ import annotations

import numpy as np
import streamlit as st

from ifbeta import plots
from ifbeta.influence import families
from ifbeta.influence.solvers import SOLVERS
from ifbeta.subsets import query
from pages._studio import gallery, state, steps, widgets

state.page_guard(__file__)

SCALES = {"percentile": "rank percentile", "raw": "raw s (1st–99th percentile)", "symlog": "raw s (symmetric log)"}
STATISTICS = {"margin": "teacher logit margin t_y − max other t_c (higher = easier)",
              "entropy": "teacher entropy of softmax, nats (lower = more certain)",
              "el2n": "teacher EL2N ‖softmax − onehot(y)‖₂ (lower = easier)",
              "kd_loss": "proxy KD loss at the fold's fit (lower = easier)"}
# teacher statistic -> axis title with its units and which direction is easy (influence/statistics.py)

st.title("Influence")
st.caption("s_i = change of the proxy's validation KD loss when sample i is removed: **s > 0 helpful**, "
           "s < 0 harmful. Each sample is scored by a fold that does not contain it (cross-fitting).")
with st.expander("Scoring settings"):
    proxy, left, right = st.columns(3)
    family = widgets.proxy_family(proxy, role="the proxy whose validation KD loss the scores change")
    left.selectbox("Solver", list(SOLVERS), key="influence_solver", help="direct = dense Cholesky (small heads)",
                   disabled=not families.family(family).uses_mu)
    right.number_input("Cross-fitting folds", min_value=2, max_value=10, key="influence_folds")

ws = steps.workspace()
result, key = steps.scores(ws)
s, labels, names = result.scores, ws.train.labels, ws.train.class_names
columns = st.columns(4)
columns[0].metric("Samples scored", f"{len(s):,}")
columns[1].metric("Helpful (s > 0)", f"{np.mean(s > 0):.1%}")
if result.solver == "knn":  # the k-NN proxy has no ridge: show the (k, bandwidth) validation chose per fold
    chosen = sorted({(row["neighbours"], row["bandwidth"]) for row in result.mu_table if row.get("chosen")})
    columns[2].metric("k-NN k, bandwidth", " · ".join(f"{k}, {h:.3g}" for k, h in chosen) or "-",
                      help="chosen by validation in each cross-fitting fold; bandwidth in standardised feature units")
else:
    columns[2].metric("Ridge mu", f"{result.mu:.3g}")
columns[3].metric("Scoring time", f"{result.seconds.get('total', 0.0):.1f} s")

predictions = np.asarray(ws.features.logits).argmax(1)
scale_name = st.radio("Influence scale", list(SCALES), horizontal=True, key="influence_scale", format_func=SCALES.get,
                      help="one outlier sets a raw axis; percentiles keep every sample readable, and the symmetric "
                      "log axis shows every raw value, outliers included, with its sign")
scale = plots.score_scale(s, scale=scale_name, pool_percentile=query.within_class_percentile(s, np.zeros_like(labels)),
                          class_percentile=query.within_class_percentile(s, labels))
if scale.note:
    st.caption(scale.note)
left, right = st.columns(2)
by_class = {"labels": labels, "class_names": names, "title": "Class make-up along the influence rank"}
histogram = plots.score_histogram(scale.pool, helpful=s > 0, axis_title=scale.pool_title, zero=scale.zero,
                                  **(by_class if scale_name == "percentile" else {}))
left.plotly_chart(plots.apply_ticks(histogram, scale), key="score_histogram")
if scale_name == "percentile":
    left.caption("Ranks are uniform by construction, so the bars show which classes sit at the harmful (left of "
                 "the dashed s = 0 line) and helpful ends; a raw scale shows the shape of s itself.")
with right:
    kind = st.radio("Per-class view", ["violin", "box"], horizontal=True, key="influence_violin_kind")
    st.plotly_chart(plots.apply_ticks(plots.class_violin(scale.pool, labels, names, kind=kind,
                                                         axis_title=scale.pool_title, zero=scale.zero), scale, "y"),
                    key="class_violin")

st.subheader("Most helpful and most harmful samples")
percent = st.slider("Tail size (% of each class)", 1, 50, key="influence_tail_percent",
                    help="the most helpful and the most harmful samples of every class, this share each")
fraction = percent / 100
helpful, harmful = query.tail_masks(s, labels, fraction)
order = np.argsort(-s, kind="stable")  # most helpful first
st.markdown(f"**Most helpful** {percent}% per class (removing them hurts the student most)")
gallery.gallery(ws, order[helpful[order]], key="influence_helpful", scores=s, limit=32)
st.markdown(f"**Most harmful** {percent}% per class (removing them helps)")
gallery.gallery(ws, order[::-1][harmful[order[::-1]]], key="influence_harmful", scores=s, limit=32)

st.subheader("Where the teacher disagrees with the label")
counts = query.disagreement_by_tail(s, labels, predictions, fraction, names)
st.markdown(query.disagreement_summary(counts, fraction))
overall = float(np.mean(predictions != labels))
st.plotly_chart(plots.tail_disagreement_bars(counts, overall=overall), key="tail_disagreement")

st.subheader("Influence vs teacher confidence")
statistic = st.selectbox("Teacher statistic", list(STATISTICS), key="confidence_statistic", format_func=STATISTICS.get)
shown = plots.downsample(labels, plots.DISPLAY_LIMIT)
if len(shown) < len(s):
    st.caption(f"showing a class-stratified {len(shown):,} of {len(s):,} samples")
scatter = plots.confidence_scatter(result.teacher_scores[statistic][shown], scale.sample[shown], labels[shown],
                                   names, np.asarray(ws.train.ids, dtype=object)[shown],
                                   confidence_name=STATISTICS[statistic], axis_title=scale.sample_title,
                                   zero=None if scale_name == "percentile" else scale.zero)
st.plotly_chart(plots.apply_ticks(scatter, scale, "y"), key="confidence_scatter")

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
