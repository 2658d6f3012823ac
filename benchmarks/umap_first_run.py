"""The first UMAP of 50,000 x 64 teacher features: where the time goes, before and after caching numba's kernels.

Every run is a fresh process (numba compiles per process); ``NUMBA_CACHE_DIR`` points each at its own temp
folder, so "cold" means never compiled. Runs, in order:

  old, cold                  the code before this change (plain ``import umap``, init spectral), empty cache
  old, cache warm            the same again: what pynndescent's own ``cache=True`` kernels save
  warm-up                    ``python -m ifbeta.embed --warm`` into a fresh folder (the install step)
  cached, spectral, after warm-up   the old settings with all kernels cached: the same map as old
  pca init, pynndescent's own descent   as below, but with pynndescent's uncacheable ``nn_descent``
                             (the code before ``ifbeta.nn_descent``)
  new, after warm-up         ``embed.umap`` defaults (init pca): the first map a user waits for
  new, cold                  ``embed.umap`` defaults, empty numba cache (never compiled, no warm-up)

Quality: the old and cached-spectral maps are compared element by element; the new (pca-init) map against
the old one by
trustworthiness (sklearn.manifold.trustworthiness, 15 neighbours, against the standardised features) and
kNN-class agreement (share of each point's 15 nearest 2-D neighbours with its class) on a seeded 5,000-point
subsample.

Usage: python benchmarks/umap_first_run.py [--features PATH] [--labels-from FOLDER]
       (writes benchmarks/results/umap-first-run.md). Without --features: the 50k x 64 CIFAR-10 features in
       ../main/cache/features if present, else a seeded Gaussian mixture of 10 classes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "umap-first-run.md"
SUBSAMPLE = 5000
NEIGHBOURS = 15


def _child(mode: str, features_path: str, coords_path: str) -> dict:
    """One fit in this process; stage seconds as a dict. mode: old | cached-spectral | library-descent | new."""
    start = time.perf_counter()
    from ifbeta import embed, nn_descent
    from ifbeta.store import Store

    times: dict[str, float] = {}
    if mode == "old":
        embed._cache_uncached_kernels = lambda: 0  # the code before: no kernel cache beyond the libraries' own
    if mode in ("old", "library-descent"):
        nn_descent.install = lambda: None  # pynndescent's own (uncacheable) nn_descent
    import_start = time.perf_counter()
    umap_module = embed.import_umap()
    times["import umap"] = time.perf_counter() - import_start
    from umap import umap_ as internals

    def timed(name, function):
        def inner(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                times[name] = times.get(name, 0.0) + time.perf_counter() - begin
        return inner

    for name, attribute in [("nearest neighbours (nn-descent)", "nearest_neighbors"),
                            ("fuzzy graph", "fuzzy_simplicial_set"), ("spectral init", "spectral_layout"),
                            ("layout epochs", "optimize_layout_euclidean")]:
        setattr(internals, attribute, timed(name, getattr(internals, attribute)))
    assert umap_module is sys.modules["umap"]
    features = np.load(features_path)
    marks = {}

    def on_step(step, info):
        marks.setdefault(info["stage"], time.perf_counter())

    with tempfile.TemporaryDirectory() as folder:
        fit_start = time.perf_counter()
        result = embed.umap(features, store=Store(Path(folder)), input_key="benchmark",
                            init=embed.UMAP_INIT if mode in ("new", "library-descent") else "spectral",
                            on_step=on_step)
        times["fit (embed.umap)"] = time.perf_counter() - fit_start
    times["standardise + PCA to 50"] = marks["neighbours"] - marks["import"]
    np.save(coords_path, result.coords)
    times["process total"] = time.perf_counter() - start
    return times


def _run(arguments: list[str], cache: Path) -> tuple[float, str]:
    environment = dict(os.environ, NUMBA_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *arguments], cwd=ROOT, env=environment, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return time.perf_counter() - start, done.stdout


def _fit_run(mode: str, features_path: Path, cache: Path, coords: Path) -> dict:
    wall, out = _run([__file__, "--child", mode, "--features", str(features_path), "--coords", str(coords)], cache)
    times = json.loads(out.strip().splitlines()[-1])
    times["wall, process start to exit"] = wall
    return times


def _features(path: str | None, labels_from: str | None) -> tuple[np.ndarray, np.ndarray, str]:
    if path is None:
        for candidate in sorted((ROOT.parent / "main" / "cache" / "features").glob("*/config.json")):
            meta = json.loads(candidate.read_text()).get("meta", {})
            if meta.get("n") == 50000 and meta.get("dim") == 64 and "cifar10" in meta.get("dataset", ""):
                path, labels_from = str(candidate.parent / "features.npy"), meta["dataset"].split(":", 1)[1]
                break
    if path is None:
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 10, 50000)
        centres = rng.normal(scale=3.0, size=(10, 64))
        return (centres[labels] + rng.normal(size=(50000, 64))).astype(np.float32), labels, \
            "seeded Gaussian mixture, 10 classes, 50,000 x 64"
    features = np.load(path, mmap_mode="r")
    train = Path(labels_from) / "train"  # ImageFolder order: class folders sorted, files sorted in each
    counts = [sum(1 for f in d.iterdir() if f.is_file() and not f.name.startswith("."))
              for d in sorted(p for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))]
    labels = np.repeat(np.arange(len(counts)), counts)
    if len(labels) != len(features):
        raise SystemExit(f"{len(labels)} labels from {train} for {len(features)} feature rows")
    return np.asarray(features, np.float32), labels, f"CIFAR-10 teacher features, {features.shape[0]:,} x " \
        f"{features.shape[1]} (resnet20 teacher, labels from {train})"


def _knn_class_agreement(coords: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=NEIGHBOURS + 1).fit(coords).kneighbors(coords, return_distance=False)
    return float((labels[index[:, 1:]] == labels[:, None]).mean())


def _quality(name: str, coords: np.ndarray, features: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> str:
    from sklearn.manifold import trustworthiness

    x = (features[rows] - features.mean(0)) / features.std(0)
    trust = trustworthiness(x, coords[rows], n_neighbors=NEIGHBOURS)
    return f"| {name} | {trust:.4f} | {_knn_class_agreement(coords[rows], labels[rows]):.4f} |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--features")
    parser.add_argument("--labels-from")
    parser.add_argument("--coords")
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(_child(arguments.child, arguments.features, arguments.coords)))
        return
    features, labels, source = _features(arguments.features, arguments.labels_from)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        np.save(work / "features.npy", features)
        runs = {}
        runs["old, cold numba cache"] = _fit_run("old", work / "features.npy", work / "old-cache", work / "old.npy")
        runs["old, numba cache warm"] = _fit_run("old", work / "features.npy", work / "old-cache", work / "old2.npy")
        warm_seconds, _ = _run(["-m", "ifbeta.embed", "--warm"], work / "new-cache")
        runs["cached, spectral, after warm-up"] = _fit_run("cached-spectral", work / "features.npy",
                                                           work / "new-cache", work / "spectral.npy")
        runs["pca init, pynndescent's own descent, after warm-up"] = _fit_run(
            "library-descent", work / "features.npy", work / "new-cache", work / "library.npy")
        runs["new (pca init), after warm-up"] = _fit_run("new", work / "features.npy", work / "new-cache",
                                                         work / "new.npy")
        runs["new (pca init), cold numba cache"] = _fit_run("new", work / "features.npy", work / "cold-cache",
                                                            work / "cold.npy")
        maps = {name: np.load(work / f"{name}.npy") for name in ["old", "old2", "spectral", "library", "new", "cold"]}
    stages = list(next(iter(runs.values())))
    lines = [f"# First UMAP of {source}", "",
             f"Each column is a fresh process; seconds. Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} "
             f"cores; 1-minute load average {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
             "(about 1 means this benchmark alone on one core).", "",
             "| stage | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for stage in stages:
        lines.append(f"| {stage} | " + " | ".join(f"{r.get(stage, 0.0):.1f}" for r in runs.values()) + " |")
    lines += ["", f"Warm-up (`python -m ifbeta.embed --warm`, the install step, empty cache): {warm_seconds:.1f} s.",
              "", "## Same seed, same map", ""]
    for a, b, what in [("old", "old2", "old cold vs old warm"),
                       ("old", "spectral", "old vs cached, spectral (after warm-up)"),
                       ("library", "new", "pca init: pynndescent's own descent vs ifbeta.nn_descent"),
                       ("new", "cold", "new after warm-up vs new cold"), ("old", "new", "old vs new (pca init)")]:
        same = np.array_equal(maps[a], maps[b])
        lines.append(f"- {what}: {'identical' if same else 'differ, max |diff| %.3g' % np.abs(maps[a] - maps[b]).max()}")
    rows = np.sort(np.random.default_rng(0).choice(len(features), SUBSAMPLE, replace=False))
    lines += ["", f"## Quality on a seeded {SUBSAMPLE:,}-point subsample", "",
              f"Trustworthiness ({NEIGHBOURS} neighbours, against the standardised features) and kNN-class "
              f"agreement (share of the {NEIGHBOURS} nearest 2-D neighbours with the point's class).", "",
              "| map | trustworthiness | kNN-class agreement |", "|---|---|---|",
              _quality("old (spectral init)", maps["old"], features, labels, rows),
              _quality("cached, spectral init", maps["spectral"], features, labels, rows),
              _quality("new (pca init)", maps["new"], features, labels, rows)]
    x = (features[rows] - features.mean(0)) / features.std(0)
    lines += [f"| (the standardised features themselves, {features.shape[1]}-d) | 1 | "
              f"{_knn_class_agreement(x, labels[rows]):.4f} |", ""]
    RESULT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
