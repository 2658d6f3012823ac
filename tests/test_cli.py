"""End-to-end command line on digits: every step, JSON last lines, and one-line errors (exit 2)."""
import json
import subprocess
import sys

import numpy as np
import pytest


def ifbeta(*args, cache):
    return subprocess.run([sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), *args],
                          capture_output=True, text=True, timeout=600)


def last_json(result):
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cli-cache")


@pytest.mark.slow
def test_vertical_slice_score_select_prune_distill(cache, tmp_path):
    scored = ifbeta("score", "--json", cache=cache)
    assert scored.returncode == 0, scored.stderr
    summary = last_json(scored)
    assert summary["n"] == 1347 and 0 < summary["harmful_fraction"] < 1 and len(summary["mean_score_per_class"]) == 10

    selected = ifbeta("select", "--method", "moderate", "--ratio", "0.7", "--out", str(tmp_path / "mod"), "--json",
                      cache=cache)
    assert selected.returncode == 0, selected.stderr
    assert np.load(tmp_path / "mod" / "indices.npy").shape == (404,)

    pruned = ifbeta("prune", "--ratio", "0.5", "0.8", "--steps", "6", "--out", str(tmp_path / "pr"), "--json",
                    cache=cache)
    assert pruned.returncode == 0, pruned.stderr
    for ratio, k in (("0.5", 674), ("0.8", 269)):
        folder = tmp_path / "pr" / f"ratio-{ratio}"
        manifest = json.loads((folder / "manifest.json").read_text())
        trace = json.loads((folder / "trace.json").read_text())
        assert manifest["k"] == k and manifest["method"] == "ifbeta" and trace["steps"]
        assert {"alpha", "beta", "J"} <= set(trace["steps"][0])

    distilled = ifbeta("distill", "--subset", str(tmp_path / "mod"), "--epochs", "2", "--out", str(tmp_path / "run"),
                       "--json", cache=cache)
    assert distilled.returncode == 0, distilled.stderr
    metrics = last_json(distilled)
    assert {"test_top1", "test_top5", "epochs", "train_samples", "seconds"} <= set(metrics)
    assert metrics["train_samples"] == 404 and 0 <= metrics["test_top1"] <= 1
    again = ifbeta("distill", "--subset", str(tmp_path / "mod"), "--epochs", "2", "--out", str(tmp_path / "run"),
                   "--json", cache=cache)
    assert last_json(again)["test_top1"] == metrics["test_top1"]  # finished run reused, not recomputed


@pytest.mark.parametrize("args, message", [
    (["select", "--method", "random", "--ratio", "1.5", "--out", "x"], "between 0 and 1"),
    (["select", "--method", "random", "--ratio", "0", "--out", "x"], "between 0 and 1"),
    (["select", "--method", "nope", "--ratio", "0.5", "--out", "x"], "unknown method"),
    (["prune", "--ratio", "0.999", "--out", "x"], "classes"),
    (["score", "--dataset", "imagefolder:/does/not/exist"], "does not exist"),
    (["score", "--teacher", "/no/such/teacher.safetensors"], "does not exist"),
    (["distill", "--subset", "/no/such/subset", "--out", "x"], "subset"),
    (["train-teacher", "--arch", "resnet9000"], "unknown architecture"),
    (["score", "--solver", "direct", "--cg-max-iterations", "5"], "cg solver only"),
])
def test_bad_input_is_one_line_and_exit_code_2(cache, tmp_path, args, message):
    result = ifbeta(*[a if a != "x" else str(tmp_path / "x") for a in args], cache=cache)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "x").exists()


def test_subset_from_another_dataset_is_refused(cache, tmp_path, image_folder):
    made = ifbeta("select", "--dataset", f"imagefolder:{image_folder}", "--method", "random", "--ratio", "0.5",
                  "--out", str(tmp_path / "other"), cache=cache)
    assert made.returncode == 0, made.stderr
    refused = ifbeta("distill", "--subset", str(tmp_path / "other"), "--out", str(tmp_path / "run"), cache=cache)
    assert refused.returncode == 2 and "fingerprint" in refused.stderr and "Traceback" not in refused.stderr


def test_list_describes_every_method(cache):
    from ifbeta.selection.registry import METHODS

    listed = ifbeta("select", "--list", cache=cache)
    names = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    assert listed.returncode == 0 and names == list(METHODS)


def test_exported_subset_loads_back_as_imagefolder(cache, tmp_path):
    selected = ifbeta("select", "--method", "random", "--ratio", "0.6", "--out", str(tmp_path / "s"), cache=cache)
    assert selected.returncode == 0, selected.stderr
    kept = np.load(tmp_path / "s" / "indices.npy")
    exported = ifbeta("export", "--subset", str(tmp_path / "s"), "--format", "imagefolder", "--out",
                      str(tmp_path / "D"), "--include-pruned", "--json", cache=cache)
    assert exported.returncode == 0, exported.stderr
    assert last_json(exported)["dataset"] == f"imagefolder:{tmp_path / 'D'}"
    original = last_json(ifbeta("info", "--json", cache=cache))
    described = ifbeta("info", "--dataset", f"imagefolder:{tmp_path / 'D'}", "--json", cache=cache)
    assert described.returncode == 0, described.stderr
    info = last_json(described)
    assert info["classes"] == original["classes"] == [str(c) for c in range(10)]
    assert info["splits"]["train"]["n"] == len(kept) == 539  # pruned/ is not part of the dataset
    labels = np.loadtxt(tmp_path / "s" / "samples.csv", delimiter=",", skiprows=1, usecols=2, dtype=int)
    assert info["splits"]["train"]["per_class"] == np.bincount(labels[kept], minlength=10).tolist()
    assert info["splits"]["test"] == original["splits"]["test"]
