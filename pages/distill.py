"""Distill: knowledge distillation on a subset (and on random and full data) as background runs."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import streamlit as st

import studio_cache
from ifbeta import plots
from ifbeta.distill import student as distill
from ifbeta.models import zoo as models

studio_cache.page_guard(__file__)

TABLE_COLUMNS = ["name", "dataset", "method", "ratio", "seed", "student", "budget", "epochs", "test_top1",
                 "test_top5", "seconds", "status", "out"]

st.title("Distill")
st.caption("Each run is a separate `ifbeta distill` process: it keeps going when you leave the page or reload, "
           "and its results are listed below together with runs started from the command line.")
ws = studio_cache.workspace()
spec = studio_cache.current_spec()


def subset_directories() -> list[Path]:
    """Subset folders in the store made for this pool (same fingerprint), newest first."""
    folder = studio_cache.store().root / "subsets"
    found = []
    for manifest in folder.glob("*/manifest.json") if folder.is_dir() else []:
        try:
            document = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if document.get("fingerprint") == ws.train.fingerprint:
            found.append((manifest.stat().st_mtime, manifest.parent))
    return [path for _, path in sorted(found, reverse=True)]


directories = subset_directories()
current = studio_cache.subset_directory(ws, st.session_state["subset_method"], st.session_state["subset_ratio"],
                                        int(st.session_state["subset_seed"]))
choices = ["full"] + [str(d) for d in directories]
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
    with_random = columns[0].checkbox("Also a random subset of the same size", value=True, key="distill_random")
    with_full = columns[1].checkbox("Also the full pool", value=True, key="distill_full")
    launch = st.form_submit_button("Launch", type="primary")

if launch:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    plan = [(source, Path(source).name if source != "full" else "full")]
    with studio_cache.engine_errors():
        if source != "full" and with_random:
            manifest = json.loads((Path(source) / "manifest.json").read_text())
            ratio = float(manifest["ratio"])
            chosen = studio_cache.choose(ws, "random", ratio, int(seed))
            random_dir = studio_cache.write_subset(ws, chosen, "random", ratio, int(seed))
            plan.append((str(random_dir), random_dir.name))
        if with_full and source != "full":
            plan.append(("full", "full"))
        for subset, label in plan:
            studio_cache.launch_run(spec, subset=subset, student=student, epochs=int(epochs), seed=int(seed),
                                    name=f"{stamp}-{label}-{student}-e{int(epochs)}-s{int(seed)}")
    st.rerun()


def live_panel() -> None:
    """Running app-launched runs: progress, live curves, cancel. Reruns the page when one ends."""
    records = studio_cache.app_runs()
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
            studio_cache.cancel_run(record)
            st.rerun()
        histories[record["name"]] = state.get("history", [])
    if any(histories.values()):
        st.plotly_chart(plots.training_curves(histories), key="live_curves")
    for record in [r for r in records if r["status"] == "failed"][:3]:
        with st.expander(f"{record['name']} failed"):
            st.code(record.get("log_tail", ""), language=None)


st.subheader("Runs in progress")
active = any(r["status"] == "running" for r in studio_cache.app_runs())
st.fragment(run_every=2.0 if active else None)(live_panel)()

st.subheader("Results")
runs = studio_cache.all_runs()
only_here = st.checkbox("Only this dataset", value=True, key="distill_only_dataset")
if only_here:
    runs = [r for r in runs if r.get("dataset") == ws.train.name]
if runs:
    table = pd.DataFrame(runs)
    table = table[[c for c in TABLE_COLUMNS if c in table.columns]]
    st.dataframe(table, hide_index=True, column_config={
        "test_top1": st.column_config.NumberColumn("test top-1", format="%.4f"),
        "test_top5": st.column_config.NumberColumn("test top-5", format="%.4f"),
        "seconds": st.column_config.NumberColumn("seconds", format="%.0f")})
    finished = {r["name"]: r["metrics"].get("history") or [] for r in studio_cache.app_runs()
                if r["status"] == "finished"}
    if any(finished.values()):
        st.plotly_chart(plots.training_curves(finished, title="Finished app runs: test accuracy per epoch"),
                        key="finished_curves")
else:
    st.caption("No finished runs yet.")
