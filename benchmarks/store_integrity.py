"""Cost of the artefact store's content checks (integrity.py) on the CIFAR-10 feature artefact and on
a synthetic feature memmap of gigabytes.

Needs the CIFAR-10 features in the store (``ifbeta extract --dataset imagefolder:../shared/data/cifar10``;
the bundled teacher in teachers/ is the default, nothing trains). The artefact is copied into a
scratch store with records; times are medians of ``--repeats`` runs with the files in the page cache
(a cold read adds the disk's read time to both the check and the first use of the data).
Usage: python benchmarks/store_integrity.py [--dataset SPEC] [--gib 2] [--repeats 5]
Writes benchmarks/results/store-integrity.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from ifbeta import integrity, pipeline
from ifbeta.models import teachers
from ifbeta.store import Store


def median_seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        integrity._CHECKED.clear()  # every run hashes, as the first load in a process does
        began = time.perf_counter()
        run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def cifar_rows(dataset: str, scratch: Path, repeats: int) -> tuple[list[str], str]:
    store = Store.default()
    train, _ = pipeline.load_splits(dataset, store=store)
    arch = teachers.default_arch(train)
    entry = teachers.default_teacher(train, arch, store=store)
    found = f"`--teacher auto` for {dataset}: {entry.source} teacher `{entry.path.name}` ({entry.arch}, " \
            f"{entry.epochs} epochs, test top-1 {entry.test_top1:.4f})"
    ws = pipeline.open_workspace(dataset, store=store, splits=(train, _))
    arrays = {"features": np.asarray(ws.features.features), "logits": np.asarray(ws.features.logits)}
    copy = Store(scratch / "cache")
    began = time.perf_counter()
    copy.save("features", "cifar", {}, arrays)
    save = time.perf_counter() - began
    size = sum(f.stat().st_size for f in copy.path("features", "cifar").glob("*.npy"))
    checked = median_seconds(lambda: copy.load("features", "cifar", {}, mmap=True), repeats)
    plain = median_seconds(lambda: [np.load(f, mmap_mode="r") for f in copy.path("features", "cifar").glob("*.npy")],
                           repeats)
    verify = median_seconds(lambda: copy.verify(), repeats)
    rows = [f"| CIFAR-10 train features + logits ({len(train)} x {arrays['features'].shape[1]} float32) | "
            f"{size / 2**20:.1f} MiB | full sha256 | {checked * 1e3:.1f} ms | {plain * 1e3:.2f} ms | "
            f"{verify * 1e3:.1f} ms | {save:.2f} s |"]
    return rows, found


def large_rows(gib: float, scratch: Path, repeats: int) -> list[str]:
    store = Store(scratch / "large")
    rows = int(gib * 2**30 / (512 * 4))
    folder = store.path("features", "large")
    # written through a memmap (as a large extraction would be), then recorded by save's own rule
    tmp = scratch / "large.npy"
    matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(rows, 512))
    for start in range(0, rows, 2**16):
        matrix[start:start + 2**16] = np.random.default_rng(start).random((min(2**16, rows - start), 512),
                                                                          dtype=np.float32)
    matrix.flush()
    del matrix
    began = time.perf_counter()
    record = integrity.record_of(tmp)
    recording = time.perf_counter() - began
    folder.mkdir(parents=True)
    tmp.rename(folder / "features.npy")
    (folder / "config.json").write_text(json.dumps({"config": {}, "meta": {}, "files": {"features.npy": record}}))
    size = record["size"]
    checked = median_seconds(lambda: store.load("features", "large", {}, mmap=True), repeats)
    plain = median_seconds(lambda: np.load(folder / "features.npy", mmap_mode="r"), repeats)
    verify = median_seconds(lambda: store.verify(), max(1, repeats // 2))
    return [f"| synthetic features ({rows} x 512 float32) | {size / 2**30:.2f} GiB | sampled "
            f"({integrity.SAMPLE_BLOCKS} x {integrity.SAMPLE_BYTES // 1024} KiB + head/tail) | {checked * 1e3:.1f} ms | "
            f"{plain * 1e3:.2f} ms | {verify:.2f} s | {recording:.2f} s (record) |"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="imagefolder:../shared/data/cifar10")
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows, found = cifar_rows(args.dataset, Path(scratch), args.repeats)
        rows += large_rows(args.gib, Path(scratch), args.repeats)
    import hashlib

    block = np.random.default_rng(0).bytes(256 * 2**20)
    sha = median_seconds(lambda: hashlib.sha256(block).hexdigest(), 3)
    lines = ["# Store integrity: cost of the content checks", "",
             f"Measured with `python benchmarks/store_integrity.py --gib {args.gib:g}` (2 shared CPU cores, files in the "
             "page cache; medians). sha256 (hashlib, SHA instructions) runs at "
             f"{256 / sha:.0f} MiB/s here; xxhash and blake3 are not installed.", "", found, "",
             "| artefact | size | check on load | load with check | load without | `store verify` (full) | save |",
             "|---|---|---|---|---|---|---|", *rows, "",
             f"Files up to {integrity.FULL_CHECK_BYTES // 2**20} MiB are hashed in full on their first load in a "
             "process; larger ones by the sampled digest (their head, tail and evenly spaced blocks; it catches "
             "truncation, a zeroed or rewritten region that touches a sample, and any size change), and in full by "
             "`ifbeta store verify`. A file already checked in the process and unchanged (size, mtime, inode) is "
             "not hashed again. Why sampled: at this sha256 speed a full check of the 2 GiB memmap on every load "
             "costs seconds (the `store verify` column), against milliseconds for the sampled digest; the price "
             "is that a change confined to bytes no sample touches is found only by `ifbeta store verify`."]
    out = Path(__file__).parent / "results" / "store-integrity.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
