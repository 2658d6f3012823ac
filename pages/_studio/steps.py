"""The pipeline steps behind the pages: st caches over ``ifbeta.pipeline`` and the artefact store.

Everything computed goes through ``ifbeta.pipeline`` and the store every face shares
(``Store.default()``: the CLI and the app read and write the same artefacts), so a reload or a
server restart never recomputes; the st caches here only keep loaded objects in memory (bounded by
``max_entries``). Long steps run OUTSIDE any st cache with an ``on_step`` progress bar (Streamlit
replays elements drawn inside cached functions, which breaks for a bar created outside), then the
cached loader picks up the result. session_state holds selections and keys, never arrays.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import streamlit as st

from ifbeta import pipeline
from ifbeta.errors import ModelError
from ifbeta.evaluation import diagnostics
from ifbeta.models import registry, teachers
from ifbeta.policy import axes
from ifbeta.policy import preview as policy_preview
from ifbeta.store import Store
from ifbeta.subsets import catalog, tags

from .feedback import ENGINE_ERRORS, engine_errors, progress
from .roots import refuse_imagefolder_outside_roots, refuse_outside_roots
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
_OPENING: dict = {}  # (spec, root) -> the lock held while a session of this process opens that workspace
_OPENING_GUARD = threading.Lock()


@st.cache_resource(max_entries=2, show_spinner=False)
def _splits(dataset: str, root: str, skip_corrupt: bool = False):
    """(full train, test) of a dataset, loaded once per process (decoded once into the store)."""
    return pipeline.load_splits(dataset, store=Store(root), skip_corrupt=skip_corrupt)


@st.cache_resource(max_entries=2, show_spinner=False)
def _workspace(spec: WorkspaceSpec, root: str) -> pipeline.Workspace:
    handed = _HANDOFF.pop((spec, root), None)
    if handed is not None:
        return handed
    return pipeline.open_workspace(spec.dataset, store=Store(root), **spec.options(),
                                   splits=_splits(spec.dataset, root, spec.skip_corrupt))


def require_dataset(spec: WorkspaceSpec) -> None:
    """Stop the page with a hint while the ImageFolder root is still empty."""
    if spec.dataset.strip() == "imagefolder:":
        st.info("Enter the ImageFolder root (the folder holding train/ and test/) in the sidebar.", icon="📁")
        st.stop()


def splits(spec: WorkspaceSpec):
    """(full train, test) of the spec's dataset; the first time decodes it into the store. An
    ImageFolder outside the allowed roots stops the page with a message."""
    require_dataset(spec)
    with engine_errors():
        refuse_imagefolder_outside_roots(spec.dataset)
    root = str(store().root)
    with st.spinner(f"Loading {spec.dataset} (the first time decodes and caches it) ..."):
        return _splits(spec.dataset, root, spec.skip_corrupt)


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
        if spec.teacher != "auto":
            refuse_outside_roots(spec.teacher, "checkpoint")
        missing = teacher_missing(spec)
        if missing:
            st.warning(missing, icon="🎓")
            st.page_link("pages/setup.py", label="Go to Setup", icon="🛠️")
            st.stop()
        if ("workspace", spec, root) not in _READY:
            _open_once(spec, root, container)
        opened = _workspace(spec, root)
        _HANDOFF.pop((spec, root), None)  # not taken when the loader had it cached already
        return opened


def _open_once(spec: WorkspaceSpec, root: str, container) -> None:
    """Open the workspace with progress once per process: a session arriving meanwhile waits for the first
    (then reads the loader's cached one); across processes the store's locks compute each artefact once."""
    with _OPENING_GUARD:
        lock = _OPENING.setdefault((spec, root), threading.Lock())
    if not lock.acquire(blocking=False):
        with st.spinner(f"Another session is preparing {spec.dataset}; waiting for it ..."):
            lock.acquire()
    try:
        if ("workspace", spec, root) not in _READY:
            epochs = teachers.default_epochs(spec.dataset)
            with progress(f"Preparing {spec.dataset} (teacher, features)", epochs=epochs, container=container) as bar:
                _HANDOFF[(spec, root)] = pipeline.open_workspace(spec.dataset, store=Store(root), on_step=bar,
                                                                 splits=splits(spec), **spec.options())
            _READY.add(("workspace", spec, root))
    finally:
        lock.release()


@st.cache_data(max_entries=16, show_spinner=False)
def teacher_test_accuracy(sha256: str, fingerprint: str, _ws) -> float | None:
    """Test top-1 of the teacher: as the teacher list records it (``registry``: the checkpoint's own
    metadata), else measured once on the test split."""
    path = Path(_ws.teacher.info.path).resolve()
    listed = next((e for e in registry.entries(_ws.store, fingerprint=_ws.teacher.info.metadata.get("fingerprint"),
                                               bundled=teachers.BUNDLED) if e.path.resolve() == path), None)
    recorded = _ws.teacher.info.metadata.get("test_top1") if listed is None else listed.test_top1
    if recorded is not None:
        return float(recorded)
    from ifbeta.models.training import default_device, evaluate

    return float(evaluate(_ws.teacher.model, _ws.teacher.normaliser, _ws.test, device=default_device())["top1"])


def save_upload(name: str, data: bytes, dataset, *, arch: str | None = None, trust_pickle: bool = False) -> Path:
    """Check an uploaded checkpoint on ``dataset`` (loads into ``arch``, finite logits of its class
    count), then store it under <cache>/uploads/ (content-addressed, size-limited); a failure raises
    ``ModelError`` and stores nothing (``teachers.store_upload``)."""
    return teachers.store_upload(store().root / "uploads", name, data, max_mb=MAX_UPLOAD_MB, dataset=dataset,
                                 arch=arch, trust_pickle=trust_pickle)


def check_checkpoint(path: str, dataset, *, arch: str | None = None, trust_pickle: bool = False) -> Path:
    """The checkpoint file at ``path`` (resolved), refused with a ``ModelError`` when it lies outside
    the allowed roots, is a folder, is missing, or does not load and run on ``dataset``."""
    resolved = Path(path).expanduser().resolve()
    refuse_outside_roots(resolved, "checkpoint")
    if resolved.is_dir():
        raise ModelError(f"{path} is a folder, not a checkpoint file; give the checkpoint file inside it")
    if not resolved.is_file():
        raise ModelError(f"no file at {path}")
    teachers.load_teacher(resolved, dataset, arch=arch, trust_pickle=trust_pickle)
    return resolved


@st.cache_data(max_entries=64, show_spinner=False)
def _upload_usable(path: str, stamp: tuple, fingerprint: str, _dataset) -> bool:
    return bool(teachers.usable_checkpoints([path], _dataset))


def teacher_entries(train=None) -> list[registry.Entry]:
    """The teacher list (``ifbeta teachers``): of ``train``'s dataset with the default ``--teacher auto``
    uses marked (``teachers.listing``), or, without ``train``, of every dataset (defaults unmarked
    where the store names none)."""
    if train is not None:
        return teachers.listing(train, store=store())
    return registry.entries(store(), bundled=teachers.BUNDLED)


def teacher_checkpoints() -> list[str]:
    """Checkpoints the sidebar offers: the teacher list's entries (every dataset), then uploads that load
    and run on the current dataset (each checked once per file version)."""
    root = store()
    listed = [str(e.path) for e in teacher_entries()]
    uploads = teachers.checkpoint_files([root.root / "uploads"])
    if uploads:
        try:
            spec = current_spec()
            train = _splits(spec.dataset, str(root.root), spec.skip_corrupt)[0] if _dataset_allowed() else None
        except ENGINE_ERRORS:
            train = None
        uploads = [u for u in uploads if train is not None and _upload_usable(u, _stamp(u), train.fingerprint, train)]
    return listed + [path for path in uploads if path not in listed]


def teacher_label(path: str) -> str:
    """How the sidebar names a checkpoint: the teacher list's name, arch, epochs and test top-1."""
    entry = next((e for e in teacher_entries() if str(e.path) == path), None)
    if entry is None:
        return Path(path).name
    accuracy = "" if entry.test_top1 is None else f", test top-1 {entry.test_top1:.1%}"
    return f"{entry.name} ({entry.dataset}, {entry.arch}, {entry.epochs} epochs{accuracy})"


def teacher_table(listed: list[registry.Entry]) -> list[dict]:
    """Rows of the Setup page's teacher list (the columns ``ifbeta teachers`` prints)."""
    return [{"default": "✓" if e.default else "", "name": e.name, "architecture": e.arch, "epochs": e.epochs,
             "test top-1": None if e.test_top1 is None else round(100 * e.test_top1, 2), "source": e.source,
             "path": str(e.path)} for e in listed]


def set_default_teacher(entry: registry.Entry) -> None:
    """Make ``entry`` the default of its dataset and architecture (what ``auto`` uses from now on); the
    workspaces this process opened are dropped so ``auto`` opens with the new default."""
    registry.set_default(store(), entry)
    _workspace.clear()
    _READY.clear()


def _dataset_allowed() -> bool:
    """The sidebar names a dataset that may be read (an ImageFolder root given, inside the allowed roots)."""
    dataset = current_spec().dataset.strip()
    if dataset == "imagefolder:":
        return False
    try:
        refuse_imagefolder_outside_roots(dataset)
    except ModelError:
        return False
    return True


def _stamp(path: str) -> tuple:
    return Path(path).stat().st_mtime_ns, Path(path).stat().st_size


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


def tag_map(ws: pipeline.Workspace) -> dict[str, list[str]]:
    """Every tag of the pool in the store -> its sorted sample ids ({} when nothing is tagged)."""
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
