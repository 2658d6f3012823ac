"""Real ``ifbeta`` subprocesses for fault injection: run to the end, start in a process group, kill -9.

Every subprocess runs with one torch and BLAS thread on the CPU: resuming is bit-exact there with a
fixed thread count (the same kernels reduce in the same order); on a GPU, bf16 autocast and
non-deterministic kernels may change the last bits, so fault tests never let a GPU be used.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def cli(cache, *args) -> list[str]:
    """The ``ifbeta`` command line with ``--cache cache``."""
    return [sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), *args]


def env() -> dict:
    """One torch thread on the CPU, no GPU (see the module docstring)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "IFBETA_BLAS_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run(cache, *args) -> subprocess.CompletedProcess:
    """Run ``ifbeta`` to the end; fails the test on a non-zero exit."""
    done = subprocess.run(cli(cache, *args), capture_output=True, text=True, timeout=600, env=env())
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def last_json(done: subprocess.CompletedProcess) -> dict:
    """The JSON object a ``--json`` command prints as its last line."""
    return json.loads(done.stdout.strip().splitlines()[-1])


def start(cache, *args) -> subprocess.Popen:
    """Start ``ifbeta`` in its own process group, so that kill -9 also reaches the processes it launches."""
    return start_command(cli(cache, *args))


def start_command(command: list[str], **options) -> subprocess.Popen:
    """Start any command in its own process group (output discarded), with :func:`env`."""
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
                            start_new_session=True, **options)


def kill_9_when(victim: subprocess.Popen, ready, *, every: float = 0.02, timeout: float = 300, watch=None) -> None:
    """Poll until ``ready()`` holds (calling ``watch()`` at every poll), then SIGKILL the victim's process group.
    Fails when the victim exits first, so the fault is always injected at the state ``ready`` describes: a run
    that has finished by the time ``ready()`` is seen is reported as such, not as a kill that left output.
    ``every`` must be well below the time the victim spends in the ready state."""
    deadline = time.time() + timeout
    try:
        while not ready():
            assert victim.poll() is None, f"the run exited ({victim.returncode}) before the fault was injected"
            assert time.time() < deadline, "the run never reached the state to kill it in"
            if watch is not None:
                watch()
            time.sleep(every)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
    assert victim.returncode == -signal.SIGKILL, \
        f"the run had exited ({victim.returncode}) by the time it was seen ready: poll more often or give it more work"


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None
