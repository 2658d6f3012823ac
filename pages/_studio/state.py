"""Session state: every widget key with its default, routing between pages, and what the widgets say.

``WIDGETS`` is the one list of session_state keys the pages share and their defaults; pages create
widgets with ``key=`` only (no inline ``value=``), and ``init_state`` keeps every key alive across
page changes. The optimiser and scoring defaults come from ``PolicyConfig`` and ``InfluenceConfig``
(``POLICY_KEYS``, ``INFLUENCE_KEYS``), so the app starts from the settings the CLI uses. Widgets whose
default depends on the dataset (teacher and student architecture, epochs) pass it inline.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ifbeta.config import InfluenceConfig, PolicyConfig, ProxyConfig
from ifbeta.evaluation.transfer import DEFAULT_SEEDS

POLICY_KEYS = {"policy_estimator": "estimator", "policy_axis": "axis", "policy_steps": "steps",
               "policy_learning_rate": "learning_rate", "policy_shrinkage": "shrinkage",
               "policy_stratify": "stratify", "policy_seed": "seed", "policy_start": "start"}
"""session_state key -> ``PolicyConfig`` field (the Policy page's optimiser settings)."""
INFLUENCE_KEYS = {"influence_solver": "solver", "influence_folds": "folds"}
"""session_state key -> ``InfluenceConfig`` field (the Influence page's scoring settings)."""
PROXY_KEYS = {"proxy_family": "family"}
"""session_state key -> ``ProxyConfig`` field: the proxy family (linear | knn) that scores and the bilevel
loop share, chosen on the Influence and the Policy page."""

SHAPE_RANGE = (0.1, 20.0, 0.1)
"""(min, max, step) of the alpha and beta inputs wherever a page lets a person shape the policy."""

SIDEBAR = {"dataset_choice": "digits", "imagefolder_path": "", "teacher": "auto", "teacher_arch": "",
           "trust_pickle": False, "pool": 0, "skip_corrupt": False}
SETTINGS = {  # scoring and the bilevel loop: the engine's own defaults
    **{key: getattr(InfluenceConfig(), name) for key, name in INFLUENCE_KEYS.items()},
    **{key: getattr(PolicyConfig(), name) for key, name in POLICY_KEYS.items()},
    **{key: getattr(ProxyConfig(), name) for key, name in PROXY_KEYS.items()},
    "policy_ratios": [0.5],
}
SHARED = {  # keys more than one page reads: the policy shape a person plays with, the subset in focus
    "teach_alpha": 2.0, "teach_beta": 1.0, "teach_ratio": 0.5,
    "subset_method": "ifbeta", "subset_ratio": 0.5, "subset_seed": 0,
}

SETUP = {"checkpoint_path": "", "checkpoint_trust": False, "upload_trust": False}

INFLUENCE = {"influence_violin_kind": "violin", "influence_scale": "percentile", "influence_tail_percent": 10,
             "confidence_statistic": "margin", "loo_samples": 200}

FEATURE_MAP = {"map_method": "PCA", "map_colour": "class", "map_show_all": False, "umap_neighbours": 15,
               "umap_min_dist": 0.1, "map_influence_scale": "within-class percentile",
               "map_point_size": 5, "map_opacity": 0.6, "map_tag": "exclude", "map_custom_tag": "",
               "map_selection": []}  # map_selection: the selected sample ids (pages/_studio/selection.py)

POLICY = {"landscape_grid": 5, "transfer_ratio": 0.5, "transfer_policies": 3, "transfer_seeds": DEFAULT_SEEDS}

SUBSET = {"subset_count": 16, "export_path": "", "export_pruned": False,
          "subset_exclude": True}  # leave out the samples tagged exclude (the checkbox shows when there are some)

DISTILL = {"distill_seed": 0, "distill_seeds": 3, "distill_random": True, "distill_full": True,
           "distill_only_dataset": True}

WIDGETS: dict = {**SIDEBAR, **SETTINGS, **SHARED, **SETUP, **INFLUENCE, **FEATURE_MAP, **POLICY, **SUBSET, **DISTILL}
"""session_state key -> default, set once per session by ``init_state``."""


def init_state() -> None:
    """Set defaults once, apply values a page asked for (``apply_later``), and keep every known key
    alive across page changes (widget keys of a page that is not shown would otherwise be dropped)."""
    st.session_state.update(st.session_state.pop("_pending", None) or {})
    for key, value in WIDGETS.items():
        if key not in st.session_state:
            st.session_state[key] = list(value) if isinstance(value, list) else value
        else:
            st.session_state[key] = st.session_state[key]


def apply_later(values: dict) -> None:
    """Set widget-backed keys (e.g. the sidebar's teacher) at the start of the next run, then rerun."""
    st.session_state["_pending"] = {**st.session_state.get("_pending", {}), **values}
    st.rerun()


# -------------------------------------------------------------------------------------------- routing
def route_mark() -> None:
    """Called by app.py on every run, before the page: marks that st.navigation routed this run."""
    st.session_state["_routed"] = True


def page_guard(page_file: str) -> None:
    """First line of every page: ``state.page_guard(__file__)``.

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


# ------------------------------------------------------------------------------ what the widgets say
@dataclass(frozen=True)
class WorkspaceSpec:
    """What identifies a workspace: the sidebar's dataset, teacher and pool."""

    dataset: str
    teacher: str = "auto"
    teacher_arch: str | None = None
    pool: int | None = None
    trust_pickle: bool = False
    skip_corrupt: bool = False  # ImageFolder: leave unreadable images out instead of refusing the folder

    def options(self) -> dict:
        """Keyword arguments of ``pipeline.open_workspace`` and ``ifbeta distill`` besides the dataset."""
        return dict(teacher=self.teacher, teacher_arch=self.teacher_arch, pool=self.pool,
                    trust_pickle=self.trust_pickle, skip_corrupt=self.skip_corrupt)


def dataset_name() -> str:
    """The dataset as the engine names it (``imagefolder:<root>`` for a folder)."""
    choice = st.session_state["dataset_choice"]
    if choice == "imagefolder":
        return f"imagefolder:{st.session_state['imagefolder_path'].strip()}"
    return choice


def current_spec() -> WorkspaceSpec:
    pool = int(st.session_state["pool"] or 0)
    return WorkspaceSpec(dataset_name(), st.session_state["teacher"] or "auto",
                         st.session_state["teacher_arch"] or None, pool or None,
                         bool(st.session_state["trust_pickle"]), bool(st.session_state["skip_corrupt"]))


def _from_state(config, keys: dict):
    """``config`` with the fields named in ``keys`` (session key -> field) read from session_state,
    cast to the type of the config's own default."""
    values = {name: type(getattr(config, name))(st.session_state[key]) for key, name in keys.items()
              if key in st.session_state}
    return dataclasses.replace(config, **values)


def influence_config() -> InfluenceConfig:
    """The scoring settings of the Influence page, with the proxy family chosen on the Influence or the
    Policy page (engine defaults elsewhere)."""
    config = _from_state(InfluenceConfig(), INFLUENCE_KEYS)
    return dataclasses.replace(config, proxy=_from_state(config.proxy, PROXY_KEYS))


def policy_config() -> PolicyConfig:
    """The optimiser settings of the Policy page (engine defaults elsewhere)."""
    return _from_state(PolicyConfig(), POLICY_KEYS)
