"""pynndescent's nearest-neighbour descent, driven from Python so that every kernel it runs is cached.

pynndescent's ``nn_descent`` and ``nn_descent_internal`` are numba functions that ask numba for its
thread count, which numba cannot write to its on-disk cache, so every new process compiled them again
(about 15 s, most of a first 50k-point UMAP). :func:`nn_descent` below is the same algorithm as a plain
Python function: it allocates the same work arrays and calls the same numba kernels (random-projection
tree and random initialisation, then rounds of candidate building and local joins) in the same order
on the same random state, so the graph is the same, bit for bit (tests/test_embed.py checks it). Those
kernels can be cached, so after ``python -m ifbeta.embed --warm`` a process only loads them.

:func:`install` puts it in place of pynndescent's own (``NNDescent`` looks the name up at each call);
``embed.import_umap`` installs it.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["LIBRARY_DESCENT", "install", "nn_descent"]

BLOCK_SIZE = 16384  # rows per block of local joins, as in pynndescent


def _work_arrays(n_vertices: int, n_neighbors: int, max_candidates: int, n_threads: int) -> dict:
    """The buffers pynndescent's descent reuses across rounds (same shapes and dtypes as its own)."""
    per_thread = int((max_candidates ** 2 + max_candidates * (max_candidates - 1) / 2) * BLOCK_SIZE / n_threads) + 1024
    sorted_shape = (n_threads, 2 * per_thread, 3) if n_threads > 1 else (1, 1, 3)
    return {
        "update_array": np.empty((n_threads, per_thread, 3), dtype=np.float32),
        "n_updates_per_thread": np.zeros(n_threads, dtype=np.int32),
        "sorted_updates": np.empty(sorted_shape, dtype=np.float32),
        "block_offsets": np.zeros((n_threads, n_threads + 1), dtype=np.int64),
        "new_indices": np.full((n_vertices, max_candidates), -1, dtype=np.int32),
        "new_priority": np.full((n_vertices, max_candidates), np.inf, dtype=np.float32),
        "old_indices": np.full((n_vertices, max_candidates), -1, dtype=np.int32),
        "old_priority": np.full((n_vertices, max_candidates), np.inf, dtype=np.float32),
        "active": np.ones(n_vertices, dtype=np.uint8),
        "reverse_dst": np.empty(n_vertices * n_neighbors, dtype=np.int32),
        "reverse_src": np.empty(n_vertices * n_neighbors, dtype=np.int32),
        "bucket_bounds": np.zeros((n_threads, n_threads + 1), dtype=np.int64),
    }


def _descend(graph, data, n_neighbors, rng_state, *, max_candidates, dist, n_iters, delta, verbose, kernel) -> None:
    """Rounds of candidate building and local joins on ``graph`` (a pynndescent heap) in place, until a
    round changes at most delta * n_neighbors * N entries (pynndescent's ``nn_descent_internal``)."""
    from pynndescent import pynndescent_ as library

    n_threads = numba.get_num_threads()
    work = _work_arrays(data.shape[0], n_neighbors, max_candidates, n_threads)
    for round_number in range(n_iters):
        if verbose:
            print("\t", round_number + 1, " / ", n_iters)
        new_candidates, old_candidates = library.build_candidates_owner(
            graph, max_candidates, rng_state, n_threads, work["new_indices"], work["new_priority"],
            work["old_indices"], work["old_priority"], work["active"], work["reverse_dst"], work["reverse_src"],
            work["bucket_bounds"])
        changes = library.process_candidates(
            data, dist, graph, new_candidates, old_candidates, data.shape[0] // BLOCK_SIZE, BLOCK_SIZE, n_threads,
            work["update_array"], work["n_updates_per_thread"], work["sorted_updates"], work["block_offsets"], kernel)
        if changes <= delta * n_neighbors * data.shape[0]:
            if verbose:
                print("\tStopping threshold met -- exiting after", round_number + 1, "iterations")
            return


def nn_descent(data, n_neighbors, rng_state, max_candidates=50, dist=None, n_iters=10, delta=0.001, init_graph=None,
               rp_tree_init=True, leaf_array=None, low_memory=True, verbose=False, kernel=0):
    """pynndescent's ``nn_descent`` (same arguments, same result): the k-NN graph of data (N, m) as
    (indices (N, n_neighbors) int32, distances (N, n_neighbors) float32), each row sorted nearest first.
    rng_state (3,) int64 is advanced in place, as pynndescent's own does."""
    from pynndescent import pynndescent_ as library

    dist = library.pynnd_dist.euclidean if dist is None else dist
    init_graph = library.EMPTY_GRAPH if init_graph is None else init_graph
    if init_graph[0].shape[0] == 1:  # EMPTY_GRAPH
        graph = library.make_heap(data.shape[0], n_neighbors)
        if rp_tree_init:
            library.init_rp_tree(data, dist, graph, leaf_array, n_threads=numba.get_num_threads())
        library.init_random(n_neighbors, data, graph, dist, rng_state)
    elif init_graph[0].shape[0] == data.shape[0] and init_graph[0].shape[1] == n_neighbors:
        graph = init_graph
    else:
        raise ValueError("Invalid initial graph specified!")
    _descend(graph, data, n_neighbors, rng_state, max_candidates=max_candidates, dist=dist, n_iters=n_iters,
             delta=delta, verbose=verbose, kernel=kernel)
    return library.deheap_sort(graph[0], graph[1])


LIBRARY_DESCENT = None  # pynndescent's own nn_descent, kept by install() (the tests compare the two)


def install() -> None:
    """Use :func:`nn_descent` inside pynndescent (idempotent)."""
    global LIBRARY_DESCENT
    from pynndescent import pynndescent_ as library

    if library.nn_descent is not nn_descent:
        LIBRARY_DESCENT = library.nn_descent
    library.nn_descent = nn_descent
