"""ImageNet-sized influence scoring from float16 memmaps: N = 1.28M, d = 2048, C = 1000 (cg and ekfac).

The features (N, d) and teacher logits (N, C) are float16 ``.npy`` memmaps (5.2 GB + 2.6 GB) under
``--dir`` (default cache/bench/imagenet, git-ignored); influence.score streams them in chunks with
``materialise_fold=False`` (a float64 copy of one fold would be 10.5 GB of features + 5.1 GB of
logits). Every step runs in its own process (one per command below) and appends a JSON record to
``--results``. Steps:

  generate   write the synthetic teacher-like pool (class clusters + a random linear teacher, the
             distribution of ``synthetic`` in bilevel_timing.py), float32 maths, float16 on disk
  probe      time ONE gradient pass and ONE Hessian-vector product on a training fold (640k rows), the
             unit costs that the full run is made of
  score      influence.score(solver=cg|ekfac) with the proxy's Newton iterations capped by
             ``--max-iterations`` (ProxyConfig.max_iterations) and, for cg, the solver's CG iterations
             capped by ``--cg-iterations`` (InfluenceConfig.cg_max_iterations). Records seconds per
             stage, every pass over the data (caller, rows, seconds: tensors.chunks is wrapped to count),
             the final ||grad L_in|| per fold, the CG residual, peak RSS (VmHWM, includes memory-mapped
             file pages, which the kernel can drop) and peak anonymous memory (RssAnon sampled every 0.2 s)
  report     write the results as a section of benchmarks/results/influence-scaling.md
  clean      delete --dir

Usage: python benchmarks/influence_large.py generate | probe | score --solver ekfac --max-iterations 0 | report | clean
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from influence_scaling import replace_section  # noqa: E402


class Memory:
    """Peak RssAnon / RssFile of this process, sampled every 0.2 s; peak RSS from getrusage."""

    def __init__(self):
        self.peak = {"RssAnon": 0, "RssFile": 0}
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            with open("/proc/self/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
            for key in self.peak:
                self.peak[key] = max(self.peak[key], int(fields[key].split()[0]))
            time.sleep(0.2)

    def report(self) -> dict:
        time.sleep(0.3)
        return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "peak_anon_mib": self.peak["RssAnon"] / 1024, "peak_file_mib": self.peak["RssFile"] / 1024}


def append(path: Path, record: dict) -> None:
    records = json.loads(path.read_text()) if path.is_file() else []
    records.append(record)
    path.write_text(json.dumps(records, indent=1))
    print(json.dumps(record)[:2000], flush=True)


def generate(args) -> dict:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    n, d, c = args.n, args.d, args.c
    rng = np.random.default_rng(0)
    labels = rng.integers(0, c, n)
    centres = (rng.standard_normal((c, d), dtype=np.float32) * 2).astype(np.float32)
    head = (rng.standard_normal((d, c), dtype=np.float32) / np.sqrt(d) * 4).astype(np.float32)
    features = np.lib.format.open_memmap(folder / "phi.npy", mode="w+", dtype=np.float16, shape=(n, d))
    logits = np.lib.format.open_memmap(folder / "logits.npy", mode="w+", dtype=np.float16, shape=(n, c))
    for start in range(0, n, 32768):
        stop = min(n, start + 32768)
        phi = centres[labels[start:stop]] + rng.standard_normal((stop - start, d), dtype=np.float32)
        t = phi @ head
        t[np.arange(stop - start), labels[start:stop]] += 3
        features[start:stop], logits[start:stop] = phi.astype(np.float16), t.astype(np.float16)
    features.flush(), logits.flush()
    np.save(folder / "labels.npy", labels)
    return {"gigabytes": {"features": features.nbytes / 1e9, "logits": logits.nbytes / 1e9}}


def open_pool(args):
    folder = Path(args.dir)
    return (np.load(folder / "phi.npy", mmap_mode="r"), np.load(folder / "logits.npy", mmap_mode="r"),
            np.load(folder / "labels.npy"))


def probe(args) -> dict:
    from ifbeta.config import KDConfig
    from ifbeta.data.streaming import FeatureView, feature_statistics
    from ifbeta.influence import objective, proxy

    features, logits, labels = open_pool(args)
    seconds = {}
    start = time.perf_counter()
    mean, std = feature_statistics(features, chunk_size=args.chunk_size)
    seconds["feature_statistics (2 reads of the pool, no maths)"] = time.perf_counter() - start
    train = np.flatnonzero(proxy.stratified_folds(labels, 2, 0) == 0)
    x, t, y = FeatureView(features, mean=mean, std=std).subset(train), FeatureView(logits).subset(train), labels[train]
    theta = np.random.default_rng(1).normal(size=(logits.shape[1], features.shape[1] + 1)) * 1e-2
    options = dict(mu=args.mu * len(train) / 1000.0, kd=KDConfig(), chunk_size=args.chunk_size)
    for name, call in (("gradient pass", lambda: objective.gradient(theta, x, t, y, **options)),
                       ("Hessian-vector product", lambda: objective.hvp(theta, theta, x, t, y, **options))):
        start = time.perf_counter()
        call()
        seconds[name] = time.perf_counter() - start
        print(name, seconds[name], flush=True)
    return {"rows": int(len(train)), "seconds": seconds}


def score(args) -> dict:
    import logging

    from ifbeta.config import InfluenceConfig, ProxyConfig
    from ifbeta.influence import objective, proxy, tensors
    from ifbeta.influence import scores as influence

    messages = []

    class Capture(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logging.getLogger("ifbeta").addHandler(Capture())
    logging.getLogger("ifbeta").setLevel(logging.INFO)
    passes, original = [], tensors.chunks

    def counting(*args):  # one call = one pass over the data: (features, teacher_logits, labels, ...)
        caller, start = sys._getframe(1).f_code.co_name, time.perf_counter()
        yield from original(*args)
        passes.append((caller, len(args[2]), time.perf_counter() - start))

    # objective and proxy import the name, so it is replaced there too
    tensors.chunks = objective.chunks = proxy.chunks = counting
    features, logits, labels = open_pool(args)
    capped = args.cg_iterations if args.solver == "cg" and args.cg_iterations else None
    config = InfluenceConfig(solver=args.solver, estimator="first_order", chunk_size=args.chunk_size,
                             materialise_fold=False, cg_max_iterations=capped,
                             proxy=ProxyConfig(mu=args.mu * len(labels) / 2 / 1000.0, max_iterations=args.max_iterations,
                                               tolerance=args.fit_tolerance))
    folds = []
    start = time.perf_counter()
    result = influence.score(features, logits, labels, config=config,
                             on_step=lambda step, info: folds.append(info) if info["stage"] == "fold" else None)
    seconds = time.perf_counter() - start
    ledger = {}
    for caller, rows, spent in passes:
        entry = ledger.setdefault(f"{caller} ({rows} rows)", {"passes": 0, "seconds": 0.0})
        entry["passes"] += 1
        entry["seconds"] += spent
    return {"solver": args.solver, "max_iterations": args.max_iterations, "cg_iterations": args.cg_iterations,
            "fit_tolerance": args.fit_tolerance,
            "mu": result.mu, "seconds": seconds, "stages": result.seconds, "grad_norms": result.grad_norms,
            "fit_iterations": [f["iterations"] for f in folds], "passes": ledger,
            "log": [m for m in messages if "cg solver" in m or "fold" in m or "proxy fit" in m],
            "harmful": float((result.scores < 0).mean()), "finite": bool(np.isfinite(result.scores).all())}


def report(args) -> None:
    records = json.loads(Path(args.results).read_text())
    lines = [f"N = {args.n:,}, d = {args.d}, C = {args.c}: float16 memmaps (features 5.2 GB, logits 2.6 GB), "
             "2-fold cross-fitting, materialise_fold = False (each pass re-reads the fold from disk),",
             "fixed mu, first-order scores, BLAS single-threaded, chunks of 8192 rows. One process per step.", ""]
    for record in records:
        step = record["step"]
        memory = (f"peak RSS {record['peak_rss_mib']:.0f} MiB (anonymous {record['peak_anon_mib']:.0f} MiB, "
                  f"file-backed {record['peak_file_mib']:.0f} MiB)")
        if step == "generate":
            lines.append(f"- generate: {record['wall']:.0f} s, {memory}.")
        elif step == "probe":
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in record["seconds"].items())
            lines.append(f"- probe on a training fold of {record['rows']:,} rows: {parts}; {memory}.")
        elif step == "score":
            lines.append(f"- score, solver {record['solver']} (fit max_iterations = {record['max_iterations']}"
                         + (f", CG capped at {record['cg_iterations']}" if record["solver"] == "cg" else "")
                         + f"): {record['seconds']:.0f} s = {record['seconds'] / 60:.1f} min; {memory}; "
                         f"final ||grad L_in|| per fold {', '.join(f'{g:.3g}' for g in record['grad_norms'])}; "
                         f"stages {', '.join(f'{k} {v:.0f} s' for k, v in record['stages'].items())}.")
            lines.append("  passes: " + "; ".join(f"{k}: {v['passes']} x {v['seconds'] / v['passes']:.0f} s"
                                                 for k, v in record["passes"].items()))
            lines += [f"  log: {m}" for m in record["log"]]
    replace_section(Path(args.out), "imagenet-raw", lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["generate", "probe", "score", "report", "clean"])
    parser.add_argument("--dir", default="cache/bench/imagenet")
    parser.add_argument("--results", default="cache/bench/imagenet-results.json")
    parser.add_argument("--out", default="benchmarks/results/influence-scaling.md")
    parser.add_argument("--n", type=int, default=1_280_000)
    parser.add_argument("--d", type=int, default=2048)
    parser.add_argument("--c", type=int, default=1000)
    parser.add_argument("--mu", type=float, default=1.0, help="ridge per 1000 samples (choose_mu's grid unit)")
    parser.add_argument("--solver", choices=["cg", "ekfac"], default="ekfac")
    parser.add_argument("--max-iterations", type=int, default=0, help="proxy fit Newton iterations (0: teacher head)")
    parser.add_argument("--fit-tolerance", type=float, default=1e-8,
                        help="proxy fit: stop at relative ||grad|| <= this (fit_tolerance.py measures what scores need)")
    parser.add_argument("--cg-iterations", type=int, default=1, help="cap of the cg solver's iterations (0: none)")
    parser.add_argument("--chunk-size", type=int, default=8192)
    args = parser.parse_args()
    if args.step == "clean":
        shutil.rmtree(args.dir, ignore_errors=True)
        return
    if args.step == "report":
        report(args)
        return
    from ifbeta.threads import limit_blas_threads

    limit_blas_threads()
    memory, start = Memory(), time.perf_counter()
    record = {"generate": generate, "probe": probe, "score": score}[args.step](args)
    append(Path(args.results), {"step": args.step, "wall": time.perf_counter() - start, **record, **memory.report()})


if __name__ == "__main__":
    main()
