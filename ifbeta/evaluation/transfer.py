"""The transfer check (docs/METHOD.md section 5, point 3): does the proxy's J predict the real student here?

J (the proxy's validation loss of a policy) is only a proxy. On the user's own data, train a few
short real KD students on subsets drawn from several policies and compare:

- policies: ``policies - 1`` points evenly spaced along the trajectory of the J-only optimisation
  (shrinkage 0, so it actually moves away from the uniform start), the final default (shrunk)
  learned policy, and uniform (alpha = beta = 1, stratified random pruning); optional extra points.
- seeds are paired across policies. Seed s (1) draws every policy's subset with seed s, (2)
  initialises every policy's student with seed s (bitwise the same weights: ``torch.manual_seed(s)``
  right before the student is built), and (3) orders its batches by one shuffle of the whole pool
  per epoch, drawn from (s, epoch) (``distill.run(order="pool")``), so two policies' students visit
  the samples their subsets share in the same relative order. What is not paired: which samples
  fill the rest of each batch (the subsets differ), hence batch boundaries, and the augmentation of
  a given sample (drawn per batch position; digits and small grey images are not augmented).
- ``spearman`` = Spearman(J, mean student accuracy) over the policies. Lower J is better, so a
  useful proxy gives a strongly NEGATIVE value; ``agreement`` = -spearman (1 = J ranks the policies
  exactly as the students do, 0 = no relation, < 0 = J points the wrong way). Its 95% interval
  resamples the seeds (``transfer_statistics.bootstrap_spearman``).
- ``learned_minus_uniform`` = mean over seeds of acc(learned) - acc(uniform) (fractions, paired),
  with its 95% t-interval over seeds.
- the verdict is ``inconclusive`` whenever the agreement interval holds 0: with the seeds trained,
  J's ranking cannot be told from seed noise.

Default seeds (``DEFAULT_SEEDS`` = 8) and ``MIN_SEEDS`` = 6, from ``benchmarks/results/transfer-power.md``
(digits, ratio 0.5, 6 policies, 10 epochs, 32 seeds trained, 200 draws of S of them per S). There the
policies' mean accuracies differ by under 1 point while one student's seed sd is about 3.3 points, so
no number of seeds below 32 should find an effect. With 2 seeds (the old default) the seed bootstrap
has 3 distinct resamples, its interval is far too narrow (it held the 32-seed Spearman in 45% of
draws) and excluded 0 in 48% of the draws (27% with 3 seeds, 15% with 4): false alarms. With 6
seeds 7% did, with 8 5% (the nominal rate), and at 8 the interval held the 32-seed value in 83% of
draws. 8 seeds also narrow learned - uniform's t-interval from about 25 points wide (2 seeds) to
3.4 (16 seeds: 2.2). More seeds did not narrow the Spearman interval there: with no real effect its
width stays near 1.3 (of 2), which is the honest answer.

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
from ifbeta.evaluation import transfer_statistics as stats
from ifbeta.models import zoo as models
from ifbeta.pipeline import Workspace
from ifbeta.progress import OnStep
from ifbeta.store import json_ready

log = logging.getLogger(__name__)

__all__ = ["transfer_check", "default_epochs", "trajectory_steps", "policy_effect", "summarise", "verdict",
           "TRUST_AGREEMENT", "DEFAULT_SEEDS", "ORDER"]

TRUST_AGREEMENT = 0.6  # agreement (= -Spearman) at or above this, its interval above 0: trust J (below: weak)
DEFAULT_SEEDS = 8  # paired seeds of a check unless told: see the module docstring and transfer-power.md
MIN_SEEDS = 6  # fewer seeds: inconclusive whatever the interval (too few distinct resamples; transfer-power.md)
ORDER = "pool"  # the students' batch order (distill.ORDERS): one pool shuffle per seed and epoch, shared
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
                   seeds=tuple(range(DEFAULT_SEEDS)), student: str | None = None, out: str | Path | None = None,
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
    accuracies do not vary) with ``spearman_interval`` ([low, high], 95% seed bootstrap; None with
    one seed), ``agreement`` (= -spearman) and ``agreement_interval``, ``learned_minus_uniform``
    (mean paired difference, fraction; > 0 = the learned policy beat uniform) with
    ``learned_minus_uniform_interval`` (95% t-interval; None with one seed), ``..._std`` and
    ``..._per_seed``, ``learned_vs_uniform`` (better | worse | inconclusive: where that interval
    lies), ``policy_effect_p`` (p-value that the policies' students differ at all, seeds as blocks;
    None with one seed), ``bootstrap`` (resamples, seed, confidence), ``trust`` (yes | weak | no |
    inconclusive) and a one-line ``verdict``; also ratio, k, epochs, budget, student, seeds, out,
    seconds.
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
    report = summarise(candidates, seeds)
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
                               val_fraction=config.val_fraction, mu=mu, proxy=influence_config.proxy,
                               device=influence_config.device)
    return float(grid["J"][0][0])


def _train(workspace, candidate, seed, *, ratio, epochs, budget, student, out, config, influence_config, on_step,
           position) -> dict:
    """Draw the candidate's subset with ``seed`` and distil a student initialised with ``seed`` whose
    batches follow the pool shuffle of ``seed`` (``ORDER``)."""
    options = {"alpha": candidate["alpha"], "beta": candidate["beta"], "axis": config.axis,
               "stratify": config.stratify}
    chosen = pipeline.choose(workspace, "ifbeta-fixed", ratio, seed=seed, options=options,
                             influence_config=influence_config)
    request = {"indices": hashlib.sha256(np.ascontiguousarray(chosen.indices, dtype=np.int64).tobytes()).hexdigest(),
               "seed": seed, "student": student, "epochs": epochs, "budget": budget,
               "teacher": workspace.teacher_record(), "fingerprint": workspace.train.fingerprint,
               "pool": workspace.pool, "order": ORDER}
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
                          budget=budget, seed=seed, on_step=forward, order=ORDER)
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


def summarise(candidates: list[dict], seeds: list[int], *, resamples: int = stats.RESAMPLES,
              bootstrap_seed: int = stats.BOOTSTRAP_SEED) -> dict:
    """The report's statistics from the candidates (each with ``J`` and ``accuracies``, one per seed in
    ``seeds`` order; labels ``learned`` and ``uniform`` among them): Spearman and its seed-bootstrap
    interval, learned - uniform with its t-interval, the policy effect, trust and verdict."""
    by_label = {c["label"]: c for c in candidates}
    J = [c["J"] for c in candidates]
    table = np.array([c["accuracies"] for c in candidates], dtype=np.float64)  # (P, S)
    spearman = _spearman(J, table.mean(axis=1))
    interval = None if spearman is None else stats.bootstrap_spearman(J, table, resamples=resamples,
                                                                        seed=bootstrap_seed)
    agreement_interval = None if interval is None else [-interval[1], -interval[0]]
    paired = stats.paired_difference(by_label["learned"]["accuracies"], by_label["uniform"]["accuracies"])
    difference_interval = None if paired.low is None else [paired.low, paired.high]
    report = {
        "policies": candidates,
        "spearman": spearman,
        "spearman_interval": None if interval is None else list(interval),
        "agreement": None if spearman is None else -spearman,
        "agreement_interval": agreement_interval,
        "learned_minus_uniform": paired.mean,
        "learned_minus_uniform_interval": difference_interval,
        "learned_minus_uniform_std": paired.std if paired.n > 1 else None,
        "learned_minus_uniform_per_seed": list(paired.differences),
        "learned_vs_uniform": {"above": "better", "below": "worse"}.get(stats.direction(difference_interval),
                                                                         "inconclusive"),
        "learned": {"alpha": by_label["learned"]["alpha"], "beta": by_label["learned"]["beta"]},
        "policy_effect_p": policy_effect(table),
        "bootstrap": {"resamples": int(resamples), "seed": int(bootstrap_seed), "confidence": stats.CONFIDENCE},
    }
    report["trust"], report["verdict"] = verdict(report["agreement"], agreement_interval, paired.mean,
                                                 difference_interval, policies=len(candidates), seeds=len(seeds),
                                                 policy_effect_p=report["policy_effect_p"])
    return report


def _versus(difference: float, interval, seeds: int) -> str:
    """'learned - uniform +1.2 points (95% interval [-0.4, +2.8] over 8 paired seeds: within seed noise)'."""
    shown = f"learned - uniform {100 * difference:+.1f} points"
    if interval is None:
        return f"{shown} (one seed: no interval)"
    where = {"above": "the learned policy beat uniform", "below": "the learned policy lost to uniform"}.get(
        stats.direction(interval), "within seed noise")
    return (f"{shown} ({100 * stats.CONFIDENCE:.0f}% interval [{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}] "
            f"over {seeds} paired seeds: {where})")


def verdict(agreement: float | None, agreement_interval, difference: float, difference_interval, *, policies: int,
            seeds: int, policy_effect_p: float | None = None) -> tuple[str, str]:
    """(trust, one line for the user); trust is yes | weak | no | inconclusive.

    agreement = -Spearman(J, accuracy) (> 0: J agrees) with its seed-bootstrap interval (low, high)
    (None: fewer than two seeds); difference = mean paired acc(learned) - acc(uniform) (fraction) with
    its t-interval. Inconclusive whenever the agreement interval holds 0 (J's ranking cannot be told
    from seed noise), or there is no interval, or ``seeds`` < ``MIN_SEEDS`` (with fewer seeds the
    bootstrap has too few distinct resamples and its interval is too narrow), or ``policy_effect_p``
    >= ``NOISE_P``. Otherwise yes
    (agreement >= ``TRUST_AGREEMENT``), weak (J agrees, less strongly) or no (J points the wrong way).
    The learned-versus-uniform advice follows the difference only where its interval excludes 0."""
    versus = _versus(difference, difference_interval, seeds)
    if agreement is None:
        return "inconclusive", (f"Inconclusive: J or the student accuracy did not vary over the {policies} policies; "
                                f"{versus}. Try more epochs or seeds.")
    measured = f"agreement {agreement:+.2f} = -Spearman(J, accuracy) over {policies} policies"
    if agreement_interval is None or seeds < MIN_SEEDS:
        return "inconclusive", (f"Inconclusive: {seeds} seed{'s' if seeds > 1 else ''} cannot tell J's ranking from "
                                f"seed noise ({measured}; a verdict needs {MIN_SEEDS} seeds at least); {versus}. "
                                f"Train {DEFAULT_SEEDS} seeds.")
    measured += (f", {100 * stats.CONFIDENCE:.0f}% seed-bootstrap interval [{agreement_interval[0]:+.2f}, "
                 f"{agreement_interval[1]:+.2f}]")
    if not stats.excludes_zero(agreement_interval):
        return "inconclusive", (f"Inconclusive: J's ranking cannot be told from seed noise ({measured}, which holds "
                                f"0; {seeds} seeds); {versus}. Try more seeds.")
    if policy_effect_p is not None and policy_effect_p >= NOISE_P:
        return "inconclusive", (f"Inconclusive: the students differ across the {policies} policies no more than "
                                f"across seeds (p = {policy_effect_p:.2f}; {measured}); {versus}. "
                                f"Try more epochs or seeds.")
    side = stats.direction(difference_interval)
    if agreement_interval[1] < 0:
        return "no", (f"Do not trust the proxy on this data: J points the wrong way ({measured}); {versus}; "
                      f"prune uniformly (stratified random) instead.")
    if agreement >= TRUST_AGREEMENT:
        if side == "above":
            return "yes", (f"Trust the proxy on this data: lower J went with higher student accuracy ({measured}); "
                           f"{versus}.")
        advice = "prefer uniform" if side == "below" else "confirm with more seeds before preferring the learned policy"
        return "yes", f"J ranks policies well here ({measured}), but {versus}; {advice}."
    advice = {"above": "the learned policy is a reasonable choice", "below": "prefer uniform (random) pruning"}.get(
        side, "uniform (random) pruning is the safe choice")
    return "weak", f"Trust the proxy only partly: J is a weak guide here ({measured}); {versus}; {advice}."
