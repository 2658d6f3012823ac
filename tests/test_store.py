import multiprocessing as mp
import time

import numpy as np
import pytest

from ifbeta.store import Store, StoreError, make_key


def test_key_depends_on_config_and_inputs_not_on_order():
    assert make_key({"a": 1, "b": 2}) == make_key({"b": 2, "a": 1})
    assert make_key({"a": 1}) != make_key({"a": 2})
    assert make_key({"a": 1}, ["x"]) != make_key({"a": 1}, ["y"])


def test_round_trip_and_config_mismatch_is_an_error(tmp_path):
    store = Store(tmp_path)
    store.save("scores", "k1", {"solver": "cg"}, {"s": np.arange(3.0)}, {"note": 1})
    arrays, meta = store.load("scores", "k1", {"solver": "cg"})
    assert arrays["s"].tolist() == [0.0, 1.0, 2.0] and meta == {"note": 1}
    with pytest.raises(StoreError, match="different config"):
        store.load("scores", "k1", {"solver": "direct"})


def test_half_written_entry_is_invisible_and_recomputed(tmp_path):
    store = Store(tmp_path)
    partial = store.path("features", make_key({"x": 1}))
    partial.mkdir(parents=True)
    np.save(partial / "features.npy", np.zeros(3))  # killed before config.json
    assert not store.exists("features", partial.name)
    arrays, _, _ = store.get_or_compute("features", {"x": 1}, [], lambda: ({"features": np.ones(3)}, {}))
    assert arrays["features"].tolist() == [1.0, 1.0, 1.0]



def test_write_killed_before_its_rename_is_never_listed_and_is_cleaned_up(tmp_path):
    store = Store(tmp_path)
    key = make_key({"x": 2})
    stale = tmp_path / "features" / f".{key}.tmp-dead"
    stale.mkdir(parents=True)
    np.save(stale / "features.npy", np.zeros(3))
    (stale / "config.json").write_text('{"config": {"x": 2}, "meta": {}}')  # killed just before os.replace
    assert store.entries("features") == [] and not store.exists("features", key)
    store.get_or_compute("features", {"x": 2}, [], lambda: ({"features": np.ones(3)}, {}))
    assert not stale.exists() and [k for k, _ in store.entries("features")] == [key]

def test_failed_write_leaves_nothing_behind(tmp_path):
    store = Store(tmp_path)

    class Full(OSError):
        pass

    class Exploding:
        def __array__(self, *args, **kwargs):
            raise Full("No space left on device")

    with pytest.raises(Full):
        store.save("scores", "k", {}, {"a": np.zeros(2), "b": Exploding()})
    assert not store.exists("scores", "k") and list((tmp_path / "scores").iterdir()) == []


def _compute_slowly(root, counter):
    store = Store(root)

    def compute():
        with counter.get_lock():
            counter.value += 1
        time.sleep(0.5)
        return {"a": np.arange(4)}, {}

    arrays, _, _ = store.get_or_compute("kind", {"same": True}, [], compute)
    return int(arrays["a"].sum())


def test_two_processes_compute_the_same_artefact_once(tmp_path):
    counter = mp.Value("i", 0)
    processes = [mp.Process(target=_compute_slowly, args=(tmp_path, counter)) for _ in range(2)]
    for p in processes:
        p.start()
    for p in processes:
        p.join(30)
    assert [p.exitcode for p in processes] == [0, 0] and counter.value == 1
