"""The linear proxy's passes over the rows, sharded across the processes of a torchrun launch.

Under ``torchrun --nproc_per_node W`` every rank runs the same scoring (or bilevel) code on the same
inputs, but each streams only its own rows: the shards are CONTIGUOUS, rank r of W reads rows
[r n // W, (r + 1) n // W) of every n-row problem (``rows``; ``tensors.chunks`` applies it). What the
passes return is then made whole:

- row sums (loss, gradient, Hessian, Hessian-vector products, Jacobi diagonal, EKFAC factors and
  eigenbasis curvatures, the teacher-head Gram and cross products, validation loss and gradient, the
  pool's column sums for its mean and std, and the first NaN/Inf of the NaN check) are
  each rank's partial, combined by :func:`total`: every rank all-gathers the partials and adds them in
  rank order 0, 1, ..., W-1 (never a ring all-reduce, whose association depends on the segment), so
  every rank holds bitwise the same sum and takes the same Newton steps, line-search decisions and CG
  iterations. Terms that are not row sums (the ridge) are added on rank 0 alone (:func:`lead`).
- per-sample outputs (losses, residuals, scores) are put back in row order by :func:`gather`.

gloo carries CPU tensors, nccl CUDA tensors (a gloo group is opened beside an nccl default group for
the CPU ones); device "cuda" means cuda:LOCAL_RANK on each rank. Artefacts: :func:`get_or_compute`
computes on every rank outside the store's lock (the computation is collective), rank 0 alone saves,
the others wait at a barrier and load what it wrote.

Not distributed (no process group, or one process), or inside :func:`local`: ``rows(n) = (0, n)``,
``total`` and ``gather`` return their input and ``lead()`` is true, so the single-process path is the
same code, bit for bit. Against one process, W ranks move the chunk boundaries and the order in which
float64 partials meet: float64 sums (loss, gradient) agree to ~1e-15 relative, float32-product sums
(Hessian, its products, EKFAC) to ~1e-7. Measured with 2 ranks: theta* to 1e-12 relative (the fit's
tolerance), per-sample losses 1e-13, scores 1e-7 (max |difference| / max |s|) with the same ranking on
a seeded mixture (cg and ekfac), 4e-6 on digits (ekfac; Spearman > 0.9999), J 1e-15, hypergradient
1e-7, learned (alpha, beta) 1e-9 and the same subset; tests/test_sharded_influence.py checks it.
Replicated math (CG recurrences, eigh, Cholesky) assumes the ranks run the same build of torch on
the same kind of device, as DDP does.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

import torch

_SLAB = 1 << 22  # elements per all_gather of a large sum (32 MiB in float64, times W on every rank)
_state = {"local": 0, "gloo": None}


def context() -> tuple[int, int]:
    """(rank, world size) of the sharding: (0, 1) when not distributed or inside :func:`local`. Opens the
    process group (models.training.distributed_context) when launched by torchrun and not yet open."""
    if _state["local"]:
        return 0, 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from ifbeta.models.training import distributed_context

        return distributed_context()
    return 0, 1


def active() -> bool:
    """True when rows are sharded over more than one process."""
    return context()[1] > 1


def lead() -> bool:
    """True on rank 0 (and when not sharded): the rank that adds non-row terms and writes artefacts."""
    return context()[0] == 0


def rows(count: int) -> tuple[int, int]:
    """[start, stop) of this rank's contiguous shard of ``count`` rows."""
    rank, world = context()
    return rank * count // world, (rank + 1) * count // world


@contextmanager
def local():
    """Within the block, passes are not sharded (every rank alone streams all rows, as one process)."""
    _state["local"] += 1
    try:
        yield
    finally:
        _state["local"] -= 1


def device(requested: torch.device) -> torch.device:
    """cuda:LOCAL_RANK for a bare "cuda" when sharded (one GPU per rank, as nccl needs); else unchanged."""
    if requested.type == "cuda" and requested.index is None and active():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return requested


def _all_gather(flat: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``flat`` (same length everywhere), in rank order."""
    import torch.distributed as dist

    nccl = dist.get_backend() == "nccl"
    if not nccl and flat.device.type != "cpu":  # gloo: through host memory
        return [part.to(flat.device) for part in _all_gather(flat.cpu())]
    group = None
    if nccl and flat.device.type == "cpu":
        if _state["gloo"] is None:  # collective: every rank reaches its first CPU reduction together
            _state["gloo"] = dist.new_group(backend="gloo")
        group = _state["gloo"]
    parts = [torch.empty_like(flat) for _ in range(context()[1])]
    dist.all_gather(parts, flat.contiguous(), group=group)
    return parts


def total(*tensors: torch.Tensor):
    """The sum over ranks of each tensor (same shapes and dtype on every rank), added in rank order, so
    bitwise equal on every rank; the inputs themselves when not sharded. One tensor in, one out."""
    if not active():
        return tensors[0] if len(tensors) == 1 else tensors
    flat = torch.cat([tensor.reshape(-1) for tensor in tensors])
    summed = torch.empty_like(flat)
    for start in range(0, flat.numel(), _SLAB):
        parts = _all_gather(flat[start:start + _SLAB])
        slab = parts[0].clone()
        for part in parts[1:]:
            slab += part
        summed[start:start + _SLAB] = slab
    out, offset = [], 0
    for tensor in tensors:
        out.append(summed[offset:offset + tensor.numel()].reshape(tensor.shape))
        offset += tensor.numel()
    return out[0] if len(out) == 1 else tuple(out)


def gather(tensor: torch.Tensor, count: int) -> torch.Tensor:
    """This rank's per-sample rows (its shard of ``count``, (m, ...)) -> all ``count`` rows in row order."""
    if not active():
        return tensor
    world = context()[1]
    sizes = [(r + 1) * count // world - r * count // world for r in range(world)]
    padded = tensor.new_zeros((max(sizes),) + tuple(tensor.shape[1:]))
    padded[:len(tensor)] = tensor
    parts = _all_gather(padded.reshape(-1))
    return torch.cat([part.reshape(padded.shape)[:size] for part, size in zip(parts, sizes)])


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one."""
    if not active():
        return bool(flag)
    return bool(total(torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)) > 0)


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def get_or_compute(store, kind: str, config: dict, inputs, compute, *, mmap=False):
    """``store.get_or_compute`` when one process computes. Sharded: when the artefact is missing on any
    rank, every rank runs ``compute`` (collective) outside the store's lock, rank 0 saves it, and after
    a barrier every rank loads what rank 0 wrote. Returns (arrays, meta, key)."""
    if not active():
        return store.get_or_compute(kind, config, inputs, compute, mmap=mmap)
    from ifbeta.store import make_key

    computed = None
    if any_rank(not store.exists(kind, make_key(config, inputs))):
        computed = compute()
        if lead():
            store.get_or_compute(kind, config, inputs, lambda: computed, mmap=mmap)
    barrier()

    def written():
        if computed is None:
            raise RuntimeError(f"{kind} artefact unreadable on rank {context()[0]}; rerun the command")
        return computed

    return store.get_or_compute(kind, config, inputs, written, mmap=mmap)
