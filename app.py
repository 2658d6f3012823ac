"""IF-Beta Studio: influence-guided, learnable data pruning for knowledge distillation.

Entry point: ``streamlit run app.py``. Routes over the pages in pages/ and draws the shared
sidebar (dataset, teacher, pool size). No math here: the pages call ``ifbeta`` through the glue in
``pages/_studio`` and draw ``ifbeta.plots`` figures.
"""
from __future__ import annotations

import streamlit as st

from ifbeta.data import datasets as data
from pages._studio import state, steps

st.set_page_config(page_title="IF-Beta Studio", page_icon="🅱️", layout="wide")


@st.cache_resource(show_spinner=False)
def _runtime() -> bool:
    """Process-wide settings, once: single-threaded BLAS for the proxy's small solves (see ifbeta.threads)."""
    from ifbeta.threads import limit_blas_threads

    limit_blas_threads()
    return True


def _teacher_label(value: str) -> str:
    return "auto (the dataset's default teacher)" if value == "auto" else steps.teacher_label(value)


def sidebar() -> None:
    bar = st.sidebar
    bar.markdown("### IF-Beta Studio")
    names = [name for name in data.DATASETS if name != "imagefolder"] + ["imagefolder"]
    bar.selectbox("Dataset", names, key="dataset_choice",
                  format_func=lambda n: "ImageFolder path ..." if n == "imagefolder" else n,
                  help="digits works offline in seconds; torchvision sets need their files on disk offline")
    if st.session_state["dataset_choice"] == "imagefolder":
        bar.text_input("ImageFolder root (holds train/ and test/)", key="imagefolder_path")
        bar.checkbox("Skip unreadable images", key="skip_corrupt",
                     help="leave out images that cannot be decoded (the Setup page counts them)")
    options = ["auto"] + steps.teacher_checkpoints()
    if st.session_state["teacher"] not in options:
        options.append(st.session_state["teacher"])
    bar.selectbox("Teacher", options, key="teacher", format_func=_teacher_label,
                  help="upload, point to or train a teacher on the Setup page")
    bar.number_input("Pool size (0 = whole training split)", min_value=0, step=1000, key="pool",
                     help="a fixed class-stratified subset of the training split to score and prune")
    bar.caption(f"Artefact store: `{steps.store().root}`")


_runtime()
state.init_state()
PAGES = [
    st.Page("pages/setup.py", title="Setup", icon="🛠️", default=True),
    st.Page("pages/influence.py", title="Influence", icon="📊"),
    st.Page("pages/feature_map.py", title="Feature map", icon="🗺️"),
    st.Page("pages/policy.py", title="Policy", icon="🎯"),
    st.Page("pages/subset.py", title="Subset", icon="✂️"),
    st.Page("pages/distill.py", title="Distill", icon="🧪"),
]
navigation = st.navigation(PAGES)
state.resume_page()
sidebar()
state.route_mark()
navigation.run()
