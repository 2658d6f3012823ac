"""The pipeline steps behind the pages: st caches over ``ifbeta.pipeline`` and the artefact store.

Everything computed goes through ``ifbeta.pipeline`` and the store every face shares
(``Store.default()``: the CLI and the app read and write the same artefacts), so a reload or a
server restart never recomputes; the st caches here only keep loaded objects in memory (bounded by
``max_entries``). Long steps run OUTSIDE any st cache with an ``on_step`` progress bar (Streamlit
replays elements drawn inside cached functions, which breaks for a bar created outside), then the
cached loader picks up the result. session_state holds selections and keys, never arrays.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from ifbeta import pipeline
from ifbeta.evaluation import diagnostics
from ifbeta.models import teachers
from ifbeta.policy import axes
from ifbeta.policy import preview as policy_preview
from ifbeta.store import Store
from ifbeta.subsets import catalog, tags

from .feedback import engine_errors, progress
from .state import WorkspaceSpec, current_spec, influence_config, policy_config

PROJECT_ROOT = Path(__file__).resolve().parents[2]
MAX_UPLOAD_MB = 200
AUTO_TRAIN = ("digits",)  # datasets whose default teacher trains on first use (seconds on a CPU)


def store() -> Store:
    """The artefact store every face shares (:meth:`ifbeta.store.Store.default`, resolved per call)."""
    return Store.default()


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
    """Stop the page with a hint while the ImageFolder root is still empty."""
    if spec.dataset.strip() == "imagefolder:":
        st.info("Enter the ImageFolder root (the folder holding train/ and test/) in the sidebar.", icon="📁")
        st.stop()


def splits(spec: WorkspaceSpec):
    """(full train, test) of the spec's dataset; the first time decodes it into the store."""
    require_dataset(spec)
    root = str(store().root)
    with st.spinner(f"Loading {spec.dataset} (the first time decodes and caches it) ..."):
        return _splits(spec.dataset, root)


def teacher_missing(spec: WorkspaceSpec) -> str | None:
    """Why the workspace cannot open without an explicit teacher step (``teachers.teacher_missing``),
    or None. ``auto`` trains on the spot only for the datasets in ``AUTO_TRAIN``."""
    train, _ = splits(spec)
    missing = teachers.teacher_missing(spec.teacher, train, store=store(), arch=spec.teacher_arch,
                                       trains_itself=spec.dataset in AUTO_TRAIN)
    if missing and spec.teacher == "auto":
        missing += " on the Setup page (teachers train automatically only for digits)"
    return missing


def workspace(spec: WorkspaceSpec | None = None, *, container=None) -> pipeline.Workspace:
    """The current workspace; opening it the first time shows progress (teacher training, features)
    in ``container`` (default: where the page calls this, near its top). On an engine error or a
    missing teacher the page shows the message and stops."""
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
            with progress(f"Preparing {spec.dataset} (teacher, features)", epochs=epochs, container=container) as bar:
                _HANDOFF[(spec, root)] = pipeline.open_workspace(spec.dataset, store=Store(root), on_step=bar,
                                                                 splits=splits(spec), **spec.options())
            _READY.add(("workspace", spec, root))
        return _workspace(spec, root)


@st.cache_data(max_entries=16, show_spinner=False)
def teacher_test_accuracy(sha256: str, fingerprint: str, _ws) -> float | None:
    """Test top-1 of the teacher: from its checkpoint metadata, else measured once on the test split."""
    recorded = _ws.teacher.info.metadata.get("test_top1")
    if recorded is not None:
        return float(recorded)
    from ifbeta.models.training import default_device, evaluate

    return float(evaluate(_ws.teacher.model, _ws.teacher.normaliser, _ws.test, device=default_device())["top1"])


def save_upload(name: str, data: bytes) -> Path:
    """Store an uploaded checkpoint under <cache>/uploads/ (content-addressed, size-limited)."""
    return teachers.store_upload(store().root / "uploads", name, data, max_mb=MAX_UPLOAD_MB)


def teacher_checkpoints() -> list[str]:
    """Checkpoints the sidebar offers: uploads, teachers trained from the app, the bundled ones."""
    root = store()
    return teachers.checkpoint_files([root.root / "uploads", teachers.trained_folder(root), teachers.BUNDLED])


# ------------------------------------------------------------------------------------------- scoring
def scores(ws: pipeline.Workspace, config=None):
    """(InfluenceResult, key), computed once with a progress bar, then read from the store."""
    with engine_errors(), progress("Influence scores") as bar:
        return pipeline.scores(ws, config or influence_config(), on_step=bar)


def loo(ws: pipeline.Workspace, samples: int, seed: int = 0, *, compute: bool = True) -> dict | None:
    """The leave-one-out check of the influence scores (true refits), store-cached (None: not stored)."""
    with engine_errors(), progress(f"Leave-one-out check ({samples} refits)") as bar:
        return diagnostics.loo_report(ws, influence_config(), samples=samples, seed=seed, compute=compute,
                                      on_step=bar)


# -------------------------------------------------------------------------------------------- policy
def axis_values(ws: pipeline.Workspace, axis: str) -> np.ndarray:
    """What the Beta ranks (larger = more helpful / easier), as pipeline.policies uses it."""
    result, _ = scores(ws)
    return axes.axis_values(result, axis)


