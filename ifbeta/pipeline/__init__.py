"""The cached steps every face shares: dataset -> teacher -> features -> scores -> policy -> subset.

Each step goes through the artefact store, keyed by its config and the keys of its inputs, so a
CLI run, an app session or a server restart never recomputes what exists. Results are plain
dataclasses of numpy arrays (picklable; the app can hold them in ``st.cache_data``). One module per
part: ``steps`` (Workspace, scores, policies, choose: up to a Selection of the pool) and
``subset_files`` (write_subset, subset_directory, save_selection: a Selection as a subset directory);
their public names are gathered here, so ``from ifbeta import pipeline; pipeline.choose(...)`` works.
"""
from __future__ import annotations

from ifbeta.pipeline.steps import (  # noqa: F401
    Workspace,
    choose,
    exclusion_of,
    load_splits,
    open_workspace,
    policies,
    policy_stored,
    pool_of,
    scores,
    scores_key,
    selection_inputs,
)
from ifbeta.pipeline.subset_files import save_selection, subset_directory, write_subset  # noqa: F401
