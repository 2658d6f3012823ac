"""Our influence scores side by side with pyDVL's (an established influence library) on one linear-head problem.

The problem is one cross-fitting split of influence.score: synthetic teacher-like features (the
distribution of ``synthetic`` in bilevel_timing.py), standardised with pool statistics, proxy fitted on
fold 0 (the samples scored) to round-off by proxy.fit, validation loss = mean KD loss on fold 1.
pyDVL gets a float64 torch ``nn.Linear`` holding the same weights and the same KD-aligned loss
(docs/METHOD.md section 2, tau and lam from KDConfig) and its ``regularization`` = mu / n. To make the two
Hessians identical the ridge is uniform here (bias_damping = 1: pyDVL has one scalar regulariser for a
full block); pyDVL's Hessian is of the MEAN loss, ours of the SUM, so H_pydvl = H_ours / n.

pyDVL's ``influences(x_test, y_test, x, y, mode=Up)`` returns the (n_val, n) matrix of
upweighting influences; its mean over the validation rows is the influence on L_V. With
s_i = g_V^T H^{-1} grad l_i (ours: the change of L_V when i is REMOVED) the two should satisfy
pydvl_i = +-n s_i; the sign convention is read off the data and reported, and the slope of
-pydvl / n on s (through the origin) says whether the values agree, not only the ranks.

Timed (single-threaded BLAS and torch, one process, after one warm-up):
- ours: validation gradient + solve (direct | cg | ekfac) + one pass of scores, at the given theta;
- pyDVL: ``fit`` (its Hessian or nothing for CG) + ``influences`` for all (validation, train) pairs.
The proxy fit is common to both and reported separately.

pyDVL is NOT a project dependency: install it only for this benchmark. pyDVL 0.10 pins numpy < 2,
so install it without dependencies and add what its influence module imports:
  pip install --no-deps pydvl==0.10.0
  pip install dask distributed pyDeprecate more-itertools "numcodecs<0.16" "zarr>=3,<4"
Usage: python benchmarks/influence_library.py [--n 10000 --d 64 --c 10] [--cg]
Writes benchmarks/results/influence-library.md; exits 0 with a message when pyDVL is missing.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
import types
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.stats
from bilevel_timing import synthetic  # the same teacher-like features (benchmarks/ is on sys.path)


def kd_loss_torch(kd):
    import torch.nn.functional as F

    def loss(outputs, targets):  # targets (m, C + 1): teacher logits, then the label as a float
        logits, labels = targets[:, :-1], targets[:, -1].long()
        cross_entropy = F.cross_entropy(outputs, labels, reduction="none")
        log_pt = F.log_softmax(logits / kd.tau, dim=1)
        kl = (log_pt.exp() * (log_pt - F.log_softmax(outputs / kd.tau, dim=1))).sum(dim=1)
        return ((1.0 - kd.lam) * cross_entropy + kd.lam * kd.tau**2 * kl).mean()

    return loss


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def agreement(ours, theirs, n, sign):
    """Spearman, Pearson and slope of sign * theirs / n on ours; sign = +1 if pydvl = +n s, -1 if -n s."""
    scaled = sign * theirs / n
    return {"spearman": float(scipy.stats.spearmanr(ours, scaled)[0]),
            "pearson": float(scipy.stats.pearsonr(ours, scaled)[0]),
            "sign": sign, "slope": float(ours @ scaled / (ours @ ours)),
            "max_rel_diff": float(np.abs(scaled - ours).max() / np.abs(ours).max())}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--c", type=int, default=10)
    parser.add_argument("--mu", type=float, default=1.0, help="ridge per 1000 samples (proxy.choose_mu's grid unit)")
    parser.add_argument("--cg", action="store_true",
                        help="also run pyDVL's CgInfluence (slow: block CG over every validation row)")
    parser.add_argument("--batch", type=int, default=1000, help="pyDVL data loader batch size")
    parser.add_argument("--out", default="benchmarks/results/influence-library.md")
    return parser.parse_args()


def import_pydvl():
    """pyDVL's torch influence module (a namespace of what this script uses), or None with a message."""
    try:
        import torch  # noqa: F401
        from pydvl.influence import InfluenceMode
        from pydvl.influence.torch import CgInfluence, DirectInfluence
        from pydvl.influence.torch.functional import hessian
    except ImportError as error:
        print(f"skipped: pyDVL's torch influence module is not importable ({error}); see this script's docstring "
              "for how to install it for the benchmark")
        return None
    import pydvl

    return types.SimpleNamespace(InfluenceMode=InfluenceMode, CgInfluence=CgInfluence, DirectInfluence=DirectInfluence,
                                 hessian=hessian, version=pydvl.__version__)


