"""The linear proxy's math in torch (CPU) against the previous numpy float64 implementation, side by side.

For each size N x d x C and solver (``ifbeta.influence.solvers.SOLVERS``: direct, cg, ekfac) the same
problem runs twice, once per backend, each in a fresh process (numpy reference first, then torch, so the
two see the same load): fit theta* on N samples (``proxy.fit``, method auto: Newton-CG with the EKFAC
preconditioner at these sizes), solve v = H^-1 g_V for the validation gradient with the solver, and score
s_i = <v, grad l_i> for the N samples. Recorded per run: seconds of the fit, the solve and the scores;
ru_maxrss after the imports (numpy, torch and the package: the baseline), after the data is generated,
and at the end (the peak). The parent then compares the two backends' scores (Spearman, max |difference|
over max |s|) and thetas.

Problem (seeded, the same in both processes): a Gaussian mixture (C class centres drawn N(0, 2^2 I) in
d dimensions, unit-variance noise, uniform labels), teacher logits from a random linear head
(4 phi W / sqrt(d), W standard normal (d, C)) plus a margin of 3 on the sample's own class, a separate
validation draw of N / 5 samples, features standardised with the training statistics and handed to both
backends as one float64 array; fixed mu = 1 (SUM units), tau = 4, lam = 0.9, fit tolerance 1e-8.
BLAS and torch single-threaded (``limit_blas_threads`` and ``torch.set_num_threads(1)``).

    python benchmarks/proxy_backend.py [--sizes 50000x64x10 50000x256x100] [--solvers direct cg ekfac]

Writes benchmarks/results/proxy-backend.md (and --json raw reports). ``direct`` is not run where its dense
Hessian is out of reach (``direct_skipped``), with the arithmetic.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
import numpy as np
import torch
from ifbeta.config import KDConfig
from ifbeta.threads import limit_blas_threads

limit_blas_threads()
torch.set_num_threads(1)
backend, n, d, c, solver, folder = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
if backend == "numpy":
    sys.path.insert(0, folder + "/reference")  # written by extract_reference
    from proxy_numpy_reference import objective, proxy, solvers
else:
    from ifbeta.influence import objective, proxy, scores, solvers, tensors


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


baseline = rss_mib()
rng = np.random.default_rng(0)
centres = rng.normal(size=(c, d)) * 2.0
head = rng.normal(size=(d, c)) / np.sqrt(d) * 4.0


def draw(count):
    labels = rng.integers(0, c, count)
    phi = centres[labels] + rng.normal(size=(count, d))
    logits = phi @ head
    logits[np.arange(count), labels] += 3.0
    return phi, logits, labels


phi, logits, labels = draw(n)
val_phi, val_logits, val_labels = draw(n // 5)
mean, std = phi.mean(axis=0), phi.std(axis=0)
x, xv = (phi - mean) / std, (val_phi - mean) / std
del phi, val_phi
after_data = rss_mib()
KD, MU = KDConfig(tau=4.0, lam=0.9), 1.0
options = dict(mu=MU, kd=KD, bias_damping=1e-3)
start = time.perf_counter()
fitted = proxy.fit(x, logits, labels, **options, tolerance=1e-8)
fit_seconds = time.perf_counter() - start
theta = fitted.theta
start = time.perf_counter()
g_val = objective.validation_gradient(theta, xv, val_logits, val_labels, kd=KD)
direction = solvers.SOLVERS[solver](theta, x, logits, labels, None, g_val, **options)
solve_seconds = time.perf_counter() - start
start = time.perf_counter()
if backend == "numpy":
    parts = []
    for xs, ts, ys, _ in objective.chunks(x, logits, labels, None, objective.CHUNK_SIZE):
        residual = objective.chunk_residual(objective.output_heads(theta, xs, ts, KD), ys, KD)  # (m, C)
        parts.append((residual * (xs @ direction.T)).sum(axis=1))
    result = np.concatenate(parts)
else:
    result = tensors.to_numpy(scores.influence_scores(theta, direction, x, logits, labels, kd=KD))
score_seconds = time.perf_counter() - start
np.save(f"{folder}/scores.npy", np.asarray(result, np.float64))
np.save(f"{folder}/theta.npy", tensors.to_numpy(theta) if backend == "torch" else np.asarray(theta))
print(json.dumps({"fit_seconds": fit_seconds, "solve_seconds": solve_seconds, "score_seconds": score_seconds,
                  "baseline_rss_mib": baseline, "data_rss_mib": after_data, "peak_rss_mib": rss_mib(),
                  "fit_iterations": fitted.iterations, "fit_products": fitted.products,
                  "grad_norm": float(fitted.grad_norm), "converged": bool(fitted.converged)}))
"""

