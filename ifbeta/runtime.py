"""Process-wide runtime settings for the command line, the app and the tests."""
from __future__ import annotations

import os


def limit_blas_threads(threads: int | None = None) -> None:
    """Run BLAS/LAPACK single-threaded unless ``IFBETA_BLAS_THREADS`` says otherwise.

    The proxy's dense solves are small (C(d+1) up to a few thousand); on shared cores a
    multi-threaded BLAS makes a 650x650 Cholesky ~50x slower (9 ms vs 0.45 s measured under load)."""
    from threadpoolctl import threadpool_limits

    count = threads or int(os.environ.get("IFBETA_BLAS_THREADS", "1"))
    threadpool_limits(limits=count, user_api="blas")
