"""Engine errors as messages on the page (never a traceback), and progress bars for long steps."""
from __future__ import annotations

import contextlib
import time

import streamlit as st

from ifbeta.errors import in_app
from ifbeta.progress import describe as describe_progress
from ifbeta.store import StoreError

ENGINE_ERRORS = (ValueError, StoreError, OSError)  # DatasetError, ModelError, SubsetError, RunError are ValueErrors


def error_message(error: BaseException) -> str:
    """The first line of the error's text in the app's words (``errors.in_app``: a fix names the
    widget to use, never a command-line flag); engine errors carry an actionable one-liner."""
    text = in_app(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def engine_errors(*, stop: bool = True):
    """Show any engine error (ValueError family, StoreError, OSError) as st.error instead of a
    traceback; then stop the page (``stop``) or carry on below it."""
    try:
        yield
    except ENGINE_ERRORS as error:
        st.error(f"{error_message(error)}", icon="🚫")
        if stop:
            st.stop()


class Progress:
    """An ``on_step(step, info)`` callback drawing one st.progress bar, in ``container`` (default: the
    place in the page where the step was started, i.e. next to its button or notice). The text names
    the stage, its count (``progress.describe``) and the seconds elapsed. The bar appears at the first
    event, so a step served from the artefact store shows nothing."""

    def __init__(self, label: str, *, total: int | None = None, epochs: int | None = None, container=None):
        self.label, self.total, self.epochs = label, total, epochs
        self.container, self.bar, self.fraction = container, None, 0.0
        self.started = time.perf_counter()

    def __call__(self, step: int, info: dict) -> None:
        fraction, text = describe_progress(step, info, total=self.total, epochs=self.epochs)
        if fraction is not None:
            self.fraction = float(min(max(fraction, 0.0), 1.0))
        if self.bar is None:
            self.bar = (self.container or st).progress(0.0, text=self.label)
        elapsed = time.perf_counter() - self.started
        self.bar.progress(self.fraction, text=f"{self.label}: {text} · {elapsed:.0f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.empty()
            self.bar = None


@contextlib.contextmanager
def progress(label: str, **kwargs):
    """``with progress("Influence scores") as bar: step(on_step=bar)``; the bar is removed after."""
    bar = Progress(label, **kwargs)
    try:
        yield bar
    finally:
        bar.close()
