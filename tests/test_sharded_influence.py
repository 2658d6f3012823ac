"""Sharded scoring under torchrun (2 CPU processes, gloo) against one process.

Each rank streams half the rows of every pass and the partial sums meet in rank order
(ifbeta/influence/sharding.py), so both ranks must hold bitwise the same results, and those must
equal the single-process ones: theta to the fit's tolerance, scores to the float32 products'
round-off (max relative difference 1e-5) with exactly the same ranking, for the cg and ekfac solvers
and the direct solver's Newton estimator, mu chosen by validation; and one bilevel evaluation (J, hypergradient) plus a 3-step learned policy
(alpha, beta, the subset it draws). The CLI check runs ``score`` and ``prune`` on digits.
"""
import glob
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sharding_support  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "IFBETA_BLAS_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "PYTHONPATH": str(ROOT)}
TIMEOUT = 240  # a deadlocked collective fails the test instead of hanging the suite


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=ENV, cwd=ROOT, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), *args]


def relative(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-300))


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    run(torchrun(str(ROOT / "tests" / "sharding_support.py"), str(out)))
    return [dict(np.load(out / f"rank{rank}.npz")) for rank in (0, 1)]


@pytest.fixture(scope="module")
def single():
    return sharding_support.results()


def test_ranks_hold_bitwise_equal_results(sharded):
    first, second = sharded
    assert first.keys() == second.keys()
    for key in first:
        if not key.startswith("rank_"):  # what each rank read is its own
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_pool_statistics_read_each_row_once_across_ranks_and_equal_one_process(sharded, single):
    """Each rank reads only its contiguous half of the pool for the mean and std, and for the NaN check."""
    first, second = (result["rank_rows_read"] for result in sharded)
    np.testing.assert_array_equal(first, np.arange(600))
    np.testing.assert_array_equal(second, np.r_[0, np.arange(600, 1200)])  # + row 0: the constant column's value
    np.testing.assert_array_equal(single["rank_rows_read"], np.arange(1200))
    np.testing.assert_allclose(sharded[0]["pool_mean"], single["pool_mean"], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(sharded[0]["pool_std"], single["pool_std"], rtol=1e-14)
    features = np.c_[sharding_support.problem()[0], np.full(1200, 0.1)]
    np.testing.assert_allclose(single["pool_mean"][:-1], features[:, :-1].mean(0), rtol=1e-12)
    np.testing.assert_allclose(single["pool_std"][:-1], features[:, :-1].std(0), rtol=1e-12)
    assert single["pool_mean"][-1] == 0.1 and single["pool_std"][-1] == 1.0  # the constant column -> exactly 0
    assert int(sharded[0]["nan_row"]) == int(single["nan_row"]) == 1100  # found in rank 1's rows, told to both


@pytest.mark.parametrize("solver", sharding_support.SOLVERS)
def test_scores_equal_single_process(sharded, single, solver):
    scores, reference = sharded[0][f"scores_{solver}"], single[f"scores_{solver}"]
    assert sharded[0][f"mu_{solver}"] == single[f"mu_{solver}"]  # choose_mu picked the same grid value
    assert relative(scores, reference) < 1e-5
    np.testing.assert_array_equal(np.argsort(scores, kind="stable"), np.argsort(reference, kind="stable"))
    assert relative(sharded[0][f"kd_loss_{solver}"], single[f"kd_loss_{solver}"]) < 1e-9
    assert (reference < 0).any() and (reference > 0).any()  # both signs: the comparison means something


def test_bilevel_step_equals_single_process(sharded, single):
    result = sharded[0]
    assert relative(result["theta"], single["theta"]) < 1e-9  # the folds' full fits
    assert relative(result["J"], single["J"]) < 1e-10
    assert relative(result["hypergradient"], single["hypergradient"]) < 1e-5
    assert np.abs(single["hypergradient"]).min() > 0
    assert relative(result["alpha_beta"], single["alpha_beta"]) < 1e-6
    assert not np.allclose(single["alpha_beta"], 1.0)  # the policy moved
    np.testing.assert_array_equal(result["policy_indices"], single["policy_indices"])


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    """A store with the digits teacher and its features."""
    root = tmp_path_factory.mktemp("digits-cache")
    run([sys.executable, "-m", "ifbeta.cli", "--cache", str(root), "extract", "--dataset", "digits"])
    return root


@pytest.mark.slow  # trains the digits teacher
def test_cli_score_and_prune_under_torchrun(digits_cache, tmp_path):
    caches = {}
    for name in ("single", "ddp"):
        caches[name] = tmp_path / name
        shutil.copytree(digits_cache, caches[name])
    arguments = ["score", "--solver", "ekfac", "--device", "cpu", "--json"]
    run([sys.executable, "-m", "ifbeta.cli", "--cache", str(caches["single"]), *arguments])
    ddp = run(torchrun("-m", "ifbeta.cli", "--cache", str(caches["ddp"]), *arguments))
    assert sum(line.startswith("{") for line in ddp.stdout.splitlines()) == 1  # rank 0 alone reports
    scores = {name: np.load(glob.glob(str(cache / "scores" / "*" / "scores.npy"))[0]) for name, cache in caches.items()}
    assert relative(scores["ddp"], scores["single"]) < 1e-4
    assert spearmanr(scores["ddp"], scores["single"])[0] > 0.9999

    arguments = ["prune", "--solver", "ekfac", "--ratio", "0.5", "--steps", "2", "--json"]
    for name, cache in caches.items():
        command = ["-m", "ifbeta.cli", "--cache", str(cache), *arguments, "--out", str(tmp_path / f"out-{name}")]
        run(torchrun(*command) if name == "ddp" else [sys.executable, *command])
    traces = {name: json.loads((tmp_path / f"out-{name}" / "trace.json").read_text()) for name in caches}
    for key in ("alpha", "beta"):
        assert abs(traces["ddp"][key] - traces["single"][key]) < 1e-6 * abs(traces["single"][key])
    np.testing.assert_array_equal(np.load(tmp_path / "out-ddp" / "indices.npy"),
                                  np.load(tmp_path / "out-single" / "indices.npy"))
