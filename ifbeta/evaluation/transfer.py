"""The transfer check (docs/METHOD.md section 5, point 3): does the proxy's J predict the real student here?

J (the proxy's validation loss of a policy) is only a proxy. On the user's own data, train a few
short real KD students on subsets drawn from several policies and compare:

- policies: ``policies - 1`` points evenly spaced along the trajectory of the J-only optimisation
  (shrinkage 0, so it actually moves away from the uniform start), the final default (shrunk)
  learned policy, and uniform (alpha = beta = 1, stratified random pruning); optional extra points.
- every policy is trained with the same seeds; seed s draws the policy's subset with seed s and
  initialises the student with seed s, so policies are compared paired by seed.
- ``spearman`` = Spearman(J, mean student accuracy) over the policies. Lower J is better, so a
  useful proxy gives a strongly NEGATIVE value; ``agreement`` = -spearman (1 = J ranks the policies
  exactly as the students do, 0 = no relation, < 0 = J points the wrong way).
- ``learned_minus_uniform`` = mean over seeds of acc(learned) - acc(uniform) (fractions, paired).

Runs are ordinary ``distill`` run directories under ``out`` (default ``<store>/transfer-check``),
named by their content, so an interrupted check resumes and a repeated one costs nothing.
Single process (not under torchrun).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.stats

from ifbeta import pipeline
from ifbeta.config import InfluenceConfig, PolicyConfig
from ifbeta.distill import student as distill
from ifbeta.models import zoo as models
from ifbeta.pipeline import Workspace
from ifbeta.progress import OnStep
from ifbeta.store import json_ready

log = logging.getLogger(__name__)

__all__ = ["transfer_check", "default_epochs", "trajectory_steps", "policy_effect", "verdict", "TRUST_AGREEMENT",
           "WEAK_AGREEMENT"]

TRUST_AGREEMENT = 0.6  # agreement (= -Spearman) at or above this: trust J to rank policies on this data
WEAK_AGREEMENT = 0.2  # between the two: J is a weak guide; below: do not trust it
DEFAULT_EPOCH_FRACTION = 3  # default student epochs = distill's default for the dataset // this ("short")
NOISE_P = 0.5  # policy_effect p-value at or above this: the policies' differences look like seed noise
SAME_POLICY = 1e-6  # |log alpha| and |log beta| differences below this are the same policy


def default_epochs(dataset: str) -> int:
    """Student epochs of a "short" transfer-check run on ``dataset``: distill's default for it
    // ``DEFAULT_EPOCH_FRACTION`` (a third), at least 1."""
    return max(1, distill.STUDENT_EPOCHS.get(dataset, distill.DEFAULT_STUDENT_EPOCHS) // DEFAULT_EPOCH_FRACTION)


def trajectory_steps(trace: list[dict], count: int) -> list[int]:
    """Indices of ``count`` records evenly spaced along ``trace`` after the start (step 0 is the
    initial policy, uniform by default), ending at the last record; fewer when the trace is short."""
    last = len(trace) - 1
    if count < 1 or last < 1:
        return []
    return sorted({int(round(x)) for x in np.linspace(last / count, last, count)} - {0})


def transfer_check(workspace: Workspace, *, ratio: float, policies: int = 5, epochs: int | None = None,
                   seeds=(0, 1), student: str | None = None, out: str | Path | None = None,
                   on_step: OnStep | None = None, budget: str = "epochs", points=(),
                   policy_config: PolicyConfig = PolicyConfig(),
                   influence_config: InfluenceConfig = InfluenceConfig()) -> dict:
    """Train real KD students at several policies and measure whether J predicts their accuracy.

    ratio: fraction pruned, in (0, 1). policies (>= 2): learned policies tried, i.e. ``policies - 1``
    points of the J-only trajectory plus the final default learned policy; uniform is added on top.
    epochs: student epochs (None: ``default_epochs``, a third of distill's). seeds: paired seeds.
    points: extra (alpha, beta) policies (labels ``point-0``, ...). ``on_step(step, info)`` gets the
    policy optimisation's records, every run's start/finish (event ``run`` / ``run-finished``) and
    the students' batch and epoch events (with ``label``, ``seed``, ``run``, ``runs``).

    Returns a JSON-ready dict: ``policies`` (list of {label, alpha, beta, J, accuracies (one per
    seed, last-epoch test top-1 in [0, 1]), mean_accuracy, std_accuracy, step, runs}), ``spearman``
    (Spearman(J, mean accuracy) over the policies; negative = J agrees; None when J or the
    accuracies do not vary), ``agreement`` (= -spearman), ``learned_minus_uniform`` (mean paired
    difference, fraction; > 0 = the learned policy beat uniform) with ``learned_minus_uniform_std``
    and ``..._per_seed``, ``policy_effect_p`` (p-value that the policies' students differ at all,
    seeds as blocks; None with one seed), ``trust`` (yes | weak | no | inconclusive) and a one-line
    ``verdict``; also ratio, k, epochs, budget, student, seeds, out, seconds.
    """
    seeds = _check(ratio, policies, seeds, epochs, budget)
    began = time.time()
    student = student or models.default_architectures(workspace.train.name, workspace.train.image_size)[1]
    if student not in models.ARCHITECTURES:
        raise ValueError(f"unknown student {student!r}; choose one of {', '.join(models.ARCHITECTURES)}")
    epochs = epochs or default_epochs(workspace.train.name)
    out = Path(out) if out is not None else workspace.store.root / "transfer-check"
    candidates = _policies(workspace, ratio, policies, points, policy_config, influence_config, on_step)
    runs = [(candidate, seed) for seed in seeds for candidate in candidates]
    for number, (candidate, seed) in enumerate(runs):
        metrics = _train(workspace, candidate, seed, ratio=ratio, epochs=epochs, budget=budget, student=student,
                         out=out, config=policy_config, influence_config=influence_config, on_step=on_step,
                         position=(number, len(runs)))
        candidate["accuracies"].append(float(metrics["test_top1"]))
        candidate["runs"].append(metrics["out"])
    for candidate in candidates:
        accuracies = np.asarray(candidate["accuracies"])
        candidate["mean_accuracy"] = float(accuracies.mean())
        candidate["std_accuracy"] = float(accuracies.std(ddof=1)) if len(accuracies) > 1 else 0.0
    report = _summarise(candidates, seeds)
    report.update(dataset=workspace.train.name, ratio=float(ratio), k=candidates[0]["k"], epochs=int(epochs),
                  budget=budget, student=student, seeds=list(seeds), out=str(out.resolve()),
                  seconds=time.time() - began)
    return json_ready(report, finite=True)


# ----------------------------------------------------------------------------- steps


def _check(ratio, policies, seeds, epochs, budget) -> list[int]:
    if not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"ratio must lie strictly between 0 and 1 (the fraction pruned), got {ratio}")
    if int(policies) < 2:
        raise ValueError(f"policies must be at least 2 (a Spearman needs several points), got {policies}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
    if epochs is not None and int(epochs) < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if budget not in distill.BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; use one of {', '.join(distill.BUDGETS)}")
    return seeds


def _entry(label: str, alpha: float, beta: float, J: float, step, k: int) -> dict:
    return {"label": label, "alpha": float(alpha), "beta": float(beta), "J": float(J), "step": step, "k": int(k),
            "accuracies": [], "runs": []}


def _same(record: dict, alpha: float, beta: float) -> bool:
    return (abs(math.log(record["alpha"]) - math.log(alpha)) < SAME_POLICY
            and abs(math.log(record["beta"]) - math.log(beta)) < SAME_POLICY)


def _policies(workspace, ratio, count, points, config, influence_config, on_step) -> list[dict]:
    """[uniform, trajectory points..., learned, extra points...] with their J (lower is better)."""
    learned = pipeline.policies(workspace, [ratio], config, influence_config=influence_config, on_step=on_step)[0]
    j_only = pipeline.policies(workspace, [ratio], replace(config, shrinkage=0.0),
                               influence_config=influence_config, on_step=on_step)[0]
    k = learned.k

    def j_of(alpha, beta, *traces):
        for trace in traces:
            for record in trace:
                if _same(record, alpha, beta):
                    return record["J"]
        return _evaluate_j(workspace, ratio, alpha, beta, learned.mu, config, influence_config)

    chosen = [_entry("uniform", 1.0, 1.0, j_of(1.0, 1.0, j_only.trace, learned.trace), None, k)]
    for index in trajectory_steps(j_only.trace, count - 1):
        record = j_only.trace[index]
        if any(_same(c, record["alpha"], record["beta"]) for c in chosen):
            continue  # the trajectory stalled: the same policy twice adds no information
        chosen.append(_entry(f"step-{record['step']}", record["alpha"], record["beta"], record["J"],
                             int(record["step"]), k))
    chosen.append(_entry("learned", learned.alpha, learned.beta,
                         j_of(learned.alpha, learned.beta, learned.trace, j_only.trace), None, k))
    for number, (alpha, beta) in enumerate(points):
        chosen.append(_entry(f"point-{number}", alpha, beta, j_of(float(alpha), float(beta), j_only.trace,
                                                                  learned.trace), None, k))
    log.info("transfer check r=%.2f: %s", ratio, ", ".join(f"{c['label']} (a {c['alpha']:.3g}, b {c['beta']:.3g}, "
                                                           f"J {c['J']:.5g})" for c in chosen))
    return chosen


def _evaluate_j(workspace, ratio, alpha, beta, mu, config, influence_config) -> float:
    """J of one (alpha, beta) on the same problem the policy optimisation solved (same split and mu)."""
    from ifbeta.policy import axes, landscape

    scores, _ = pipeline.scores(workspace, influence_config)
    values = axes.axis_values(scores, config.axis)
    features = workspace.features
    grid = landscape.landscape(features.features, features.logits, features.labels, ratio=ratio,
                               axis_values=values, alphas=[alpha], betas=[beta], kd=influence_config.proxy.kd,
                               stratify=config.stratify, seed=config.seed, folds=config.folds,
                               val_fraction=config.val_fraction, mu=mu, proxy=influence_config.proxy)
    return float(grid["J"][0][0])


def _train(workspace, candidate, seed, *, ratio, epochs, budget, student, out, config, influence_config, on_step,
           position) -> dict:
    """Draw the candidate's subset with ``seed`` and distil a student initialised with ``seed``."""
    options = {"alpha": candidate["alpha"], "beta": candidate["beta"], "axis": config.axis,
               "stratify": config.stratify}
    chosen = pipeline.choose(workspace, "ifbeta-fixed", ratio, seed=seed, options=options,
                             influence_config=influence_config)
    request = {"indices": hashlib.sha256(np.ascontiguousarray(chosen.indices, dtype=np.int64).tobytes()).hexdigest(),
               "seed": seed, "student": student, "epochs": epochs, "budget": budget,
               "teacher": workspace.teacher_record(), "fingerprint": workspace.train.fingerprint,
               "pool": workspace.pool}
    digest = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:10]
    directory = out / f"{candidate['label']}-s{seed}-{digest}"
    result, _ = pipeline.scores(workspace, influence_config)
    subset = pipeline.write_subset(workspace, chosen, directory / "subset", ratio=ratio, seed=seed,
                                   influence_result=result)
    number, total = position
    where = {"label": candidate["label"], "seed": seed, "run": number, "runs": total}
    if on_step:
        on_step(number, {"event": "run", **where, "alpha": candidate["alpha"], "beta": candidate["beta"]})

    def forward(step: int, info: dict) -> None:
        if on_step:
            on_step(step, {**info, **where})

    metrics = distill.run(workspace, subset=subset, out=directory / "run", student=student, epochs=epochs,
                          budget=budget, seed=seed, on_step=forward)
    if on_step:
        on_step(number + 1, {"event": "run-finished", **where, "test_top1": metrics["test_top1"]})
    return metrics


