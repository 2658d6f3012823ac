"""How tight must the proxy fit be for the scores? The fit tolerance against the scores' rank agreement,
on a subsample of the ImageNet-sized problem, and the passes a converged run at full size costs.

The pool is the synthetic teacher-like pool of influence_large.py (class clusters + a random linear
teacher, float16 on disk) with d = 2048, C = 1000 and N rows (default 50,000). Scoring follows
influence.score: the pool is standardised, split into 2 stratified folds, mu is fixed (``--mu`` per 1000
samples, as influence_large.py), each fold's proxy is fitted from the teacher-head start and scored with
the ``ekfac`` solver. Caches are off (``cache_bytes = 0``), so every pass streams the rows as it must at
full size, where a fold is 36 GB in float64.

Newton-CG's iterates do not depend on the stopping tolerance (proxy.fit: the CG forcing is relative to
the problem's scale), so ONE fit to ``--reference`` visits the fit that every looser tolerance would
return: the first iterate whose ||grad|| <= tol (1 + ||grad at the start||). Each iterate is scored, and
its scores are compared with the reference fit's (Spearman, the share of the same top half, signs).

Every pass over the rows is counted and timed by the function that made it (tensors.chunks is wrapped),
which gives seconds per pass per row; the full-size projection multiplies each kind's pass count by
its measured seconds per row and by the rows of a full-size fold (640,000 of 1,280,000). A pass that reads
only the features, only the teacher's logits or neither (the stored-output passes of proxy.fit, the EKFAC
rebuilds that take everything from stored values) counts as one pass of its own kind, at its own seconds
per row.

Usage: python benchmarks/fit_tolerance.py [--n 50000] [--threads 2]
       (writes benchmarks/results/fit-tolerance.md and the raw records beside it as fit-tolerance.json)
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
RESULT = ROOT / "benchmarks" / "results" / "fit-tolerance.md"
TOLERANCES = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5, 1e-6, 1e-8)
FULL_ROWS, FULL_FOLD = 1_280_000, 640_000
TARGET = 0.999
NOTES = "## What this says"  # a hand-written section from here on is kept by --report-only

# which function made a pass, in words (tensors.chunks' caller -> kind)
KINDS = {"_read": "objective / gradient", "teacher_head": "teacher head", "__init__": "Hessian-vector product",
         "__call__": "Hessian-vector product", "_stored_terms": "Hessian-vector product",
         "outputs_along": "line-search direction outputs", "value_along": "line-search trial (logits only)",
         "input_factor": "EKFAC input factor", "_kronecker_factors": "EKFAC factors",
         "ekfac_factors": "EKFAC eigenvalues", "value_and_gradient": "validation gradient",
         "influence_scores": "scores", "per_sample_loss": "per-sample KD loss", "residuals": "scores",
         "hessian": "dense Hessian"}


class Ledger:
    """Every pass over the rows: (kind, rows, seconds), from a wrapper around tensors.chunks."""

    def __init__(self):
        from ifbeta.influence import objective, proxy, tensors

        self.passes, original = [], tensors.chunks

        def counting(*args, **kwargs):  # one call = one pass over the data (or over one part of it)
            frame, start = sys._getframe(1), time.perf_counter()
            while frame.f_code.co_name.startswith("<"):  # a comprehension's frame: the function around it
                frame = frame.f_back
            caller = frame.f_code.co_name
            yield from original(*args, **kwargs)
            self.passes.append((KINDS.get(caller, caller), len(args[2]), time.perf_counter() - start))

        # objective and proxy import the name, so it is replaced there too
        tensors.chunks = objective.chunks = proxy.chunks = counting

    def mark(self) -> int:
        return len(self.passes)

    def since(self, mark: int) -> dict:
        tally = {}
        for kind, rows, seconds in self.passes[mark:]:
            entry = tally.setdefault(kind, {"passes": 0, "rows": 0, "seconds": 0.0})
            entry["passes"] += 1
            entry["rows"] += rows
            entry["seconds"] += seconds
        return tally


def _stream_everything() -> None:
    """No in-memory copies of the rows, the Hessian terms or the fit's outputs: every pass streams and the
    outputs live in a temporary file, as at full size (a fold's outputs are 5 GB in float64)."""
    from ifbeta.influence import objective, outputs, tensors

    tensors.Rows.__init__.__kwdefaults__["cache_bytes"] = 0
    objective.HessianOperator.__init__.__kwdefaults__["cache_bytes"] = 0
    outputs.OUTPUT_STORE_BYTES = 0


def _top_half_overlap(a: np.ndarray, b: np.ndarray) -> float:
    half = len(a) // 2
    return len(np.intersect1d(np.argsort(-a)[:half], np.argsort(-b)[:half])) / half


def measure(args) -> dict:
    import torch
    from influence_large import generate, open_pool

    from ifbeta.config import InfluenceConfig, ProxyConfig
    from ifbeta.influence import objective, proxy, tensors
    from ifbeta.influence import scores as influence

    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="fit-tolerance-", dir=args.tmp))
    pool_args = Namespace(dir=str(folder), n=args.n, d=args.d, c=args.c)
    start = time.perf_counter()
    generate(pool_args)
    generate_seconds = time.perf_counter() - start
    features, logits, labels = open_pool(pool_args)
    _stream_everything()
    ledger = Ledger()
    mu = args.mu * args.n / 2 / 1000.0
    config = InfluenceConfig(solver="ekfac", estimator="first_order", materialise_fold=False,
                             proxy=ProxyConfig(mu=mu, tolerance=args.reference, max_iterations=100))
    clock, start = influence.Clock(), time.perf_counter()
    config, pool, teacher, fold, mu, _ = influence.prepare(features, logits, labels, config, clock)
    prepare_seconds = time.perf_counter() - start  # the pool's mean and std: reads, scales with N
    records = []
    for k in range(args.folds):
        train, held_out = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        x, t = influence._training_fold(pool, teacher, train, config)
        validation = (pool.subset(held_out), teacher.subset(held_out), labels[held_out])
        iterates, mark, fit_start = [], ledger.mark(), time.perf_counter()
        deadline = fit_start + args.fit_seconds

        class OutOfTime(Exception):
            pass

        def snapshot(iteration, theta, grad_norm, products):
            relative = grad_norm / (1.0 + (iterates[0]["grad_norm"] if iterates else grad_norm))
            iterates.append({"iteration": iteration, "theta": theta.detach().clone(), "grad_norm": grad_norm,
                             "relative": relative, "products": products, "seconds": time.perf_counter() - fit_start,
                             "passes": ledger.since(mark)})
            print(f"fold {k} iteration {iteration}: relative ||grad|| {relative:.3g}, {products} products, "
                  f"{time.perf_counter() - fit_start:.0f} s", flush=True)
            _save(args, {"partial": True, "fold": k, "iterates": [_public(i) for i in iterates]})
            if time.perf_counter() > deadline and relative > args.reference:
                raise OutOfTime  # the last iterate becomes the reference; its tolerance is in the report

        try:
            fitted = proxy.fit(x, t, labels[train], mu=mu, kd=config.proxy.kd,
                               bias_damping=config.proxy.bias_damping, tolerance=args.reference, max_iterations=100,
                               chunk_size=config.chunk_size, on_iteration=snapshot)
            converged, builds = fitted.converged, fitted.curvature_builds
        except OutOfTime:
            converged, builds = False, None
        # score the iterates a fit at each tolerance of the grid would return, and the reference
        picked = {id(_at_tolerance(iterates, tolerance)) for tolerance in TOLERANCES} | {id(iterates[-1])}
        scored = {}
        for item in iterates:
            if id(item) in picked:
                mark_scores, score_start = ledger.mark(), time.perf_counter()
                scored[item["iteration"]] = influence.removal_scores(item["theta"], (x, t, labels[train]),
                                                                     validation, mu, config)
                item.update(score_seconds=time.perf_counter() - score_start, score_passes=ledger.since(mark_scores))
                print(f"fold {k} iteration {item['iteration']} scored", flush=True)
        reference = scored[iterates[-1]["iteration"]]
        for item in iterates:
            values = scored.get(item["iteration"])
            if values is not None:
                item.update(spearman=float(spearmanr(values, reference).statistic),
                            top_half=_top_half_overlap(values, reference),
                            signs=float(np.mean(np.sign(values) == np.sign(reference))))
        theta = iterates[-1]["theta"]
        records.append({"fold": k, "rows": int(len(train)), "validation_rows": int(len(held_out)),
                        "converged": converged, "curvature_builds": builds,
                        "iterates": [_public(item) for item in iterates]})
        mark = ledger.mark()
        tensors.to_numpy(objective.per_sample_loss(theta, x, t, labels[train], kd=config.proxy.kd,
                                                   chunk_size=config.chunk_size))  # the score's last stage
        records[-1]["loss_passes"] = ledger.since(mark)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return {"n": args.n, "d": args.d, "c": args.c, "mu": mu, "threads": args.threads, "reference": args.reference,
            "generate_seconds": generate_seconds, "prepare_seconds": prepare_seconds, "folds": records}


