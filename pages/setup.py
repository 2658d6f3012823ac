"""Setup: the dataset (class counts, sample images) and the teacher (auto, path, upload or train)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from ifbeta import plots
from ifbeta.data import datasets as data
from ifbeta.models import teachers
from ifbeta.models import zoo as models
from pages._studio import feedback, state, steps

state.page_guard(__file__)

st.title("Setup")
spec = state.current_spec()
description = data.DATASETS.get(st.session_state["dataset_choice"], ("",))[0]
st.caption(f"Dataset **{spec.dataset}** — {description}")
preparing = st.container()  # teacher training and feature extraction report here, in view

# ------------------------------------------------------------------------------------------ dataset
with feedback.engine_errors():
    full_train, test = steps.splits(spec)
counts = full_train.class_counts()
columns = st.columns(5)
columns[0].metric("Training samples", f"{len(full_train):,}")
columns[1].metric("Test samples", f"{len(test):,}")
columns[2].metric("Classes", full_train.num_classes)
columns[3].metric("Image", f"{full_train.channels}×{full_train.image_size}×{full_train.image_size}")
columns[4].metric("Pool", f"{min(spec.pool, len(full_train)):,}" if spec.pool else "whole split")
if full_train.skipped or test.skipped:
    st.warning(f"skipped {len(full_train.skipped) + len(test.skipped)} unreadable image(s)")
if data.hidden_warning((full_train, test)):
    st.warning(data.hidden_warning((full_train, test)), icon="🙈")

left, right = st.columns([2, 3])
left.plotly_chart(plots.class_counts_bar(full_train.class_names, counts), key="class_counts")
with right:
    st.markdown("**Sample images**")
    shown = full_train.class_names[:10]
    per_class = 8
    for c, name in enumerate(shown):
        members = np.flatnonzero(full_train.labels == c)[:per_class]
        images = [plots.thumbnail(full_train.images[i].numpy(), 48) for i in members]
        if images:
            st.image(images, caption=[f"{name}" if j == 0 else "" for j in range(len(images))], width=48, output_format="PNG")
    if len(full_train.class_names) > len(shown):
        st.caption(f"first {len(shown)} of {len(full_train.class_names)} classes")

# ------------------------------------------------------------------------------------------ teacher
st.subheader("Teacher")
message = st.session_state.pop("setup_message", None)
if message:
    st.success(message)
default_arch = teachers.default_arch(full_train)
architectures = list(models.ARCHITECTURES)
path_tab, upload_tab, train_tab = st.tabs(["Checkpoint path", "Upload", "Train a teacher"])

TRUST_WARNING = ("Loading a pickled model or a TorchScript archive runs code from the file: turn this on only "
                 "for files you trust. Safetensors and state_dict files never need it.")

with path_tab:
    path = st.text_input("Checkpoint file (.safetensors, or .pt/.pth)", key="checkpoint_path")
    arch = st.selectbox("Architecture", ["(recorded in the checkpoint)"] + architectures, key="checkpoint_arch")
    trust = st.checkbox("Trust this pickle", key="checkpoint_trust", help=TRUST_WARNING)
    if trust:
        st.warning(TRUST_WARNING, icon="⚠️")
    if st.button("Use this checkpoint", disabled=not path.strip()):
        chosen = "" if arch.startswith("(") else arch
        with feedback.engine_errors(stop=False):  # a refusal: one message, the rest of the page stays
            resolved = steps.check_checkpoint(path.strip(), full_train, arch=chosen or None, trust_pickle=trust)
            st.session_state["setup_message"] = f"teacher set to {path.strip()}"
            state.apply_later({"teacher": str(resolved), "teacher_arch": chosen, "trust_pickle": trust})

with upload_tab:
    upload = st.file_uploader(f"Teacher checkpoint (at most {steps.MAX_UPLOAD_MB} MB; checked, then stored under "
                              "cache/uploads)", type=[s.lstrip(".") for s in teachers.CHECKPOINT_SUFFIXES],
                              key="teacher_upload")
    upload_arch = st.selectbox("Architecture", ["(recorded in the checkpoint)"] + architectures, key="upload_arch")
    upload_trust = st.checkbox("Trust this pickle", key="upload_trust", help=TRUST_WARNING)
    if upload_trust:
        st.warning(TRUST_WARNING, icon="⚠️")
    if upload is not None and st.button("Use the uploaded checkpoint"):
        chosen = "" if upload_arch.startswith("(") else upload_arch
        with feedback.engine_errors(stop=False):  # nothing stored, nothing selected; the rest of the page stays
            saved = steps.save_upload(upload.name, upload.getvalue(), full_train, arch=chosen or None,
                                      trust_pickle=upload_trust)
            st.session_state["setup_message"] = f"uploaded teacher checked and stored as {saved.name}"
            state.apply_later({"teacher": str(saved), "teacher_arch": chosen, "trust_pickle": upload_trust})

with train_tab:
    st.caption("Trains on the whole training split with cross-entropy and stores the checkpoint under "
               "cache/teachers/trained. An interrupted run resumes where it stopped.")
    train_arch = st.selectbox("Architecture", architectures, index=architectures.index(default_arch), key="train_arch")
    default_epochs = teachers.teacher_config(full_train, train_arch, None, 0).epochs
    epochs = st.number_input("Epochs", min_value=1, max_value=500, value=default_epochs, key="train_epochs")
    if st.button("Train teacher", type="primary"):
        out = teachers.trained_teacher_path(full_train, train_arch, int(epochs), store=steps.store())
        if not out.is_file():
            with feedback.engine_errors(), feedback.progress(f"Training {train_arch}", epochs=int(epochs)) as bar:
                teachers.train_teacher(full_train, train_arch, out, epochs=int(epochs), test=test, on_step=bar)
        st.session_state["setup_message"] = f"trained teacher stored as {out.name}"
        state.apply_later({"teacher": str(out), "teacher_arch": train_arch, "trust_pickle": False})

# ------------------------------------------------------------------------------------ teacher list
listed = steps.teacher_entries(full_train)
if listed:
    st.markdown(f"**Teachers of {spec.dataset}** (✓ = the default, what `auto` uses; also `ifbeta teachers`)")
    st.dataframe(steps.teacher_table(listed), hide_index=True, key="teacher_list")
    names = [e.name for e in listed]
    chosen = st.selectbox("Default teacher", names, index=next(i for i, e in enumerate(listed) if e.default),
                          key="default_teacher")
    if st.button("Make default", disabled=listed[names.index(chosen)].default):
        steps.set_default_teacher(listed[names.index(chosen)])
        st.session_state["setup_message"] = f"default teacher of {spec.dataset} set to {chosen}"
        st.rerun()

# --------------------------------------------------------------------------------- current teacher
if spec.teacher == "auto" and steps.teacher_missing(spec):
    st.info(f"No default teacher for {spec.dataset} yet: train one above or choose a checkpoint.")
    st.stop()
ws = steps.workspace(spec, container=preparing)
info = ws.teacher.info
columns = st.columns(4)
columns[0].metric("Architecture", info.arch)
accuracy = steps.teacher_test_accuracy(info.sha256, ws.test.fingerprint, ws)
columns[1].metric("Teacher test top-1", f"{accuracy:.1%}" if accuracy is not None else "n/a")
columns[2].metric("Teacher top-1 on the pool", f"{ws.features.teacher_accuracy:.1%}")
columns[3].metric("Feature dimension", ws.features.features.shape[1])
st.caption(f"Checkpoint `{info.path}` · sha256 `{info.sha256[:16]}…` · features cached as `{ws.features.key}`")
st.success("Ready: go on to **Influence**.")
st.page_link("pages/influence.py", label="Influence", icon="📊")