BACKENDS = ("numpy", "torch")
DIRECT_LIMIT = 8000  # C(d+1) above which direct is not run (the package's own bound, solvers.py docstring)


def direct_skipped(n: int, d: int, c: int) -> str | None:
    """Why ``direct`` is not run at this size, or None."""
    size = c * (d + 1)
    if size <= DIRECT_LIMIT:
        return None
    return (f"not run (either backend): C(d+1) = {size:,} > {DIRECT_LIMIT:,}; the dense Hessian alone is "
            f"{8 * size**2 / 2**30:.1f} GiB (float64) and building it costs N (C(d+1))^2 = {n * size**2:.1e} "
            f"multiply-adds, ~{n * size**2 / 2e10 / 60:.0f} min at 20 GFLOP/s on one core, plus a {size:,}^3 / 3 "
            f"Cholesky; well over 5 minutes for the numpy reference")


REFERENCE_COMMIT = "4797431"  # the last commit with the numpy float64 proxy in ifbeta/influence/
_RELATIVE = {"from ifbeta.influence import solvers": "from . import solvers",
             "from ifbeta.influence import objective": "from . import objective",
             "from ifbeta.influence.objective import (": "from .objective import ("}


def extract_reference(folder: str | Path) -> Path:
    """The previous numpy implementation (objective.py, proxy.py, solvers.py at REFERENCE_COMMIT), read
    from git into ``folder``/reference/proxy_numpy_reference with its imports of each other made relative:
    the package keeps one implementation, the benchmark reads the old one from history."""
    package = Path(folder) / "reference" / "proxy_numpy_reference"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    for name in ("objective", "proxy", "solvers"):
        shown = subprocess.run(["git", "show", f"{REFERENCE_COMMIT}:ifbeta/influence/{name}.py"], capture_output=True,
                               text=True, cwd=ROOT)
        if shown.returncode != 0:
            sys.exit(f"the numpy reference needs the git history (commit {REFERENCE_COMMIT}): {shown.stderr.strip()}")
        source = shown.stdout
        for absolute, relative in _RELATIVE.items():
            source = source.replace(absolute, relative)
        (package / f"{name}.py").write_text(source)
    return package


def run_one(backend: str, n: int, d: int, c: int, solver: str, timeout: float) -> dict:
    """One fresh process; its report plus the scores and theta it wrote."""
    with tempfile.TemporaryDirectory() as folder:
        if backend == "numpy":
            extract_reference(folder)
        try:
            done = subprocess.run([sys.executable, "-c", CHILD, backend, str(n), str(d), str(c), solver, folder],
                                  capture_output=True, text=True, cwd=ROOT, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"stopped after {timeout:.0f} s"}
        if done.returncode != 0:
            return {"error": "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:160]}
        report = json.loads(done.stdout.strip().splitlines()[-1])
        report["scores"] = np.load(f"{folder}/scores.npy")
        report["theta"] = np.load(f"{folder}/theta.npy")
    return report


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def agreement(reference: dict, candidate: dict) -> dict:
    """Scores and theta of the torch run against the numpy run of the same problem."""
    s_ref, s_new = reference["scores"], candidate["scores"]
    return {"spearman": spearman(s_ref, s_new),
            "max_relative": float(np.abs(s_new - s_ref).max() / np.abs(s_ref).max()),
            "sign_agreement": float((np.sign(s_new) == np.sign(s_ref)).mean()),
            "theta_relative": float(np.linalg.norm(candidate["theta"] - reference["theta"])
                                    / np.linalg.norm(reference["theta"]))}


def ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}" if old > 0 else "-"


