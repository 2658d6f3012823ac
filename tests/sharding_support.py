"""One small influence problem scored and pruned by the library, for tests/test_sharded_influence.py.

``results()`` returns the arrays to compare. Run as a script (``torchrun ... tests/sharding_support.py
OUT``) every rank computes them with its rows sharded (gloo) and writes OUT/rank<r>.npz; called in one
process, it is the single-process reference.
"""
import os
import sys
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]  # this checkout
from influence_problems import mixture  # noqa: E402

SOLVERS = ("cg", "ekfac", "direct")
RATIO = 0.5


def problem():
    """1200 samples, d = 10, C = 4: each fold (600) is over 2 C(d+1) rows, so fits are Newton-CG."""
    return mixture(1200, 10, 4, seed=3, corrupted=60)


class Reads:
    """A 2-D array that records which rows were read through it (slices only, as the chunked passes read)."""

    def __init__(self, array):
        self.array, self.shape, self.rows = array, array.shape, set()

    def __len__(self):
        return len(self.array)

    def __getitem__(self, index):
        self.rows.update(range(*index.indices(len(self.array))))
        return self.array[index]


def pool_statistics() -> dict:
    """The pool's mean/std (a constant column included), the rows this process read for them, and the
    row a NaN in the teacher logits is reported at (placed in the last rows, rank 1's shard under 2 ranks)."""
    from ifbeta.influence import scores

    features, teacher, _ = problem()
    features = np.c_[features, np.full(len(features), 0.1)]
    reads = Reads(features)
    mean, std = scores.pool_statistics(reads, teacher, 128)
    spoiled = teacher.copy()
    spoiled[1100, 2] = np.nan
    try:
        scores.pool_statistics(features, spoiled, 128)
        reported = -1
    except ValueError as error:
        reported = int(str(error).split("first at row ")[1].split(",")[0])
    return {"pool_mean": mean, "pool_std": std, "nan_row": np.array(reported),
            "rank_rows_read": np.array(sorted(reads.rows))}


def results() -> dict:
    import torch

    from ifbeta.config import InfluenceConfig, KDConfig, PolicyConfig
    from ifbeta.influence import scores
    from ifbeta.policy import bilevel, hypergradient, inner

    torch.set_num_threads(1)
    features, teacher, labels = problem()
    out = pool_statistics()
    for solver in SOLVERS:  # mu chosen by validation: choose_mu's fold fits are sharded too
        estimator = "newton" if solver == "direct" else "first_order"  # direct: the dense Newton estimator
        result = scores.score(features, teacher, labels,
                              config=InfluenceConfig(solver=solver, estimator=estimator, chunk_size=256))
        out[f"scores_{solver}"], out[f"mu_{solver}"] = result.scores, np.array(result.mu)
        out[f"kd_loss_{solver}"] = result.teacher_scores["kd_loss"]
    axis = out["scores_cg"]
    config = PolicyConfig(steps=3, seed=0)
    prepared = inner.prepare(features, teacher, labels, axis, kd=KDConfig(), mu=None, bias_damping=1e-3,
                             config=config)
    evaluation = hypergradient.relaxed(prepared, np.log([1.6, 0.7]), RATIO)
    out["J"], out["hypergradient"] = np.array(evaluation.J), np.asarray(evaluation.gradient)
    out["theta"] = np.stack([fold.theta.cpu().numpy() for fold in prepared.folds])
    learned = bilevel.optimise_policy(features, teacher, labels, ratios=[RATIO], axis_values=axis, steps=3)[0]
    out["alpha_beta"] = np.array([learned.alpha, learned.beta])
    out["policy_indices"] = np.asarray(learned.indices)
    return out


if __name__ == "__main__":
    import torch.distributed as dist

    dist.init_process_group("gloo")
    arrays = results()
    np.savez(Path(sys.argv[1]) / f"rank{os.environ['RANK']}.npz", **arrays)
    dist.barrier()
    dist.destroy_process_group()
