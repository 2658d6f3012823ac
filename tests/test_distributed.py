"""Scale-out on CPU: torchrun (2 processes, gloo) against one process, on digits.

Distillation under DDP must agree with the single process (same last-epoch test top-1 within
0.05, close training-loss history) with rank 0 alone writing the run's files; feature extraction
sharded over 2 ranks must give exactly the one-process features. The DDP distill starts on a cold
feature cache, so it also covers extraction inside ``teacher_features`` under torchrun (which must
not run its collectives inside the store's file lock).
"""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "IFBETA_BLAS_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
TIMEOUT = 600  # a deadlocked collective fails the test instead of hanging the suite


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), *args]


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=ENV, **kwargs)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A store holding only the pre-trained digits teacher (no features yet)."""
    root = tmp_path_factory.mktemp("ddp-cache")
    run([sys.executable, "-m", "ifbeta.cli", "--cache", str(root), "train-teacher", "--dataset", "digits"])
    assert not (root / "features").exists()
    return root


def distill_command(cache, out) -> list[str]:
    return ["-m", "ifbeta.cli", "--cache", str(cache), "distill", "--dataset", "digits", "--subset", "full",
            "--epochs", "3", "--out", str(out), "--json"]


def test_ddp_distill_matches_single_process(cache, tmp_path):
    ddp = run(torchrun(*distill_command(cache, tmp_path / "ddp")))
    run([sys.executable, *distill_command(cache, tmp_path / "single")])

    printed = [line for line in ddp.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1, ddp.stdout  # rank 0 alone reports
    reported = json.loads(printed[0])
    ddp_metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    single_metrics = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert reported["test_top1"] == ddp_metrics["test_top1"]  # the file holds rank 0's metrics, not rank 1's NaN
    assert ddp_metrics["status"] == "finished" and ddp_metrics["epochs_run"] == 3
    assert ddp_metrics["indices_sha256"] == single_metrics["indices_sha256"]
    assert abs(ddp_metrics["test_top1"] - single_metrics["test_top1"]) < 0.05
    assert single_metrics["test_top1"] > 0.4  # learned something, so the comparison means something

    ddp_loss = [h["train_loss"] for h in ddp_metrics["history"]]
    single_loss = [h["train_loss"] for h in single_metrics["history"]]
    assert len(ddp_loss) == len(single_loss) == 3
    # same sample order and augmentation; only BatchNorm sees half batches per rank
    np.testing.assert_allclose(ddp_loss[0], single_loss[0], rtol=0.02)
    np.testing.assert_allclose(ddp_loss, single_loss, rtol=0.15)
    assert ddp_loss[-1] < 0.7 * ddp_loss[0]

    registry = [json.loads(line) for line in (cache / "runs.jsonl").read_text().splitlines()]
    assert sum(record["out"] == ddp_metrics["out"] for record in registry) == 1  # registered by rank 0 only
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if not p.name.startswith(".")) == [
        "checkpoint", "config.json", "metrics.json", "progress.json", "student.safetensors"]


EXTRACT_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from ifbeta.data import datasets as data
    from ifbeta.models.features import extract
    from ifbeta.threads import limit_blas_threads
    from ifbeta.store import Store
    from ifbeta.models.teachers import resolve_teacher
    from ifbeta.models.training import distributed_context

    limit_blas_threads()
    store = Store(sys.argv[1])
    train = data.load("digits", "train", store=store)
    teacher = resolve_teacher("auto", train, store=store)
    features, logits = extract(teacher, train, batch_size=100)  # uneven: 1347 rows, 674 + 673 per rank
    rank, world = distributed_context()
    if rank == 0:
        np.savez(sys.argv[2], features=features, logits=logits, world=world)
    if world > 1:  # as the CLI does: an open gloo group can abort the process at exit
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
""")


def test_sharded_feature_extraction_matches_one_process(cache, tmp_path):
    script = tmp_path / "extract_features.py"
    script.write_text(EXTRACT_SCRIPT)
    run(torchrun(str(script), str(cache), str(tmp_path / "ddp.npz")))
    run([sys.executable, str(script), str(cache), str(tmp_path / "single.npz")])
    ddp, single = np.load(tmp_path / "ddp.npz"), np.load(tmp_path / "single.npz")
    assert int(ddp["world"]) == 2 and int(single["world"]) == 1
    assert ddp["features"].shape == single["features"].shape == (1347, ddp["features"].shape[1])
    np.testing.assert_allclose(ddp["features"], single["features"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ddp["logits"], single["logits"], rtol=1e-5, atol=1e-5)
