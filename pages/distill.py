"""Distill: knowledge distillation on a subset (and on random and full data) as background runs."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from ifbeta import plots
from ifbeta.distill import student as distill
from ifbeta.models import zoo as models
from pages._studio import feedback, runs, state, steps

state.page_guard(__file__)

TABLE_COLUMNS = ["name", "dataset", "method", "ratio", "seed", "student", "budget", "epochs", "test_top1",
                 "test_top5", "seconds", "status", "out"]

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
    columns = st.columns(3)
    student = columns[0].selectbox("Student", architectures, index=architectures.index(default_student),
                                   key="distill_student")
    epochs = columns[1].number_input("Epochs", min_value=1, max_value=1000, key="distill_epochs",
                                     value=distill.STUDENT_EPOCHS.get(ws.train.name, distill.DEFAULT_STUDENT_EPOCHS))
    seed = columns[2].number_input("Seed", min_value=0, step=1, key="distill_seed")
    columns = st.columns(2)
    with_random = columns[0].checkbox("Also a random subset of the same size", key="distill_random")
    with_full = columns[1].checkbox("Also the full pool", key="distill_full")
    launch = st.form_submit_button("Launch", type="primary")

if launch:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    plan = [(source, Path(source).name if source != "full" else "full")]
    with feedback.engine_errors():
        if source != "full" and with_random:
            ratio = ratios[source]
            chosen = steps.choose(ws, "random", ratio, int(seed))
            random_dir = steps.write_subset(ws, chosen, "random", ratio, int(seed))
            plan.append((str(random_dir), random_dir.name))
        if with_full and source != "full":
            plan.append(("full", "full"))
        for subset, label in plan:
            runs.launch_run(spec, subset=subset, student=student, epochs=int(epochs), seed=int(seed),
                                    name=f"{stamp}-{label}-{student}-e{int(epochs)}-s{int(seed)}")
    st.rerun()


def live_panel() -> None:
    """Running app-launched runs: progress, live curves, cancel. Reruns the page when one ends."""
    records = runs.app_runs()
    running = [r for r in records if r["status"] == "running"]
    names = [r["name"] for r in running]
    if st.session_state.get("_running_runs", names) != names:
        st.session_state["_running_runs"] = names
        st.rerun()
    st.session_state["_running_runs"] = names
    if not running:
        st.caption("No run in progress.")
    histories = {}
    for record in running:
        state = record.get("progress") or {}
        epoch, total = state.get("epoch", 0), state.get("epochs") or 1
        columns = st.columns([4, 1])
        columns[0].progress(min(epoch / total, 1.0), text=f"{record['name']}: epoch {epoch}/{total}")
        if columns[1].button("Cancel", key=f"cancel_{record['name']}"):
            runs.cancel_run(record)
            st.rerun()
        histories[record["name"]] = state.get("history", [])
    if any(histories.values()):
        st.plotly_chart(plots.training_curves(histories), key="live_curves")
    for record in [r for r in records if r["status"] == "failed"][:3]:
        with st.expander(f"{record['name']} failed"):
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
    table = pd.DataFrame(known)
    table = table[[c for c in TABLE_COLUMNS if c in table.columns]]
    st.dataframe(table, hide_index=True, column_config={
        "test_top1": st.column_config.NumberColumn("test top-1", format="%.4f"),
        "test_top5": st.column_config.NumberColumn("test top-5", format="%.4f"),
        "seconds": st.column_config.NumberColumn("seconds", format="%.0f")})
    finished = {r["name"]: r["metrics"].get("history") or [] for r in runs.app_runs()
                if r["status"] == "finished"}
    if any(finished.values()):
        st.plotly_chart(plots.training_curves(finished, title="Finished app runs: test accuracy per epoch"),
                        key="finished_curves")
else:
    st.caption("No finished runs yet.")
