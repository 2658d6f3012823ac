"""A selection written as a subset directory (indices.npy, samples.csv, manifest.json; subsets/files.py).

- ``write_subset``: a Selection of the pool (indices (k,) int64, rows of the pool) into a given
  directory. Each sample's score column holds the influence scores (N,) float64, > 0 helpful, when they
  are given, except for an IF-Beta method with a proxy family of its own (``ifbeta-knn``), whose own
  scores are written; a Beta policy also writes each sample's rank u (N,) in (0, 1) and inclusion
  probability (N,) in [0, 1] (NaN and 0 at excluded rows).
- ``subset_directory``: where a selection's subset lives in the store (``<store>/subsets/<name>``).
- ``save_selection``: write it there once (rewritten only if its indices differ).

The Workspace, ``exclusion_of`` and ``scores`` these read are the steps of ``steps.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ifbeta.config import InfluenceConfig
from ifbeta.pipeline.steps import Workspace, exclusion_of, scores
from ifbeta.selection.beta_policy import POLICY_METHODS
from ifbeta.store import json_ready


def write_subset(workspace: Workspace, chosen, directory: str | Path, *, ratio: float, seed: int,
                 influence_result=None, exclude: list[str] | None = None) -> Path:
    """Write a Selection as a subset directory (indices.npy, samples.csv, manifest.json).

    ``exclude``: the ids the selection was made without (as given to ``choose``); the manifest's
    ``extra`` records them (``Exclusion.record``), and a Beta policy's u and inclusion probability
    are those of the sub-pool (empty and 0 at the excluded rows). ValueError if ``chosen`` was made
    with another exclusion."""
    from ifbeta.policy import beta as policy
    from ifbeta.policy import preview
    from ifbeta.subsets import files as subset

    info = chosen.info
    exclusion = exclusion_of(workspace, exclude)
    if info.get("excluded_sha256") != (None if exclusion is None else exclusion.sha256):
        raise ValueError("the selection was made with another exclusion than the one given; pass the same "
                         "exclude to choose and write_subset")
    labels = workspace.train.labels
    rows = np.arange(len(labels)) if exclusion is None else exclusion.rows
    u = inclusion = None
    if info.get("alpha") is not None and chosen.scores is not None:  # a Beta policy: its ranks and pi
        stratify = bool(info.get("stratified", True))
        u, inclusion = np.full(len(labels), np.nan), np.zeros(len(labels))
        u[rows] = preview.ranks(chosen.scores[rows], labels[rows], stratify=stratify)
        inclusion[rows] = policy.policy_probabilities(u[rows], labels[rows], len(chosen.indices),
                                                      float(info["alpha"]), float(info["beta"]), stratify=stratify)
    own_family = info.get("method") in POLICY_METHODS and POLICY_METHODS[info["method"]].family  # its own scores
    score_column = influence_result.scores if influence_result is not None and not own_family else chosen.scores
    extra = {k: v for k, v in info.items() if k not in ("trace",)}
    extra["pool"] = workspace.pool
    if exclusion is not None:
        extra.update(exclusion.record())
    return subset.write(directory, indices=chosen.indices, dataset=workspace.train, method=info.get("method", "?"),
                        ratio=ratio, seed=seed, alpha=info.get("alpha"), beta=info.get("beta"), scores=score_column,
                        u=u, inclusion=inclusion, teacher=workspace.teacher_record(), extra=json.loads(
                            json.dumps(json_ready(extra), default=str)))


def subset_directory(workspace: Workspace, method: str, ratio: float, seed: int, *,
                     exclude: list[str] | None = None) -> Path:
    """Where a selection's subset file lives in the store: ``<store>/subsets/<dataset-method-ratio-...>``;
    with an exclusion the name ends in ``-x<first 8 hex of its sha256>`` (names without one are unchanged)."""
    from ifbeta.store import safe_name
    from ifbeta.subsets import catalog

    exclusion = exclusion_of(workspace, exclude)
    suffix = "" if exclusion is None else f"-x{exclusion.sha256[:8]}"
    name = safe_name(f"{Path(workspace.train.name).name}-{method}-r{ratio:g}-s{seed}-p{workspace.pool or 0}-"
                     f"{workspace.teacher.info.sha256[:8]}-{workspace.train.fingerprint[:8]}{suffix}",
                     fallback="subset")
    return catalog.folder(workspace.store) / name


def save_selection(workspace: Workspace, chosen, method: str, ratio: float, seed: int, *,
                   influence_config: InfluenceConfig = InfluenceConfig(), exclude: list[str] | None = None) -> Path:
    """The selection's ``subset_directory``, written once (rewritten only if its indices differ)."""
    from ifbeta.subsets import files as subset

    directory = subset_directory(workspace, method, ratio, seed, exclude=exclude)
    if (directory / "manifest.json").is_file():
        try:
            if np.array_equal(subset.load(directory, workspace.train).indices, chosen.indices):
                return directory
        except subset.SubsetError:
            pass
    result, _ = scores(workspace, influence_config)
    return write_subset(workspace, chosen, directory, ratio=ratio, seed=seed, influence_result=result,
                        exclude=exclude)
