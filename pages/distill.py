"""Distill: knowledge distillation on a subset (and on random and full data) as background runs."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from ifbeta import plots
from ifbeta.distill import student as distill
from ifbeta.distill import summary
from ifbeta.models import zoo as models
from pages._studio import feedback, runs, state, steps

state.page_guard(__file__)

TABLE_COLUMNS = ["label", "test_top1", "status", "test_top5", "dataset", "method", "ratio", "seed", "student", "budget",
                 "epochs", "seconds", "name", "out"]

st.title("Distill")
st.caption("Each run is a separate `ifbeta distill` process: it keeps going when you leave the page or reload, "
           "and its results are listed below together with runs started from the command line.")
ws = steps.workspace()
spec = state.current_spec()

entries = steps.subsets(ws)
broken = [e for e in entries if e.error]
if broken:
    st.warning(f"{len(broken)} subset folder(s) in the store cannot be used: "
               + "; ".join(f"{e.name}: {e.error}" for e in broken[:3]), icon="⚠️")
ratios = {str(e.directory): e.ratio for e in entries if not e.error}
current = steps.subset_directory(ws, st.session_state["subset_method"], st.session_state["subset_ratio"],
                                 int(st.session_state["subset_seed"]))
choices = ["full"] + list(ratios)
default = choices.index(str(current)) if str(current) in choices else (1 if len(choices) > 1 else 0)
if len(choices) == 1:
    st.info("No subset made for this pool yet: make one on the Subset page (full-data runs work already).")

default_student = models.default_architectures(ws.train.name, ws.train.image_size)[1]
architectures = list(models.ARCHITECTURES)
with st.form("launch_form"):
    source = st.selectbox("Train on", choices, index=default, key="distill_subset",
                          format_func=lambda c: "the full pool" if c == "full" else Path(c).name)
    columns = st.columns(4)
    student = columns[0].selectbox("Student", architectures, index=architectures.index(default_student),
                                   key="distill_student")
    epochs = columns[1].number_input("Epochs", min_value=1, max_value=1000, key="distill_epochs",
                                     value=distill.STUDENT_EPOCHS.get(ws.train.name, distill.DEFAULT_STUDENT_EPOCHS))
    seed_count = columns[2].number_input("Seeds", min_value=1, max_value=5, step=1, key="distill_seeds",
                                         help="every arm runs once per seed; seed s of the random arm pairs with "
                                              "seed s of the subset (same student initialisation)")
    first_seed = columns[3].number_input("First seed", min_value=0, step=1, key="distill_seed")
    columns = st.columns(2)
    with_random = columns[0].checkbox("Also a random subset of the same size", key="distill_random")
    with_full = columns[1].checkbox("Also the full pool", key="distill_full")
    launch = st.form_submit_button("Launch", type="primary")

if launch:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    seeds = range(int(first_seed), int(first_seed) + int(seed_count))
    plan = []  # (subset directory or 'full', name part, seed): subset, random and full arms for each seed
    with feedback.engine_errors():
        for seed in seeds:
            plan.append((source, Path(source).name if source != "full" else "full", seed))
            if source != "full" and with_random:
                ratio = ratios[source]
                random_dir = steps.write_subset(ws, steps.choose(ws, "random", ratio, seed), "random", ratio, seed)
                plan.append((str(random_dir), random_dir.name, seed))
            if with_full and source != "full":
                plan.append(("full", "full", seed))
        for subset, part, seed in plan:
            runs.launch_run(spec, subset=subset, student=student, epochs=int(epochs), seed=seed,
                            name=f"{stamp}-{part}-{student}-e{int(epochs)}-s{seed}")
    st.rerun()


def live_panel() -> None:
    """Running app-launched runs: progress, live curves, cancel. Reruns the page when one ends."""
    records = runs.app_runs()
    running = runs.labelled([r for r in records if r["status"] == "running"])
    names = [r["name"] for r in running.values()]
    if st.session_state.get("_running_runs", names) != names:
        st.session_state["_running_runs"] = names
        st.rerun()
    st.session_state["_running_runs"] = names
    if not running:
        st.caption("No run in progress.")
    histories = {}
    for label, record in running.items():
        progress = record.get("progress") or {}
        epoch, total = progress.get("epoch", 0), progress.get("epochs") or 1
        columns = st.columns([4, 1])
        columns[0].progress(min(epoch / total, 1.0), text=f"{label}: epoch {epoch}/{total}")
        if columns[1].button("Cancel", key=f"cancel_{record['name']}"):
            runs.cancel_run(record)
            st.rerun()
        histories[label] = progress.get("history", [])
    if any(histories.values()):
        st.plotly_chart(plots.training_curves(histories), key="live_curves")
    for label, record in list(runs.labelled([r for r in records if r["status"] == "failed"]).items())[:3]:
        with st.expander(f"{label} failed ({record['name']})"):
            st.code(record.get("log_tail", ""), language=None)


st.subheader("Runs in progress")
active = any(r["status"] == "running" for r in runs.app_runs())
st.fragment(run_every=2.0 if active else None)(live_panel)()

st.subheader("Results")
known = runs.all_runs()
only_here = st.checkbox("Only this dataset", key="distill_only_dataset")
if only_here:
    known = [r for r in known if r.get("dataset") == ws.train.name]
if known:
    table = pd.DataFrame([{"label": summary.label(r), **r} for r in known])
    table = table[[c for c in TABLE_COLUMNS if c in table.columns]]
    st.dataframe(table, hide_index=True, column_config={
        "label": st.column_config.TextColumn("run", width="medium", help="arm (method, ratio) and student seed"),
        "test_top1": st.column_config.NumberColumn("test top-1", format="%.4f", width="small"),
        "status": st.column_config.TextColumn("status", width="small"),
        "test_top5": st.column_config.NumberColumn("test top-5", format="%.4f", width="small"),
        "seconds": st.column_config.NumberColumn("seconds", format="%.0f", width="small"),
        "name": st.column_config.TextColumn("run folder", width="medium")})

    st.subheader("Subset vs random vs full")
    finished = [r for r in known if r.get("status") == "finished"]
    contexts = list(dict.fromkeys(summary.context(r) for r in finished))  # newest first
    if len(contexts) > 1:
        shown = st.selectbox("Compare the runs of", contexts, index=0, key="distill_context",
                             format_func=lambda c: f"{c[0]}, student {c[1]}, {c[2]} epochs ({c[3]} budget)")
    else:
        shown = contexts[0] if contexts else None
    result = summary.summarise([r for r in finished if summary.context(r) == shown])
    if not result.arms:
        st.caption("No finished run to summarise yet.")
    else:
        for pair in result.pairs:
            interval = (f", 95% t-interval {100 * pair.low:+.2f} to {100 * pair.high:+.2f}" if pair.low is not None
                        else " (one pair: no interval)")
            st.markdown(f"**{pair.arm} − {pair.baseline}**: {100 * pair.mean:+.2f} points over {pair.n} paired "
                        f"seed(s), std {100 * pair.std:.2f}{interval}")
        st.plotly_chart(plots.arm_summary(result.arms, result.pairs), key="arm_summary")
        st.dataframe(pd.DataFrame([{"arm": a.arm, "seeds": a.n, "mean top-1 (%)": 100 * a.mean,
                                    "std (points)": 100 * a.std} for a in result.arms]), hide_index=True,
                     column_config={"mean top-1 (%)": st.column_config.NumberColumn(format="%.2f"),
                                    "std (points)": st.column_config.NumberColumn(format="%.2f")})
    histories = {label: r["metrics"].get("history") or [] for label, r in
                 runs.labelled([r for r in runs.app_runs() if r["status"] == "finished"]).items()}
    if any(histories.values()):
        st.plotly_chart(plots.training_curves(histories, title="Finished app runs: test accuracy per epoch"),
                        key="finished_curves")
else:
    st.caption("No finished runs yet.")
