"""The store's subset catalog (subsets.catalog): valid subsets newest first, broken ones with a reason."""
from __future__ import annotations

import os

import numpy as np

from ifbeta.store import Store
from ifbeta.subsets import catalog, files


class Pool:
    """The dataset attributes the subset file reads."""

    def __init__(self, n=20, fingerprint="f" * 64, name="toy"):
        self.name, self.fingerprint, self.split = name, fingerprint, "train"
        self.labels = np.arange(n) % 2
        self.ids = [f"toy/{i}" for i in range(n)]
        self.class_names = ["a", "b"]

    def __len__(self):
        return len(self.labels)


def _write(store, name, pool, ratio, mtime):
    directory = catalog.folder(store) / name
    files.write(directory, indices=np.arange(0, len(pool), 2), dataset=pool, method="random", ratio=ratio, seed=0)
    os.utime(directory / "manifest.json", (mtime, mtime))
    return directory


def test_scan_lists_this_pools_subsets_newest_first(tmp_path):
    store = Store(tmp_path)
    assert catalog.scan(store) == []
    pool, other = Pool(), Pool(fingerprint="0" * 64)
    old = _write(store, "old", pool, 0.5, 1_000)
    new = _write(store, "new", pool, 0.5, 2_000)
    _write(store, "elsewhere", other, 0.5, 3_000)
    entries = catalog.scan(store, fingerprint=pool.fingerprint)
    assert [e.directory for e in entries] == [new, old]
    assert all(e.error is None and e.ratio == 0.5 for e in entries)
    assert len(catalog.scan(store)) == 3


def test_a_modified_subset_is_listed_with_its_reason(tmp_path):
    store = Store(tmp_path)
    pool = Pool()
    directory = _write(store, "tampered", pool, 0.5, 1_000)
    np.save(directory / "indices.npy", np.arange(3))
    (entry,) = catalog.scan(store, fingerprint=pool.fingerprint)
    assert entry.error and "does not match its manifest" in entry.error
    (catalog.folder(store) / "garbage").mkdir()
    (catalog.folder(store) / "garbage" / "manifest.json").write_text("{not json")
    errors = {e.name: e.error for e in catalog.scan(store, fingerprint=pool.fingerprint)}
    assert set(errors) == {"tampered", "garbage"} and "not a complete subset" in errors["garbage"]