@dataclass
class Problem:
    """One cross-fitting split: scored fold (x, t, y), validation fold (xv, tv, yv), the fitted proxy."""

    x: np.ndarray
    t: np.ndarray
    y: np.ndarray
    xv: np.ndarray
    tv: np.ndarray
    yv: np.ndarray
    mu: float
    options: dict
    fitted: object
    fit_seconds: float

    @property
    def n(self) -> int:
        return len(self.y)


def make_problem(args, kd) -> Problem:
    """Synthetic pool standardised with pool statistics, fold 0 scored, fold 1 = V, proxy fitted to round-off."""
    from ifbeta.data.streaming import feature_statistics
    from ifbeta.influence import proxy

    features, logits, labels = synthetic(args.n, args.d, args.c)
    mean, std = feature_statistics(features)
    z = (features.astype(np.float64) - mean) / std
    fold = proxy.stratified_folds(labels, 2, 0)
    train, held_out = np.flatnonzero(fold == 0), np.flatnonzero(fold == 1)
    x, t, y = z[train], logits[train].astype(np.float64), labels[train]
    xv, tv, yv = z[held_out], logits[held_out].astype(np.float64), labels[held_out]
    mu = args.mu * len(train) / 1000.0
    options = dict(mu=mu, kd=kd, bias_damping=1.0)
    fitted, fit_seconds = timed(proxy.fit, x, t, y, tolerance=1e-12, **options)
    print(f"fit: {fit_seconds:.2f}s, ||grad|| {fitted.grad_norm:.2e}, {fitted.iterations} iterations", flush=True)
    return Problem(x, t, y, xv, tv, yv, mu, options, fitted, fit_seconds)


def our_scores(problem: Problem, kd) -> tuple[dict, dict]:
    """{solver: scores (n,)} and {solver: seconds} for direct, cg and ekfac, each timed after a warm-up."""
    from ifbeta.influence import objective, solvers
    from ifbeta.influence import scores as influence

    p, theta = problem, problem.fitted.theta
    ours, ours_seconds = {}, {}
    for name in ("direct", "cg", "ekfac"):
        def score_once(solver=name):
            g_val = objective.validation_gradient(theta, p.xv, p.tv, p.yv, kd=kd)
            direction = solvers.SOLVERS[solver](theta, p.x, p.t, p.y, None, g_val, **p.options)
            return influence.influence_scores(theta, direction, p.x, p.t, p.y, kd=kd)
        score_once()  # warm-up
        ours[name], ours_seconds[name] = timed(score_once)
        print(f"ours {name}: {ours_seconds[name]:.3f}s", flush=True)
    return ours, ours_seconds


