"""Policy: learn the Beta policy's (alpha, beta) by bilevel optimisation, watch it move, and play with it."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from ifbeta import plots
from ifbeta.evaluation import transfer
from ifbeta.policy import axes, estimators
from ifbeta.policy.beta import STARTS
from ifbeta.progress import describe as describe_progress
from pages._studio import state, steps, widgets

state.page_guard(__file__)

RATIOS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
VERDICT = ("on CIFAR-10 the learned policy stays within noise of random pruning at every ratio; run the transfer "
           "check below before trusting one on your data.")
EVIDENCE = (
    "- **benchmarks/results/cifar10-cpu.md**: the learned policy stayed within noise of random pruning at every "
    "ratio, and no baseline beat random beyond noise either.\n"
    "- J ranks selection rules much as real students do: it rejects the hard-sample rules that lose 4-6 points "
    "(Spearman about -0.8 over rules at r = 0.7 and 0.9), so the loop never moves towards them.\n"
    "- **benchmarks/results/proxy-transfer.md**: near uniform J is blind. The teacher's logits are a linear function "
    "of the features the proxy is fitted on, so no policy on the grid lowers J by more than 0.4% from uniform, "
    "and the small differences it sees do not predict students.")

st.title("Policy")
st.caption("Samples are ranked by influence (u near 1 = most helpful) and kept with probability shaped by "
           "Beta(alpha, beta); the bilevel loop moves (alpha, beta) to lower the proxy's validation KD loss J. "
           "(1, 1) is uniform, i.e. random pruning.")
st.markdown(f"**Verdict:** {VERDICT}")
with st.expander("The evidence: benchmarks/results/cifar10-cpu.md, benchmarks/results/proxy-transfer.md"):
    st.markdown(EVIDENCE)
ws = steps.workspace()
names = ws.train.class_names

st.multiselect("Pruning ratios (fraction removed)", RATIOS, key="policy_ratios")
with st.expander("Optimiser settings"):
    columns = st.columns(4)
    columns[0].selectbox("Estimator", list(estimators.ESTIMATORS), key="policy_estimator",
                         help="implicit: exact hypergradient; reinforce: sampled subsets; grid: best of a log grid")
    columns[1].selectbox("Policy axis", list(axes.AXES), key="policy_axis")
    columns[2].number_input("Outer steps", min_value=1, max_value=500, key="policy_steps")
    columns[3].number_input("Learning rate", min_value=0.001, max_value=2.0, step=0.05, format="%.3f",
                            key="policy_learning_rate")
    columns = st.columns(4)
    columns[0].number_input("Shrinkage c (0 = J alone)", min_value=0.0, max_value=100.0, step=0.5,
                            key="policy_shrinkage", help="pulls the policy towards uniform, more at high ratios")
    columns[1].checkbox("Stratify by class", key="policy_stratify")
    columns[2].number_input("Seed", min_value=0, step=1, key="policy_seed")
    columns[3].selectbox("Start and prior", list(STARTS), key="policy_start",
                         help="uniform: start at and shrink towards random pruning; ratio-adaptive: towards "
                         "keeping hard samples at low ratios and easy ones at high ratios")
    widgets.proxy_family(role="the proxy whose validation KD loss J the loop lowers")
ratios = sorted(float(r) for r in st.session_state["policy_ratios"])
if not ratios:
    st.info("Choose at least one pruning ratio.")
    st.stop()

learn = st.button("Learn the policy", type="primary")
results = None
if learn:
    outer_steps = state.policy_config().steps
    live: dict[float, list[dict]] = {r: [] for r in ratios}
    bar = st.progress(0.0, text="Learning the policy: starting")  # directly under the button, then the live charts
    slots = st.columns(2)
    path_slot, curve_slot = slots[0].empty(), slots[1].empty()

    def on_step(step: int, info: dict) -> None:
        if not ("alpha" in info and info.get("ratio") in live):  # features, proxy fits: the engine's own words
            bar.progress(0.0, text=f"Learning the policy: {describe_progress(step, info)[1]}")
            return
        ratio = info["ratio"]
        live[ratio].append(info)
        count = sum(len(t) for t in live.values())
        change = plots.relative_change([info["J"]], plots.j_at_uniform(live[ratio]))[0]
        bar.progress(min(count / (outer_steps * len(ratios)), 1.0),
                     text=f"Learning the policy at r={ratio:g} (ratio {ratios.index(ratio) + 1} of {len(ratios)}): "
                          f"step {step + 1} of {outer_steps}, J {change:+.3f}% vs uniform")
        path_slot.plotly_chart(plots.policy_path(live, title="(alpha, beta) path, live"), key=f"live_path_{count}")
        curve_slot.plotly_chart(plots.objective_curves(live, title="J vs uniform, live"), key=f"live_curves_{count}")

    results = steps.policies(ws, ratios, on_step=on_step)
    bar.empty()
    path_slot.empty()
    curve_slot.empty()
else:  # policies learned before (in any session, or with the CLI) show without a click
    results = steps.policies(ws, ratios, compute=False)

if results is None:
    st.info("Press **Learn the policy**. Each outer step refits the linear proxy; results are stored, so "
            "this happens once per setting.")
else:
    traces = {r.ratio: r.trace for r in results}
    table = pd.DataFrame([{"ratio": r.ratio, "kept k": r.k, "alpha": r.alpha, "beta": r.beta, "steps": len(r.trace),
                           "J vs uniform (%)": plots.relative_change([r.trace[-1]["J"]], plots.j_at_uniform(r.trace))[0],
                           "best J vs uniform (%)": plots.relative_change([min(t["J"] for t in r.trace)],
                                                                          plots.j_at_uniform(r.trace))[0],
                           "converged": r.converged, "shrinkage c": r.c} for r in results])
    st.dataframe(table, hide_index=True, column_config={
        "J vs uniform (%)": st.column_config.NumberColumn(format="%+.3f%%", help="J / J(1, 1) - 1 at the last step; "
                                                          "< 0 = lower validation KD loss than random pruning"),
        "best J vs uniform (%)": st.column_config.NumberColumn(format="%+.3f%%"),
        "alpha": st.column_config.NumberColumn(format="%.3g"), "beta": st.column_config.NumberColumn(format="%.3g")})

    st.subheader("Path over the J landscape")
    st.caption("A landscape belongs to one ratio: choose the ratio, and its path is drawn over its own landscape.")
    left, right = st.columns([1, 3])
    with left:
        shown_ratio = st.selectbox("Ratio", ratios, key="landscape_ratio")
        grid = st.radio("Grid", [5, 7, 9], horizontal=True, key="landscape_grid", help="grid x grid proxy fits")
        learned_grid = next((r.landscape for r in results if r.ratio == shown_ratio and r.landscape), None)
        landscape = learned_grid or steps.landscape(ws, shown_ratio, grid, compute=False)
        if landscape is None and st.button(f"Compute the landscape ({grid * grid} fits)"):
            landscape = steps.landscape(ws, shown_ratio, grid)
    right.plotly_chart(plots.policy_path({shown_ratio: traces[shown_ratio]}, landscape=landscape,
                                         title=f"(alpha, beta) path at r={shown_ratio:g}"), key="policy_path")
    st.plotly_chart(plots.objective_curves(traces), key="objective_curves")

    st.subheader("Per ratio")
    for start in range(0, len(results), 3):
        columns = st.columns(3)
        for column, result in zip(columns, results[start:start + 3]):
            with column:
                st.markdown(f"**r = {result.ratio:g}**: keep {result.k:,}, alpha {result.alpha:.3g}, "
                            f"beta {result.beta:.3g}")
                st.plotly_chart(plots.beta_pdf_animation(result.trace, title="Beta pdf"),
                                key=f"pdf_animation_{result.ratio}")
                st.plotly_chart(plots.class_histogram(result.trace[-1]["class_histogram"], names,
                                                      totals=ws.train.class_counts()),
                                key=f"class_histogram_{result.ratio}")

# ---------------------------------------------------------------------------------------- teaching
st.subheader("Teaching mode")
st.caption("Move alpha and beta to see how the Beta pdf turns ranks into kept samples.")
config = state.policy_config()
alpha, beta, ratio = widgets.policy_shape()
shown_policy = steps.preview(ws, alpha=alpha, beta=beta, ratio=ratio)
values, u, k, kept = steps.axis_values(ws, config.axis), shown_policy.u, shown_policy.k, shown_policy.kept
labels = ws.train.labels
columns = st.columns(3)
columns[0].metric("Kept", f"{k:,} of {len(u):,}")
columns[1].metric("Mean rank u of kept", f"{u[kept].mean():.3f}", help="0.5 = like random")
columns[2].metric(f"Mean {config.axis} value of kept vs pruned", f"{values[kept].mean():+.3g}",
                  delta=f"{values[kept].mean() - values[~kept].mean():+.3g}")
shown = plots.downsample(labels, plots.DISPLAY_LIMIT)
if len(shown) < len(u):
    st.caption(f"Lower panel: a class-stratified {len(shown):,} of {len(u):,} samples (the histogram counts all).")
st.plotly_chart(plots.teaching_figure(u, shown_policy.probabilities, kept, alpha, beta, ids=ws.train.ids, shown=shown),
                key="teaching_figure")

# ---------------------------------------------------------------------------------------- transfer
st.subheader("Transfer check")
st.caption("Does J predict real students here? Trains short KD students at policies along the trajectory and "
           "at uniform (paired seeds) and reports agreement = -Spearman(J, accuracy) with a seed-bootstrap 95% "
           "interval; inconclusive when the interval holds 0 or with fewer than "
           f"{transfer.MIN_SEEDS} seeds. Costly: "
           "policies x seeds student runs; interrupted checks resume.")
columns = st.columns(4)
transfer_ratio = columns[0].selectbox("Ratio", RATIOS, key="transfer_ratio")
transfer_policies = columns[1].number_input("Policies", min_value=2, max_value=10, key="transfer_policies")
default_epochs = transfer.default_epochs(ws.train.name)
transfer_epochs = columns[2].number_input("Student epochs", min_value=1, max_value=200, value=default_epochs,
                                          key="transfer_epochs")
transfer_seeds = columns[3].number_input("Seeds", min_value=1, max_value=32, key="transfer_seeds")
arguments = (transfer_ratio, int(transfer_policies), int(transfer_epochs), int(transfer_seeds))
report = steps.transfer(ws, *arguments, compute=False)
if report is None and st.button("Run the transfer check"):
    report = steps.transfer(ws, *arguments)
if report is not None:
    verdict = {"yes": st.success, "weak": st.warning, "no": st.error}.get(report.get("trust"), st.info)
    verdict(report.get("verdict", ""))
    columns = st.columns(3)
    agreement, interval = report.get("agreement"), report.get("agreement_interval")
    columns[0].metric("Agreement (-Spearman)", "n/a" if agreement is None else f"{agreement:+.2f}",
                      help=None if interval is None else f"95% interval [{interval[0]:+.2f}, {interval[1]:+.2f}]")
    difference = report.get("learned_minus_uniform_interval")
    columns[1].metric("Learned - uniform (points)", f"{100 * report['learned_minus_uniform']:+.1f}",
                      delta=report.get("learned_vs_uniform"), delta_color="off",
                      help=None if difference is None else
                      f"95% interval [{100 * difference[0]:+.1f}, {100 * difference[1]:+.1f}]")
    columns[2].metric("Student", f"{report.get('student')} × {report.get('epochs')} epochs")
    st.dataframe(pd.DataFrame([{k: p[k] for k in ("label", "alpha", "beta", "J", "mean_accuracy", "std_accuracy")}
                               for p in report["policies"]]), hide_index=True)