# ----------------------------------------------------------------------------- summary


def _spearman(x, y) -> float | None:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(scipy.stats.spearmanr(x, y)[0])


def policy_effect(accuracies) -> float | None:
    """p-value that the policies' students differ at all, seeds as blocks (two-way ANOVA, no
    interaction): accuracies (policies, seeds). None with one seed or no residual variation."""
    table = np.asarray(accuracies, dtype=np.float64)
    policies, seeds = table.shape
    if policies < 2 or seeds < 2:
        return None
    residual = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
    residual_dof = (policies - 1) * (seeds - 1)
    residual_ms = float((residual ** 2).sum()) / residual_dof
    policy_ms = seeds * float(table.mean(axis=1).var(ddof=1))
    if residual_ms <= 1e-18:
        return None if policy_ms <= 1e-18 else 0.0
    return float(scipy.stats.f.sf(policy_ms / residual_ms, policies - 1, residual_dof))


def _summarise(candidates: list[dict], seeds: list[int]) -> dict:
    by_label = {c["label"]: c for c in candidates}
    spearman = _spearman([c["J"] for c in candidates], [c["mean_accuracy"] for c in candidates])
    differences = np.subtract(by_label["learned"]["accuracies"], by_label["uniform"]["accuracies"])  # paired by seed
    report = {
        "policies": candidates,
        "spearman": spearman,
        "agreement": None if spearman is None else -spearman,
        "learned_minus_uniform": float(differences.mean()),
        "learned_minus_uniform_std": float(differences.std(ddof=1)) if len(differences) > 1 else None,
        "learned_minus_uniform_per_seed": differences.tolist(),
        "learned": {"alpha": by_label["learned"]["alpha"], "beta": by_label["learned"]["beta"]},
        "policy_effect_p": policy_effect([c["accuracies"] for c in candidates]),
    }
    report["trust"], report["verdict"] = verdict(report["agreement"], report["learned_minus_uniform"],
                                                 report["learned_minus_uniform_std"], policies=len(candidates),
                                                 seeds=len(seeds), policy_effect_p=report["policy_effect_p"])
    return report