def torch_problem(problem: Problem, args, kd, batch: int):
    """The fitted proxy as a float64 nn.Linear, the KD loss, (train, validation) tensors and a loader."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    theta = problem.fitted.theta
    model = torch.nn.Linear(args.d, args.c, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(theta[:, :-1]))
        model.bias.copy_(torch.from_numpy(theta[:, -1]))
    model.eval()
    target = lambda logit, label: torch.from_numpy(np.concatenate([logit, label[:, None].astype(np.float64)], 1))  # noqa: E731
    train = torch.from_numpy(problem.x), target(problem.t, problem.y)
    validation = torch.from_numpy(problem.xv), target(problem.tv, problem.yv)
    loader = DataLoader(TensorDataset(*train), batch_size=batch)
    return model, kd_loss_torch(kd), train, validation, loader


def hessian_difference(problem: Problem, args, pydvl_hessian, model, loss, loader) -> float:
    """Max relative entry difference of pyDVL's (mean loss) + mu/n I against ours (sum) / n, in torch's order."""
    from ifbeta.influence import objective

    p, theta = problem, problem.fitted.theta
    theirs_h = pydvl_hessian(model, loss, loader).numpy() + np.eye(theta.size) * p.mu / p.n
    order = np.concatenate([(np.arange(args.c)[:, None] * (args.d + 1) + np.arange(args.d)).ravel(),
                            np.arange(args.c) * (args.d + 1) + args.d])  # weight (C, d) row-major, then bias
    ours_h = objective.hessian(theta, p.x, p.t, p.y, **p.options)[np.ix_(order, order)] / p.n
    hessian_diff = float(np.abs(theirs_h - ours_h).max() / np.abs(ours_h).max())
    print(f"Hessian max relative difference {hessian_diff:.2e}", flush=True)
    return hessian_diff


def library_rows(library, args, problem: Problem, model, loss, train, validation, loader, ours, ours_seconds):
    """One row per (pyDVL method, our solver): agreement statistics and timings."""
    mu, n = problem.mu, problem.n
    libraries = [("DirectInfluence", lambda: library.DirectInfluence(model, loss, regularization=mu / n))]
    if args.cg:
        libraries.append(("CgInfluence", lambda: library.CgInfluence(model, loss, regularization=mu / n, rtol=1e-10,
                                                                     atol=1e-12, solve_simultaneously=True)))
    rows = []
    for name, build in libraries:
        def run(make=build):
            method = make().fit(loader)
            matrix = method.influences(*validation, *train, mode=library.InfluenceMode.Up)  # (n_val, n)
            return matrix.mean(dim=0).numpy()
        run()  # warm-up
        theirs, seconds = timed(run)
        print(f"pyDVL {name}: {seconds:.3f}s", flush=True)
        sign = 1.0 if scipy.stats.pearsonr(ours["direct"], theirs)[0] >= 0 else -1.0  # the convention, read off once
        for ours_name in ("direct", "cg", "ekfac"):
            stats = agreement(ours[ours_name], theirs, n, sign)
            rows.append({"pydvl": name, "pydvl_seconds": seconds, "ours": ours_name,
                         "ours_seconds": ours_seconds[ours_name], "ratio": ours_seconds[ours_name] / seconds, **stats})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def report_lines(args, kd, problem: Problem, pydvl_version: str, torch_version: str, hessian_diff: float,
                 rows: list) -> list[str]:
    mu, n, fitted = problem.mu, problem.n, problem.fitted
    lines = [
        "# Influence scores against pyDVL (same linear-head problem)", "",
        f"pyDVL {pydvl_version}, torch {torch_version}; synthetic teacher-like features N = {args.n} "
        f"(fold 0: n = {n} scored, fold 1: {len(problem.yv)} validation), d = {args.d}, C = {args.c}, "
        f"KD loss tau = {kd.tau}, lam = {kd.lam}, uniform ridge mu = {mu:g} (SUM form; pyDVL regularization "
        f"mu / n = {mu / n:.3g}). Proxy fitted once by proxy.fit ({problem.fit_seconds:.2f} s, ||grad|| = "
        f"{fitted.grad_norm:.1e}) and loaded into a float64 nn.Linear. Hessians agree to {hessian_diff:.1e} "
        "(max relative entry difference).", "",
        "Timed on one process, BLAS and torch single-threaded, after a warm-up. Ours: validation gradient + "
        "solve + one scoring pass. pyDVL: fit + influences(validation, train) (an n_val x n matrix), "
        "then its mean over validation rows. Slope: least squares of (sign) pyDVL / n on ours through the "
        "origin (1 = the values agree); sign +1: pyDVL's Up influence = +n x our removal score s_i (-1: -n s_i).",
        "", "| ours | pyDVL | Spearman | Pearson | slope | max rel. diff | sign | ours (s) | pyDVL (s) | ours / pyDVL |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['ours']} | {r['pydvl']} | {r['spearman']:.4f} | {r['pearson']:.4f} | {r['slope']:.4f} "
              f"| {r['max_rel_diff']:.1e} | {r['sign']:+.0f} | {r['ours_seconds']:.3f} | {r['pydvl_seconds']:.2f} "
              f"| {r['ratio']:.3f} |" for r in rows]
    return lines


def main() -> None:
    args = parse_args()
    library = import_pydvl()
    if library is None:
        return
    import torch

    from ifbeta.config import KDConfig
    from ifbeta.threads import limit_blas_threads

    limit_blas_threads()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("pydvl").setLevel(logging.ERROR)
    kd = KDConfig()
    problem = make_problem(args, kd)
    ours, ours_seconds = our_scores(problem, kd)
    model, loss, train, validation, loader = torch_problem(problem, args, kd, args.batch)
    hessian_diff = hessian_difference(problem, args, library.hessian, model, loss, loader)
    rows = library_rows(library, args, problem, model, loss, train, validation, loader, ours, ours_seconds)
    lines = report_lines(args, kd, problem, library.version, torch.__version__, hessian_diff, rows)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