def _public(item: dict) -> dict:
    return {key: value for key, value in item.items() if key != "theta"}


def _save(args, data: dict) -> None:
    Path(args.json).write_text(json.dumps(data, indent=1))


def _per_row(tally: dict) -> dict:
    return {kind: entry["seconds"] / entry["rows"] for kind, entry in tally.items()}


def _at_tolerance(iterates: list, tolerance: float) -> dict:
    """The iterate a fit stopping at ``tolerance`` returns: the first with relative ||grad|| <= tolerance."""
    return next((item for item in iterates if item["relative"] <= tolerance), iterates[-1])


def _pooled(data: dict) -> dict:
    """Every kind of pass of a run, pooled over the folds and the scoring: {kind: {passes, rows, seconds}}."""
    pooled = {}
    for record in data["folds"]:
        last = record["iterates"][-1]
        for tally in (last["passes"], last["score_passes"], record["loss_passes"]):
            for kind, entry in tally.items():
                slot = pooled.setdefault(kind, {"passes": 0, "rows": 0, "seconds": 0.0})
                for key in slot:
                    slot[key] += entry[key]
    return pooled


def _source_path(source: str) -> Path:
    """--per-row-from's file: from here, else from the repository; a one-line exit when it is missing."""
    path = Path(source) if Path(source).is_file() else ROOT / source
    if not path.is_file():
        raise SystemExit(f"--per-row-from {source}: no such file (a .json written by this benchmark)")
    return path


