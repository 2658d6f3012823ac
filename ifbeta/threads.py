"""Process-wide runtime settings for the command line, the app and the tests."""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable


def limit_blas_threads(threads: int | None = None) -> None:
    """Run BLAS/LAPACK single-threaded unless ``IFBETA_BLAS_THREADS`` says otherwise.

    The proxy's dense solves are small (C(d+1) up to a few thousand); on shared cores a
    multi-threaded BLAS makes a 650x650 Cholesky ~50x slower (9 ms vs 0.45 s measured under load)."""
    from threadpoolctl import threadpool_limits

    count = threads or int(os.environ.get("IFBETA_BLAS_THREADS", "1"))
    threadpool_limits(limits=count, user_api="blas")


def thread_map(work: Callable, *arguments) -> list:
    """[work(*items) for items in zip(*arguments)], run in threads, one per core (in order).

    For independent numpy work (the folds of a cross-fitted problem): numpy and BLAS release the
    GIL, so on a multi-core CPU the items run side by side, and each computes exactly what it would
    alone. ``IFBETA_THREADS`` caps the threads (1 = sequential). Sequential under torchrun (a process
    group of several ranks): the items' collectives must reach every rank in the same order."""
    jobs = list(zip(*arguments))
    workers = min(len(jobs), int(os.environ.get("IFBETA_THREADS", os.cpu_count() or 1)))
    distributed = sys.modules.get("torch.distributed")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or (distributed is not None and distributed.is_available()
                                                       and distributed.is_initialized()
                                                       and distributed.get_world_size() > 1):
        workers = 1
    if workers <= 1:
        return [work(*job) for job in jobs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: work(*job), jobs))
