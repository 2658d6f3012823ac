"""Progress where the user looks: the bar names the stage and its count, and sits where the step started."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the app's glue (pages/_studio) imports from the project root
    sys.path.insert(0, str(ROOT))


def _running_step():
    """A page that starts a step under a button and stops half way (as a long step looks mid-run)."""
    import streamlit as st

    from pages._studio import feedback

    st.button("Train")
    notice = st.container()
    st.markdown("below")
    bar = feedback.Progress("Training resnet8", epochs=4, container=notice)
    bar(1, {"event": "batch", "epoch": 1, "batch": 4, "batches": 10, "loss": 0.5})


def test_a_running_step_shows_stage_count_and_fraction_in_its_place():
    at = AppTest.from_function(_running_step).run()
    assert not at.exception
    (bar,) = at.get("progress")
    assert bar.proto.text.startswith("Training resnet8: epoch 2/4, batch 5/10, loss 0.500 · ")
    assert bar.proto.value == int(100 * (1 + 5 / 10) / 4)  # epoch 1.5 of 4
    button, notice, below = (at.main.children[i] for i in range(3))  # the bar is in the container under the button
    assert button.type == "button" and below.type == "markdown"
    assert [node.type for node in notice.children.values()] == ["progress"]


def _finished_step():
    from pages._studio import feedback

    with feedback.progress("Influence scores") as bar:
        bar(0, {"stage": "fold", "fold": 0, "folds": 2})


def test_a_finished_step_leaves_no_bar():
    at = AppTest.from_function(_finished_step).run()
    assert not at.exception and not at.get("progress")
