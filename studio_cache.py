"""Streamlit glue of IF-Beta Studio: the st.cache_* wrappers, progress bars, error display and galleries.

Everything computed goes through ``ifbeta.pipeline`` and the artefact store, so a reload or a server
restart never recomputes; the st caches here only keep loaded objects in memory (bounded by
``max_entries``). Long steps run OUTSIDE any st cache with an ``on_step`` progress bar (Streamlit
replays elements drawn inside cached functions, which breaks for a bar created outside), then the
cached loader picks up the result. session_state holds selections and keys, never arrays.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from ifbeta import pipeline, plots
from ifbeta.config import InfluenceConfig, PolicyConfig
from ifbeta.distill import runs
from ifbeta.evaluation import diagnostics as reports
from ifbeta.models import teachers
from ifbeta.policy import axes
from ifbeta.progress import describe as describe_progress
from ifbeta.store import Store, StoreError

PROJECT_ROOT = Path(__file__).resolve().parent
ENGINE_ERRORS = (ValueError, StoreError, OSError)  # DatasetError, ModelError, SubsetError, RunError are ValueErrors
MAX_UPLOAD_MB = 200
CHECKPOINT_SUFFIXES = teachers.CHECKPOINT_SUFFIXES
AUTO_TRAIN = ("digits",)  # datasets whose default teacher trains on first use (seconds on a CPU)

DEFAULTS = {  # session_state key -> default; persisted across pages by app.py
    "dataset_choice": "digits", "imagefolder_path": "", "teacher": "auto", "teacher_arch": "",
    "trust_pickle": False, "pool": 0,
    "influence_solver": "direct", "influence_folds": 2,
    "policy_ratios": [0.5], "policy_estimator": "implicit", "policy_axis": "influence", "policy_steps": 40,
    "policy_learning_rate": 0.1, "policy_shrinkage": 1.0, "policy_stratify": True, "policy_seed": 0,
    "subset_method": "ifbeta", "subset_ratio": 0.5, "subset_seed": 0,
    "teach_alpha": 2.0, "teach_beta": 1.0,
}


def init_state() -> None:
    """Set defaults once, apply values a page asked for (``apply_later``), and keep every known key
    alive across page changes (widget keys of a page that is not shown would otherwise be dropped)."""
    st.session_state.update(st.session_state.pop("_pending", None) or {})
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value
        else:
            st.session_state[key] = st.session_state[key]


def route_mark() -> None:
    """Called by app.py on every run, before the page: marks that st.navigation routed this run."""
    st.session_state["_routed"] = True


def page_guard(page_file: str) -> None:
    """First line of every page: ``studio_cache.page_guard(__file__)``.

    Streamlit still knows the legacy pages/ folder routing: when the first request to a fresh server
    is a page URL, it executes the page file alone (no app.py: no sidebar, no state, the legacy menu),
    and keeps doing so until some run calls st.navigation. Hand over to app.py, which calls it and
    then comes back to this page (``resume_page``)."""
    if not st.session_state.pop("_routed", False):
        st.session_state["_wanted_page"] = f"pages/{Path(page_file).name}"
        st.switch_page("app.py")


def resume_page() -> None:
    """Called by app.py after st.navigation: return to the page a legacy-routed run asked for."""
    wanted = st.session_state.pop("_wanted_page", None)
    if wanted:
        st.switch_page(wanted)


def apply_later(values: dict) -> None:
    """Set widget-backed keys (e.g. the sidebar's teacher) at the start of the next run, then rerun."""
    st.session_state["_pending"] = {**st.session_state.get("_pending", {}), **values}
    st.rerun()


# ----------------------------------------------------------------------------------- store and specs
def store() -> Store:
    """The artefact store every face shares (:meth:`ifbeta.store.Store.default`)."""
    return Store.default()


@dataclass(frozen=True)
class WorkspaceSpec:
    """What identifies a workspace: the sidebar's dataset, teacher and pool."""

    dataset: str
    teacher: str = "auto"
    teacher_arch: str | None = None
    pool: int | None = None
    trust_pickle: bool = False

    def options(self) -> dict:
        return dict(teacher=self.teacher, teacher_arch=self.teacher_arch, pool=self.pool,
                    trust_pickle=self.trust_pickle)


def dataset_name() -> str:
    choice = st.session_state.get("dataset_choice", "digits")
    if choice == "imagefolder":
        return f"imagefolder:{st.session_state.get('imagefolder_path', '').strip()}"
    return choice


def current_spec() -> WorkspaceSpec:
    pool = int(st.session_state.get("pool") or 0)
    return WorkspaceSpec(dataset_name(), st.session_state.get("teacher") or "auto",
                         st.session_state.get("teacher_arch") or None, pool or None,
                         bool(st.session_state.get("trust_pickle")))


def influence_config() -> InfluenceConfig:
    return InfluenceConfig(solver=st.session_state.get("influence_solver", "direct"),
                           folds=int(st.session_state.get("influence_folds", 2)))


def policy_config() -> PolicyConfig:
    s = st.session_state
    return PolicyConfig(estimator=s.get("policy_estimator", "implicit"), axis=s.get("policy_axis", "influence"),
                        steps=int(s.get("policy_steps", 40)), learning_rate=float(s.get("policy_learning_rate", 0.1)),
                        shrinkage=float(s.get("policy_shrinkage", 1.0)), stratify=bool(s.get("policy_stratify", True)),
                        seed=int(s.get("policy_seed", 0)))


# ------------------------------------------------------------------------------------ errors, progress
def error_message(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextlib.contextmanager
def engine_errors(*, stop: bool = True):
    """Show any engine error (ValueError family, StoreError, OSError) as st.error instead of a traceback."""
    try:
        yield
    except ENGINE_ERRORS as error:
        st.error(f"{error_message(error)}", icon="🚫")
        if stop:
            st.stop()


class Progress:
    """An ``on_step(step, info)`` callback drawing one st.progress bar. The bar appears at the first
    event, so a step served from the artefact store shows nothing."""

    def __init__(self, label: str, *, total: int | None = None, epochs: int | None = None, container=None):
        self.label, self.total, self.epochs = label, total, epochs
        self.container, self.bar, self.fraction, self.shown = container, None, 0.0, 0.0

    def __call__(self, step: int, info: dict) -> None:
        fraction, text = describe_progress(step, info, total=self.total, epochs=self.epochs)
        if fraction is not None:
            self.fraction = float(min(max(fraction, 0.0), 1.0))
        if self.bar is None:
            self.bar = (self.container or st).progress(0.0, text=self.label)
        self.bar.progress(self.fraction, text=f"{self.label}: {text}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.empty()
            self.bar = None


@contextlib.contextmanager
def progress(label: str, **kwargs):
    bar = Progress(label, **kwargs)
    try:
        yield bar
    finally:
        bar.close()


# ----------------------------------------------------------------------------------------- workspace
_READY: set = set()  # ("workspace", spec, root) of workspaces this process has opened (with progress)
_HANDOFF: dict = {}  # a workspace opened with progress, handed to the cached loader (no second open)


@st.cache_resource(max_entries=2, show_spinner=False)
def _splits(dataset: str, root: str):
    """(full train, test) of a dataset, loaded once per process (decoded once into the store)."""
    return pipeline.load_splits(dataset, store=Store(root))


@st.cache_resource(max_entries=2, show_spinner=False)
def _workspace(spec: WorkspaceSpec, root: str) -> pipeline.Workspace:
    handed = _HANDOFF.pop((spec, root), None)
    if handed is not None:
        return handed
    return pipeline.open_workspace(spec.dataset, store=Store(root), splits=_splits(spec.dataset, root),
                                   **spec.options())


def require_dataset(spec: WorkspaceSpec) -> None:
    if spec.dataset.strip() == "imagefolder:":
        st.info("Enter the ImageFolder root (the folder holding train/ and test/) in the sidebar.", icon="📁")
        st.stop()


def splits(spec: WorkspaceSpec):
    require_dataset(spec)
    root = str(store().root)
    with st.spinner(f"Loading {spec.dataset} (the first time decodes and caches it) ..."):
        return _splits(spec.dataset, root)


def teacher_missing(spec: WorkspaceSpec) -> str | None:
    """A message when the workspace cannot open without an explicit teacher step, else None."""
    if spec.teacher != "auto":
        return None if Path(spec.teacher).is_file() else f"teacher checkpoint {spec.teacher} does not exist"
    if spec.dataset in AUTO_TRAIN:
        return None
    from ifbeta.models import zoo as models

    train, _ = splits(spec)
    arch = spec.teacher_arch or models.default_architectures(train.name, train.image_size)[0]
    if teachers.auto_teacher_path(train, arch, store=store()).is_file():
        return None
    return (f"no {arch} teacher for {spec.dataset} yet: train one or choose a checkpoint on the Setup page "
            "(teachers train automatically only for digits)")


def workspace(spec: WorkspaceSpec | None = None) -> pipeline.Workspace:
    """The current workspace; opening it the first time shows progress (teacher training, features).
    On an engine error or a missing teacher the page shows the message and stops."""
    spec = spec or current_spec()
    require_dataset(spec)
    root = str(store().root)
    with engine_errors():
        missing = teacher_missing(spec)
        if missing:
            st.warning(missing, icon="🎓")
            st.page_link("pages/setup.py", label="Go to Setup", icon="🛠️")
            st.stop()
        if ("workspace", spec, root) not in _READY:
            epochs = teachers.default_epochs(spec.dataset)
            with progress(f"Preparing {spec.dataset} (teacher, features)", epochs=epochs) as bar:
                _HANDOFF[(spec, root)] = pipeline.open_workspace(spec.dataset, store=Store(root), on_step=bar,
                                                                 splits=splits(spec), **spec.options())
            _READY.add(("workspace", spec, root))
        return _workspace(spec, root)


# ------------------------------------------------------------------------------------------- steps
def scores(ws: pipeline.Workspace, config: InfluenceConfig | None = None):
    """(InfluenceResult, key), computed once with a progress bar, then read from the store."""
    with engine_errors(), progress("Influence scores") as bar:
        return pipeline.scores(ws, config or influence_config(), on_step=bar)


def choose(ws: pipeline.Workspace, method: str, ratio: float, seed: int):
    """A selection (cached in the store); learning a policy or training shows progress."""
    with engine_errors(), progress(f"Selecting with {method}", total=policy_config().steps) as bar:
        return pipeline.choose(ws, method, ratio, seed=seed, policy_config=policy_config(),
                               influence_config=influence_config(), on_step=bar)


def peek_choose(ws: pipeline.Workspace, method: str, ratio: float, seed: int):
    """The selection if it is in the store already, else None (computes nothing)."""
    with engine_errors():
        return pipeline.choose(ws, method, ratio, seed=seed, policy_config=policy_config(),
                               influence_config=influence_config(), compute=False)


def policies(ws: pipeline.Workspace, ratios: list[float], on_step=None, *, compute: bool = True):
    """Learned policies for ``ratios`` (store-cached per ratio); ``on_step`` sees every outer step.
    With ``compute=False``: None unless every ratio is stored."""
    with engine_errors():
        return pipeline.policies(ws, ratios, policy_config(), influence_config=influence_config(), compute=compute,
                                 on_step=on_step)


def axis_values(ws: pipeline.Workspace, axis: str) -> np.ndarray:
    """What the Beta ranks (larger = more helpful / easier), as pipeline.policies uses it."""
    result, _ = scores(ws)
    return axes.axis_values(result, axis)


def loo(ws: pipeline.Workspace, samples: int, seed: int = 0, *, compute: bool = True) -> dict | None:
    """The leave-one-out check of the influence scores (true refits), store-cached (None: not stored)."""
    with engine_errors(), progress(f"Leave-one-out check ({samples} refits)") as bar:
        return reports.loo_report(ws, influence_config(), samples=samples, seed=seed, compute=compute, on_step=bar)


def landscape(ws: pipeline.Workspace, ratio: float, grid: int, *, compute: bool = True) -> dict | None:
    """J over a grid x grid (alpha, beta) grid at ``ratio``, store-cached (None: not stored)."""
    with engine_errors(), progress(f"J landscape at r={ratio:g} ({grid * grid} fits)", total=grid * grid) as bar:
        return reports.landscape(ws, ratio, grid=grid, policy_config=policy_config(),
                                 influence_config=influence_config(), compute=compute, on_step=bar)


def transfer(ws: pipeline.Workspace, ratio: float, policies_: int, epochs: int, seeds: int, *,
             compute: bool = True) -> dict | None:
    """The transfer check (real short KD students; resumable), its report store-cached (None: not stored)."""
    with engine_errors(), progress("Transfer check") as bar:
        return reports.transfer_report(ws, ratio, policies=policies_, epochs=epochs, seeds=seeds,
                                       policy_config=policy_config(), influence_config=influence_config(),
                                       compute=compute, on_step=bar)


@st.cache_data(max_entries=8, show_spinner=False)
def _pca(features_key: str, _features) -> np.ndarray:
    from ifbeta import embed

    return embed.pca(_features).coords


def pca(ws: pipeline.Workspace) -> np.ndarray:
    with engine_errors():
        return _pca(ws.features.key, ws.features.features)


def umap(ws: pipeline.Workspace, neighbours: int, min_dist: float, *, compute: bool = True) -> np.ndarray | None:
    """UMAP coords from the store; computed (with progress) only when ``compute``, else None if missing."""
    from ifbeta import embed

    f = ws.features
    n, d = f.features.shape
    key = embed.umap_key(f.key, n=n, d=d, neighbours=neighbours, min_dist=min_dist)
    if not compute and not ws.store.exists("embeddings", key):
        return None
    with engine_errors(), progress("UMAP (the first run imports and compiles umap: ~30 s)") as bar:
        return embed.umap(f.features, store=ws.store, input_key=f.key, neighbours=neighbours, min_dist=min_dist,
                          on_step=bar).coords


@st.cache_data(max_entries=16, show_spinner=False)
def teacher_test_accuracy(sha256: str, fingerprint: str, _ws) -> float | None:
    """Test top-1 of the teacher: from its checkpoint metadata, else measured once on the test split."""
    recorded = _ws.teacher.info.metadata.get("test_top1")
    if recorded is not None:
        return float(recorded)
    from ifbeta.models.training import default_device, evaluate

    return float(evaluate(_ws.teacher.model, _ws.teacher.normaliser, _ws.test, device=default_device())["top1"])


# ------------------------------------------------------------------------------------------ subsets
def subset_directory(ws: pipeline.Workspace, method: str, ratio: float, seed: int) -> Path:
    return pipeline.subset_directory(ws, method, ratio, seed)


def write_subset(ws: pipeline.Workspace, chosen, method: str, ratio: float, seed: int) -> Path:
    """The selection's subset directory, written once (rewritten only if its indices differ)."""
    with engine_errors():
        return pipeline.save_selection(ws, chosen, method, ratio, seed, influence_config=influence_config())


def save_upload(name: str, data: bytes) -> Path:
    """Store an uploaded checkpoint under <cache>/uploads/ (content-addressed, size-limited)."""
    return teachers.store_upload(store().root / "uploads", name, data, max_mb=MAX_UPLOAD_MB)


def teacher_checkpoints() -> list[str]:
    """Checkpoints the sidebar offers: uploads, teachers trained from the app, the bundled ones."""
    root = store().root
    return teachers.checkpoint_files([root / "uploads", root / "teachers" / "trained", PROJECT_ROOT / "teachers"])


# ------------------------------------------------------------------------------------------ galleries
def gallery(ws: pipeline.Workspace, indices, *, scores_: np.ndarray | None = None, columns: int = 8,
            size: int = 72, limit: int = 64) -> None:
    """Images of pool rows ``indices`` with id, label, teacher prediction and score as captions."""
    indices = [int(i) for i in list(indices)[:limit]]
    if not indices:
        st.caption("no samples")
        return
    names = ws.train.class_names
    predictions = np.asarray(ws.features.logits[indices]).argmax(1)
    images = ws.train.images[indices].numpy()
    for start in range(0, len(indices), columns):
        cells = st.columns(columns)
        for cell, offset in zip(cells, range(start, min(start + columns, len(indices)))):
            i = indices[offset]
            caption = f"{ws.train.ids[i]} · {names[ws.train.labels[i]]}→{names[predictions[offset]]}"
            if scores_ is not None:
                caption += f" · s={scores_[i]:+.2g}"
            cell.image(plots.thumbnail(images[offset], size), caption=caption, width=size, output_format="PNG")


# ---------------------------------------------------------------------------------- distillation runs
def launch_run(ws_spec: WorkspaceSpec, *, subset: str, student: str, epochs: int, seed: int, name: str) -> Path:
    """Start ``ifbeta distill`` in the background (own process group, survives reloads) -> run directory."""
    return runs.launch(store(), name=name, dataset=ws_spec.dataset, subset=subset, student=student, epochs=epochs,
                       seed=seed, cwd=PROJECT_ROOT, **ws_spec.options())


def app_runs() -> list[dict]:
    """Runs launched from the app (newest first): launch record + status + progress + log tail."""
    return runs.launched_runs(store())


def cancel_run(record: dict) -> None:
    """Stop a running distillation (its whole process group) and mark it cancelled."""
    runs.cancel(record["out"])


def all_runs() -> list[dict]:
    """Every distillation known to the store (app and CLI), via ``distill.list_runs``."""
    from ifbeta.distill import student as distill

    with engine_errors(stop=False):
        return distill.list_runs(store())
    return []
