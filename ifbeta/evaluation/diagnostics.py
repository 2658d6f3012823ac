"""Cached diagnostic reports on a workspace: leave-one-out check, (alpha, beta) landscape, transfer check.

Like the steps in ``pipeline``, each goes through the artefact store keyed by its settings and the
keys of its inputs (kinds ``loo``, ``landscapes``, ``transfer``), so the CLI, the app and a server
restart share one result. Every function takes ``compute``: with ``compute=False`` it only peeks and
returns None when the report is not stored yet. Reports are JSON-ready dicts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ifbeta import pipeline
from ifbeta.config import InfluenceConfig, PolicyConfig
from ifbeta.pipeline import Workspace
from ifbeta.progress import OnStep
from ifbeta.store import json_ready, make_key


def _cached(workspace: Workspace, kind: str, settings: dict, inputs: list[str], build, compute: bool) -> dict | None:
    """The stored report for (settings, inputs), built once by ``build() -> dict``; None when peeking a miss."""
    if not compute and not workspace.store.exists(kind, make_key(settings, inputs)):
        return None
    _, meta, _ = workspace.store.get_or_compute(kind, settings, inputs, lambda: ({}, json_ready(build())))
    return meta


# ------------------------------------------------------------------------------------ leave-one-out
def loo_settings(config: InfluenceConfig, samples: int, seed: int = 0) -> dict:
    return {"loo": {"samples": int(samples), "seed": int(seed)}, "influence": config.to_dict()}


def loo_report(workspace: Workspace, config: InfluenceConfig = InfluenceConfig(), *, samples: int = 200,
               seed: int = 0, compute: bool = True, on_step: OnStep | None = None) -> dict | None:
    """Influence against true refits (the proxy family's ``loo_check``) for ``samples`` random pool samples, cached.
    Keys: spearman, slope, sign_agreement, n, predicted, actual, group_*_delta."""
    from ifbeta.influence import families

    def build():
        f = workspace.features
        check = families.family(config.proxy.family).loo_check
        return check(f.features, f.logits, f.labels, config=config, samples=samples, seed=seed, on_step=on_step)

    return _cached(workspace, "loo", loo_settings(config, samples, seed), [workspace.features.key], build, compute)


# ---------------------------------------------------------------------------------------- landscape
def landscape_settings(ratio: float, grid: int, policy_config: PolicyConfig, influence_config: InfluenceConfig
                       ) -> dict:
    c = policy_config
    return {"landscape": {"ratio": float(ratio), "grid": int(grid), "axis": c.axis, "stratify": c.stratify,
                          "seed": c.seed, "folds": c.folds}, "influence": influence_config.to_dict()}


def landscape(workspace: Workspace, ratio: float, *, grid: int = 5, policy_config: PolicyConfig = PolicyConfig(),
              influence_config: InfluenceConfig = InfluenceConfig(), compute: bool = True,
              on_step: OnStep | None = None) -> dict | None:
    """J over a grid x grid geometric (alpha, beta) grid at ``ratio`` (``policy.landscape.landscape``), cached.
    Returns {"alpha": [...], "beta": [...], "J": nested list (rows = alpha), ...}."""
    from ifbeta.policy import axes
    from ifbeta.policy import landscape as policy_landscape

    def build():
        f = workspace.features
        result, _ = pipeline.scores(workspace, influence_config, on_step=on_step)
        values = axes.axis_values(result, policy_config.axis)
        axis = np.geomspace(*policy_landscape.GRID_RANGE, grid)
        return policy_landscape.landscape(f.features, f.logits, f.labels, ratio=ratio, axis_values=values,
                                          alphas=axis, betas=axis, kd=influence_config.proxy.kd,
                                          stratify=policy_config.stratify, seed=policy_config.seed,
                                          folds=policy_config.folds, proxy=influence_config.proxy,
                                          on_step=on_step, device=influence_config.device)

    settings = landscape_settings(ratio, grid, policy_config, influence_config)
    return _cached(workspace, "landscapes", settings, [workspace.features.key], build, compute)


# ----------------------------------------------------------------------------------------- transfer
TRANSFER_VERSION = 2  # of the transfer report's key: see ``transfer_settings``


def transfer_settings(ratio: float, policies: int, epochs: int, seeds: int, policy_config: PolicyConfig,
                      influence_config: InfluenceConfig, *, student: str | None = None, budget: str = "epochs"
                      ) -> dict:
    """The key settings of a transfer check; ``student`` (None = the dataset's default) and ``budget``
    enter only when they differ from the defaults, so a check with the defaults keeps one key.
    ``version`` 2: students paired by batch order too, report with bootstrap and t-intervals (a
    report stored before is computed afresh)."""
    check = {"ratio": float(ratio), "policies": int(policies), "epochs": int(epochs), "seeds": int(seeds),
             "version": TRANSFER_VERSION}
    if student is not None:
        check["student"] = student
    if budget != "epochs":
        check["budget"] = budget
    return {"transfer": check, "policy": policy_config.to_dict(), "influence": influence_config.to_dict()}


def transfer_report(workspace: Workspace, ratio: float, *, policies: int = 3, epochs: int | None = None,
                    seeds: int | None = None, student: str | None = None, budget: str = "epochs",
                    out: str | Path | None = None,
                    policy_config: PolicyConfig = PolicyConfig(), influence_config: InfluenceConfig = InfluenceConfig(),
                    compute: bool = True, on_step: OnStep | None = None) -> dict | None:
    """The transfer check (``transfer.transfer_check``: short KD students at ``policies`` policies x
    ``seeds`` seeds; resumable), its report cached. Keys: trust, verdict, agreement, policies, ...

    epochs None: ``transfer.default_epochs`` of the dataset; seeds None: ``transfer.DEFAULT_SEEDS``
    (the report's trust is ``inconclusive`` when its seeds cannot tell J's ranking from noise).
    student None (or the dataset's default student, the same key): the default. out: the folder of the runs (default <store>/transfer-check);
    where the runs live does not change the report, so it is not part of the key."""
    from ifbeta.evaluation import transfer

    epochs = transfer.default_epochs(workspace.train.name) if epochs is None else epochs
    seeds = transfer.DEFAULT_SEEDS if seeds is None else seeds
    if student is not None and student == _default_student(workspace):
        student = None

    def build():
        return transfer.transfer_check(workspace, ratio=ratio, policies=policies, epochs=epochs,
                                       seeds=tuple(range(seeds)), student=student, budget=budget, out=out,
                                       policy_config=policy_config, influence_config=influence_config,
                                       on_step=on_step)

    settings = transfer_settings(ratio, policies, epochs, seeds, policy_config, influence_config, student=student,
                                 budget=budget)
    inputs = [workspace.features.key, workspace.teacher.info.sha256]
    return _cached(workspace, "transfer", settings, inputs, build, compute)


def _default_student(workspace: Workspace) -> str:
    from ifbeta.models import zoo as models

    return models.default_architectures(workspace.train.name, workspace.train.image_size)[1]