def _projection_rates(data: dict, per_row: dict) -> tuple[dict, dict | None]:
    """Seconds per row for the projection: this run's, or those of the run named by ``per_row_from`` (a
    run at full d and C, when this one is a scale model), with that run's (n, d, c)."""
    source = data.get("per_row_from")
    if not source:
        return per_row, None
    other = json.loads(_source_path(source).read_text())
    rates = _per_row(_pooled(other))
    missing = sorted(set(per_row) - set(rates))
    if missing:
        raise SystemExit(f"--per-row-from {source}: no passes of kind {', '.join(missing)} to take seconds from")
    return rates, {"path": source, "n": other["n"], "d": other["d"], "c": other["c"],
                   "prepare_per_row": other["prepare_seconds"] / other["n"]}


def report(data: dict) -> list[str]:
    folds = data["folds"]
    rows = folds[0]["rows"]
    pooled = _pooled(data)  # seconds per row of every kind of pass, pooled over the folds and the scoring
    per_row = _per_row(pooled)
    lines = ["# The proxy fit's tolerance against the scores, and a converged ImageNet-sized `ekfac` run", "",
             f"Problem: the synthetic teacher-like pool of `influence_large.py` at N = {data['n']:,}, d = {data['d']}, "
             f"C = {data['c']} ({data['c'] * (data['d'] + 1):,} parameters), float16 on disk, 2 stratified folds of "
             f"{rows:,} rows, mu = {data['mu']:.4g} (1 per 1000 samples), teacher-head start, Newton-CG with the "
             f"EKFAC preconditioner, `ekfac` scores, every pass streamed from disk (caches off, as at full size). "
             f"torch with {data['threads']} threads on {os.cpu_count()} cores. The reference is the fit to relative "
             f"||grad|| <= {data['reference']:g}, or the last iterate within `--fit-seconds`. Measured {time.strftime('%Y-%m-%d')}. Reproduce: "
             "`python benchmarks/fit_tolerance.py`.", ""]
    lines += ["## The iterates of one fit, each scored", "",
              "relative = ||grad L_in|| / (1 + ||grad at the start||), the quantity `ProxyConfig.tolerance` bounds. "
              "Spearman, top half and signs compare the iterate's scores with the reference fit's scores (top half: "
              "the share of the same samples among the 50% with the highest scores, what pruning at r = 0.5 keeps).",
              ""]
    for record in folds:
        last = record["iterates"][-1]
        if not record["converged"]:
            lines += [f"The fit was stopped after {last['seconds']:.0f} s at relative ||grad|| {last['relative']:.2e} "
                      f"(`--fit-seconds`): that iterate is this fold's reference.", ""]
        lines += [f"Fold {record['fold']} ({record['rows']:,} training rows, scored against "
                  f"{record['validation_rows']:,} held-out rows; EKFAC preconditioners built during the fit: "
                  f"{record['iterates'][-1]['passes'].get('EKFAC factors', {}).get('passes', 0)}):", "",
                  "| Newton iteration | relative grad norm | HVPs so far | passes so far | fit seconds so far | "
                  "Spearman vs reference | top half | signs |", "|---|---|---|---|---|---|---|---|"]
        for item in record["iterates"]:
            passes = sum(entry["passes"] for entry in item["passes"].values())
            agreement = (f"{item['spearman']:.6f} | {item['top_half']:.4f} | {item['signs']:.4f}" if "spearman" in item
                         else "not scored | | ")
            lines.append(f"| {item['iteration']} | {item['relative']:.2e} | {item['products']} | {passes} | "
                         f"{item['seconds']:.0f} | {agreement} |")
        lines.append("")
    lines += ["## What each tolerance costs and gives", "",
              "A fit stopping at tolerance tol returns the first iterate with relative ||grad|| <= tol (the same "
              "iterates, in the same order, whatever the tolerance). Per fold; agreement: the worst fold.", "",
              "| tolerance | Newton iterations | HVPs | passes over a fold | fit seconds (all folds) | "
              "min Spearman vs reference | min top half |", "|---|---|---|---|---|---|---|"]
    chosen = None
    reached = max(record["iterates"][-1]["relative"] for record in folds)  # the references' own tolerance
    for tolerance in TOLERANCES:
        if tolerance < reached:
            lines.append(f"| {tolerance:g} | not reached: the reference stops at {reached:.2e} | | | | | |")
            continue
        picked = [_at_tolerance(record["iterates"], tolerance) for record in folds]
        worst = min(item["spearman"] for item in picked)
        if chosen is None and worst >= TARGET and any(item is not record["iterates"][-1]
                                                      for item, record in zip(picked, folds)):
            chosen = tolerance
        lines.append(f"| {tolerance:g} | {', '.join(str(item['iteration']) for item in picked)} | "
                     f"{', '.join(str(item['products']) for item in picked)} | "
                     f"{', '.join(str(sum(e['passes'] for e in item['passes'].values())) for item in picked)} | "
                     f"{sum(item['seconds'] for item in picked):.0f} | {worst:.6f} | "
                     f"{min(item['top_half'] for item in picked):.4f} |")
    lines.append("")
    lines.append(f"The loosest tolerance whose scores reach Spearman >= {TARGET} against the reference on every fold, "
                 "at an iterate before the reference itself: "
                 + (f"**{chosen:g}**." if chosen else f"none of the grid above the reference's own {reached:.2e} "
                    "(a longer `--fit-seconds` gives a tighter reference)."))
    lines += ["", "## Seconds per pass, per row (measured here, all passes pooled)", "",
              "| pass | passes | seconds per 1,000 rows | projected seconds per pass on a 640,000-row fold |",
              "|---|---|---|---|"]
    for kind, entry in sorted(pooled.items()):
        lines.append(f"| {kind} | {entry['passes']} | {1000 * per_row[kind]:.3f} | {FULL_FOLD * per_row[kind]:.0f} |")
    rates, source = _projection_rates(data, per_row)
    if source is not None:
        lines += ["", f"This run is a scale model: the projection below counts its passes at the seconds per row "
                  f"measured by `{source['path']}` (N = {source['n']:,}, d = {source['d']}, C = {source['c']}), "
                  "not at its own."]
    prepare = data["prepare_seconds"] / data["n"] if source is None else source["prepare_per_row"]
    lines += ["", _projection(data, rates, chosen or reached, prepare), ""]
    return lines