def preview(ws: pipeline.Workspace, *, alpha: float, beta: float, ratio: float) -> policy_preview.Preview:
    """The policy (alpha, beta) at ``ratio`` over the Policy page's axis, stratification and seed:
    the one preview both the Feature map and the Policy page draw."""
    config = policy_config()
    values = axis_values(ws, config.axis)
    with engine_errors():
        return policy_preview.preview(values, ws.train.labels, ratio=ratio, alpha=alpha, beta=beta,
                                      stratify=config.stratify, seed=config.seed)


def policies(ws: pipeline.Workspace, ratios: list[float], on_step=None, *, compute: bool = True):
    """Learned policies for ``ratios`` (store-cached per ratio); ``on_step`` sees every outer step.
    With ``compute=False``: None unless every ratio is stored."""
    with engine_errors():
        return pipeline.policies(ws, ratios, policy_config(), influence_config=influence_config(), compute=compute,
                                 on_step=on_step)


def landscape(ws: pipeline.Workspace, ratio: float, grid: int, *, compute: bool = True) -> dict | None:
    """J over a grid x grid (alpha, beta) grid at ``ratio``, store-cached (None: not stored)."""
    with engine_errors(), progress(f"J landscape at r={ratio:g} ({grid * grid} fits)", total=grid * grid) as bar:
        return diagnostics.landscape(ws, ratio, grid=grid, policy_config=policy_config(),
                                     influence_config=influence_config(), compute=compute, on_step=bar)


def transfer(ws: pipeline.Workspace, ratio: float, policies_: int, epochs: int, seeds: int, *,
             compute: bool = True) -> dict | None:
    """The transfer check (real short KD students; resumable), its report store-cached (None: not stored)."""
    with engine_errors(), progress("Transfer check") as bar:
        return diagnostics.transfer_report(ws, ratio, policies=policies_, epochs=epochs, seeds=seeds,
                                           policy_config=policy_config(), influence_config=influence_config(),
                                           compute=compute, on_step=bar)


# --------------------------------------------------------------------------------------- projections
@st.cache_data(max_entries=8, show_spinner=False)
def _pca(features_key: str, _features) -> np.ndarray:
    from ifbeta import embed

    return embed.pca(_features).coords


def pca(ws: pipeline.Workspace) -> np.ndarray:
    """(N, 2) PCA of the standardised teacher features (in memory, per features key)."""
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


# ------------------------------------------------------------------------------------------ subsets
def choose(ws: pipeline.Workspace, method: str, ratio: float, seed: int, *, exclude: list[str] | None = None):
    """A selection (cached in the store), without the sample ids ``exclude``; learning a policy or
    training shows progress."""
    with engine_errors(), progress(f"Selecting with {method}", total=policy_config().steps) as bar:
        return pipeline.choose(ws, method, ratio, seed=seed, policy_config=policy_config(),
                               influence_config=influence_config(), exclude=exclude, on_step=bar)


def peek_choose(ws: pipeline.Workspace, method: str, ratio: float, seed: int, *, exclude: list[str] | None = None):
    """The selection if it is in the store already, or if it is an IF-Beta selection whose policy is
    stored (e.g. learned on the Policy page: drawing from it is cheap); else None (learns nothing)."""
    with engine_errors():
        chosen = pipeline.choose(ws, method, ratio, seed=seed, policy_config=policy_config(),
                                 influence_config=influence_config(), exclude=exclude, compute=False)
        if chosen is None and pipeline.policy_stored(ws, method, ratio, policy_config=policy_config(),
                                                     influence_config=influence_config(), exclude=exclude):
            return choose(ws, method, ratio, seed, exclude=exclude)
        return chosen


def subset_directory(ws: pipeline.Workspace, method: str, ratio: float, seed: int) -> Path:
    """Where the selection's subset file lives in the store (``pipeline.subset_directory``)."""
    return pipeline.subset_directory(ws, method, ratio, seed)


def write_subset(ws: pipeline.Workspace, chosen, method: str, ratio: float, seed: int, *,
                 exclude: list[str] | None = None) -> Path:
    """The selection's subset directory, written once (rewritten only if its indices differ); ``exclude``:
    the ids the selection was made without (recorded in its manifest, and in the folder's name)."""
    with engine_errors():
        return pipeline.save_selection(ws, chosen, method, ratio, seed, influence_config=influence_config(),
                                       exclude=exclude)


def subsets(ws: pipeline.Workspace) -> list[catalog.Entry]:
    """Subsets in the store made for this pool, newest first, broken ones with their reason."""
    return catalog.scan(ws.store, fingerprint=ws.train.fingerprint)


# --------------------------------------------------------------------------------------------- tags
def tagged(ws: pipeline.Workspace, tag: str = tags.EXCLUDE) -> list[str]:
    """The sample ids of the pool tagged ``tag`` in the store (sorted; [] when none)."""
    with engine_errors():
        return tags.load(ws.store, ws.train.fingerprint).get(tag, [])


def all_tags(ws: pipeline.Workspace) -> dict[str, list[str]]:
    """tag -> sorted sample ids of the pool, as stored (read fresh on every call: the Subset page and
    the CLI see a change at once)."""
    with engine_errors():
        return tags.load(ws.store, ws.train.fingerprint)


def tag_samples(ws: pipeline.Workspace, tag: str, ids: list[str], *, remove: bool = False) -> dict[str, list[str]] | None:
    """Tag (or with ``remove`` untag) the pool's samples ``ids``; -> the new mapping, or None after
    showing a bad tag or unknown ids on the page."""
    with engine_errors(stop=False):
        if remove:
            return tags.remove(ws.store, ws.train.fingerprint, tag, ids)
        return tags.add(ws.store, ws.train.fingerprint, tag, ids, known=ws.train.ids)
    return None