def verdict(agreement: float | None, difference: float, difference_std: float | None, *, policies: int,
            seeds: int, policy_effect_p: float | None = None) -> tuple[str, str]:
    """(trust, one line for the user). agreement = -Spearman(J, accuracy); difference = mean paired
    acc(learned) - acc(uniform) as a fraction; policy_effect_p: see ``policy_effect`` (at or above
    ``NOISE_P`` the students differ no more across policies than across seeds: inconclusive)."""
    spread = f", sd {100 * difference_std:.1f}" if difference_std is not None else ""
    versus = (f"the learned policy {'beat' if difference > 0 else 'lost to' if difference < 0 else 'tied with'} "
              f"uniform by {100 * abs(difference):.1f} points ({seeds} paired seed{'s' if seeds > 1 else ''}{spread})")
    if agreement is None:
        return "inconclusive", (f"Inconclusive: J or the student accuracy did not vary over the {policies} policies; "
                                f"{versus}. Try more epochs or seeds.")
    if policy_effect_p is not None and policy_effect_p >= NOISE_P:
        return "inconclusive", (f"Inconclusive: the students differ across the {policies} policies no more than "
                                f"across seeds (p = {policy_effect_p:.2f}; Spearman {-agreement:+.2f}); {versus}. "
                                f"Try more epochs or seeds.")
    measured = f"agreement {agreement:+.2f} = -Spearman(J, accuracy) over {policies} policies"
    if agreement >= TRUST_AGREEMENT:
        if difference >= 0:
            return "yes", (f"Trust the proxy on this data: lower J went with higher student accuracy "
                           f"({measured}); {versus}.")
        return "yes", (f"J ranks policies well here ({measured}), but {versus}; "
                       f"confirm with more seeds before preferring the learned policy.")
    if agreement >= WEAK_AGREEMENT:
        advice = "the learned policy is a reasonable choice" if difference > 0 else "prefer uniform (random) pruning"
        return "weak", f"Trust the proxy only partly: J is a weak guide here ({measured}); {versus}; {advice}."
    return "no", (f"Do not trust the proxy on this data: J does not predict the student ({measured}); {versus}; "
                  f"prune uniformly (stratified random) instead.")