def table(rows) -> list[str]:
    lines = ["| N x d x C | solver | backend | fit (s) | solve (s) | scores (s) | total (s) | torch / numpy total "
             "| peak RSS (MiB) | peak - data (MiB) | Newton its (HVPs) | final grad norm |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for size, solver, reports in rows:
        if "skipped" in reports:
            lines.append(f"| {size} | {solver} | both | {reports['skipped']} | | | | | | | | |")
            continue
        for backend in BACKENDS:
            report = reports[backend]
            if "error" in report:
                lines.append(f"| {size} | {solver} | {backend} | {report['error']} | | | | | | | | |")
                continue
            total = report["fit_seconds"] + report["solve_seconds"] + report["score_seconds"]
            report["total_seconds"] = total
            versus = ""
            if backend == "torch" and "error" not in reports["numpy"]:
                versus = ratio(total, reports["numpy"]["total_seconds"])
            lines.append(f"| {size} | {solver} | {backend} | {report['fit_seconds']:.2f} | {report['solve_seconds']:.2f} "
                         f"| {report['score_seconds']:.2f} | {total:.2f} | {versus} | {report['peak_rss_mib']:.0f} "
                         f"| {report['peak_rss_mib'] - report['data_rss_mib']:.0f} | {report['fit_iterations']} "
                         f"({report['fit_products']}) | {report['grad_norm']:.1e} |")
    return lines


def agreement_table(rows) -> list[str]:
    lines = ["| N x d x C | solver | Spearman(torch, numpy) | max abs difference / max abs s | sign agreement "
             "| theta relative difference |", "|---|---|---|---|---|---|"]
    for size, solver, reports in rows:
        if "skipped" in reports or any("error" in reports[b] for b in BACKENDS):
            continue
        match = agreement(reports["numpy"], reports["torch"])
        reports["agreement"] = match
        lines.append(f"| {size} | {solver} | {match['spearman']:.6f} | {match['max_relative']:.1e} "
                     f"| {match['sign_agreement']:.4f} | {match['theta_relative']:.1e} |")
    return lines


def baselines(rows) -> str:
    values = {b: [r[b]["baseline_rss_mib"] for _, _, r in rows if b in r and "error" not in r[b]] for b in BACKENDS}
    return ", ".join(f"{b} {min(v):.0f}-{max(v):.0f} MiB" for b, v in values.items() if v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["50000x64x10", "50000x256x100"])
    parser.add_argument("--solvers", nargs="+", default=["direct", "cg", "ekfac"])
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "proxy-backend.md"))
    parser.add_argument("--json", default=None, help="also write the raw reports here")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        n, d, c = (int(v) for v in size.split("x"))
        for solver in args.solvers:
            reason = direct_skipped(n, d, c) if solver == "direct" else None
            reports = {"skipped": reason} if reason else {b: run_one(b, n, d, c, solver, args.timeout)
                                                          for b in BACKENDS}
            rows.append((size, solver, reports))
            print(size, solver, {b: {k: v for k, v in r.items() if k not in ("scores", "theta")}
                                 for b, r in reports.items() if isinstance(r, dict)}, flush=True)
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    lines = ["# The linear proxy: torch (CPU) against the previous numpy implementation", "",
             f"Code: commit {commit.strip()}; numpy reference: the linear proxy of commit {REFERENCE_COMMIT} "
             f"(float64 numpy and scipy); torch {torch.__version__}, numpy {np.__version__}, Python {platform.python_version()}. Machine: "
             f"{os.cpu_count()} shared cores (another long benchmark ran throughout), `nice -n 10`. Reproduce: "
             "`python benchmarks/proxy_backend.py`.", "",
             "Problem: seeded synthetic Gaussian-mixture features (C centres ~ N(0, 4 I) in d dimensions, unit noise, "
             "uniform labels) with teacher logits from a random linear head (4 phi W / sqrt(d), W ~ N(0, 1)) plus 3 on "
             "the own class; N training samples, a separate validation draw of N / 5; standardised with the training "
             "statistics; mu = 1 (SUM units), tau = 4, lam = 0.9, fit tolerance 1e-8. Each row: one fresh process "
             "(numpy first, torch right after) that fits theta* (Newton-CG with the EKFAC preconditioner; `fit` "
             "picks it for N > 2 C(d+1)), solves v = H^-1 g_V with the solver and scores the N samples. BLAS and "
             "torch single-threaded.", "",
             f"Memory: ru_maxrss. Baseline after importing numpy, torch and the package: {baselines(rows)}; "
             "\"peak - data\" is the peak minus the high-water mark once the float64 data (training and validation "
             "features and logits) exist, i.e. what the math allocated beyond it.", "",
             "## Time and memory", "", *table(rows), "",
             "## Agreement of the scores (torch against numpy, same solver)", "", *agreement_table(rows), ""]
    Path(args.out).write_text("\n".join(lines))
    print("wrote", args.out)
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"size": s, "solver": v, **{b: {k: x for k, x in r.items() if k not in ("scores", "theta")}
                                         if isinstance(r, dict) else r for b, r in reports.items()}}
             for s, v, reports in rows], indent=1, default=float))


if __name__ == "__main__":
    main()