def _projection(data: dict, per_row: dict, tolerance: float, prepare_per_row: float) -> str:
    """Seconds of a full-size converged run: every pass this run made for a fit stopping at ``tolerance`` and
    for its scores, at ``per_row`` seconds per row of each kind, on full-size folds, plus the pool's
    standardising at ``prepare_per_row``."""
    total, count = prepare_per_row * FULL_ROWS, 0
    for record in data["folds"]:
        item = _at_tolerance(record["iterates"], tolerance)
        for tally in (item["passes"], record["iterates"][-1]["score_passes"], record["loss_passes"]):
            for kind, entry in tally.items():  # every pass is over one fold's rows (training or held out)
                total += entry["passes"] * FULL_FOLD * per_row[kind]
                count += entry["passes"]
    folds = len(data["folds"])
    fitted = total - prepare_per_row * FULL_ROWS
    total += fitted * (2 - folds) / folds  # an unmeasured fold costs what the measured ones cost
    return (f"Projection to N = {FULL_ROWS:,} (2 folds of {FULL_FOLD:,}) at tolerance {tolerance:g}: the {count} "
            f"passes of {'the two folds' if folds == 2 else 'the measured fold, counted twice'} at the measured "
            f"seconds per row give **{total:,.0f} s = {total / 3600:.2f} h** of standardising, fit, solve and scores "
            "on this CPU.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--c", type=int, default=1000)
    parser.add_argument("--mu", type=float, default=1.0, help="ridge per 1000 samples (choose_mu's grid unit)")
    parser.add_argument("--folds", type=int, default=2, help="how many of the 2 folds to fit and score")
    parser.add_argument("--reference", type=float, default=1e-8, help="the tight fit's relative tolerance")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fit-seconds", type=float, default=3600.0,
                        help="per fold: stop the reference fit after this long (its last iterate is the reference)")
    parser.add_argument("--tmp", default=None, help="folder for the pool's float16 files (default: the system's)")
    parser.add_argument("--out", default=str(RESULT), help="the report (.md); the raw records go beside it (.json)")
    parser.add_argument("--json", default=None, help="the raw records (default: --out with .json)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the .md from the stored .json")
    parser.add_argument("--per-row-from", default=None,
                        help="a scale model's projection: count this run's passes at the seconds per row of another "
                             "run's .json (e.g. benchmarks/results/fit-tolerance.json, at full d and C)")
    args = parser.parse_args()
    out = Path(args.out)
    args.json = args.json or str(out.with_suffix(".json"))
    if args.per_row_from:
        _source_path(args.per_row_from)  # refused before a measurement of many minutes
    if args.report_only:
        data = json.loads(Path(args.json).read_text())
    else:
        data = measure(args)
        _save(args, data)
    if args.per_row_from:
        data["per_row_from"] = args.per_row_from
    lines = report(data)  # before saving the source, so a failed report leaves the .json as it was
    if args.per_row_from:
        _save(args, data)
    notes = out.read_text().split(NOTES, 1) if out.is_file() else []
    if len(notes) == 2:  # keep the hand-written reading of the results
        lines.append(NOTES + notes[1].rstrip("\n"))
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
