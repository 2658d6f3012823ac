"""Argument helpers shared by the sub-commands: dataset/teacher flags, progress bars, JSON output."""
from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from ifbeta.store import Store


def add_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="digits",
                        help="digits | cifar10 | cifar100 | mnist | fashion-mnist | imagefolder:<path> (default digits)")
    parser.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images and report them")
    parser.add_argument("--pool", type=int, default=None,
                        help="use a fixed class-stratified pool of this many training samples (seed 0)")


def add_teacher(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default="auto", help="checkpoint path, or 'auto' to find/train the default teacher")
    parser.add_argument("--teacher-arch", default=None, help="teacher architecture when the checkpoint does not record it")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow a pickled or TorchScript teacher (runs code from the file; only files you trust)")


def store_of(args) -> Store:
    return Store(args.cache) if getattr(args, "cache", None) else Store.default()


def load_splits(args):
    """(train, test) splits, the train split reduced to --pool when given; skipped images reported."""
    from ifbeta import pipeline

    train, test = pipeline.load_splits(args.dataset, store=store_of(args), pool=getattr(args, "pool", None),
                                       skip_corrupt=args.skip_corrupt)
    from ifbeta.data.datasets import hidden_warning

    hidden = hidden_warning((train, test))
    if hidden:
        print(hidden, file=sys.stderr)
    for split in (train, test):
        if split.skipped:
            print(f"skipped {len(split.skipped)} unreadable {split.split} image(s): "
                  f"{', '.join(split.skipped[:5])}{' ...' if len(split.skipped) > 5 else ''}", file=sys.stderr)
    return train, test


class ProgressBar:
    """An ``on_step`` callback drawing tqdm bars on stderr (batch events update, epoch events summarise).
    Training batches are labelled ``training`` (default: ``description``) plus "epoch i/n"."""

    def __init__(self, description: str, *, training: str | None = None):
        self.description, self.training = description, training or description
        self.bar: tqdm | None = None

    def __call__(self, step: int, info: dict) -> None:
        if info.get("event") == "notice":  # one line, above any bar
            tqdm.write(f"ifbeta: {info.get('text', '')}", file=sys.stderr)
            return
        total = info.get("batches") or info.get("total")
        if self.bar is None or (total and self.bar.total != total):
            self.close()
            self.bar = tqdm(total=total, desc=self.description, file=sys.stderr, leave=False, dynamic_ncols=True)
        if info.get("event") == "epoch":
            shown = {k: round(v, 4) for k, v in info.items() if k in ("train_loss", "train_acc", "test_top1")}
            tqdm.write(f"{self.training} epoch {info['epoch']}/{info.get('epochs', '?')} {shown}", file=sys.stderr)
            self.bar.reset()
            return
        if "epoch" in info:  # a training batch: say what trains and which epoch
            self.bar.set_description(f"{self.training} epoch {info['epoch'] + 1}/{info.get('epochs', '?')}",
                                     refresh=False)
        position = info.get("batch", step)
        self.bar.n = position
        postfix = {k: f"{v:.4g}" for k, v in info.items() if k in ("loss", "J", "alpha", "beta") and isinstance(v, float)}
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def print_json(payload: dict) -> None:
    """The last line printed: one JSON object."""
    print(json.dumps(payload, default=float, sort_keys=True))


def workspace(args, *, description: str = "teacher"):
    """Open the dataset, teacher and cached features from the shared flags."""
    from ifbeta import pipeline

    bar = ProgressBar(description, training="train teacher")
    try:
        ws = pipeline.open_workspace(args.dataset, teacher=args.teacher, store=store_of(args),
                                       pool=getattr(args, "pool", None), skip_corrupt=args.skip_corrupt,
                                       teacher_arch=args.teacher_arch, trust_pickle=args.trust_pickle, on_step=bar)
    finally:
        bar.close()
    from ifbeta.data.datasets import hidden_warning

    hidden = hidden_warning((ws.train, ws.test))
    if hidden:
        print(hidden, file=sys.stderr)
    return ws


def check_ratio(ratio: float) -> float:
    from ifbeta.errors import UserError

    if not 0.0 < ratio < 1.0:
        raise UserError(f"--ratio must lie strictly between 0 and 1 (the fraction pruned), got {ratio}")
    return ratio


PROXIES = ("linear", "knn")  # influence.families.FAMILIES, spelled out so building a parser imports nothing heavy


def proxy_config(args):
    """The ProxyConfig of --proxy, --neighbours and --bandwidth (the k-NN settings only with --proxy knn)."""
    from ifbeta.config import ProxyConfig
    from ifbeta.errors import UserError

    family = getattr(args, "proxy", "linear")
    neighbours, bandwidth = getattr(args, "neighbours", None), getattr(args, "bandwidth", None)
    if family != "knn" and (neighbours is not None or bandwidth is not None):
        raise UserError("--neighbours and --bandwidth set the knn proxy; add --proxy knn or leave them out")
    if neighbours is not None and neighbours < 1:
        raise UserError(f"--neighbours must be at least 1, got {neighbours}")
    if bandwidth is not None and not bandwidth > 0:
        raise UserError(f"--bandwidth must be positive, got {bandwidth}")
    tolerance = getattr(args, "fit_tolerance", None)
    if tolerance is None:
        return ProxyConfig(family=family, neighbours=neighbours, bandwidth=bandwidth)
    if family == "knn":
        raise UserError("--fit-tolerance sets the linear proxy's fit; the knn proxy has none: leave it out")
    if not 0 < tolerance < 1:
        raise UserError(f"--fit-tolerance must be between 0 and 1 (a relative gradient norm), got {tolerance:g}")
    return ProxyConfig(family=family, tolerance=tolerance)


def influence_config(args):
    from ifbeta.config import InfluenceConfig

    return InfluenceConfig(proxy=proxy_config(args), solver=getattr(args, "solver", "direct"),
                           estimator=getattr(args, "influence_estimator", "auto"),
                           cg_tolerance=getattr(args, "cg_tolerance", None),
                           cg_max_iterations=getattr(args, "cg_max_iterations", None),
                           device=influence_device(getattr(args, "device", "cpu")))


def influence_device(device: str) -> str:
    """--device, refused in one line (before any work) when it is cuda and CUDA is not available."""
    from ifbeta.errors import UserError

    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: CUDA is not available on this machine (torch sees no GPU); "
                            "use --device cpu")
    return device


def add_proxy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--proxy", default="linear", choices=PROXIES,
                        help="proxy student of the scores and of J: linear (KD-aligned linear head, default) or knn "
                             "(soft k-nearest-neighbour smoother of the teacher's soft labels; exact leave-one-out)")
    parser.add_argument("--neighbours", type=int, default=None, metavar="K",
                        help="knn only: neighbours per prediction (default: chosen by validation)")
    parser.add_argument("--bandwidth", type=float, default=None, metavar="H",
                        help="knn only: kernel bandwidth in standardised feature units (default: by validation)")


def add_influence(parser: argparse.ArgumentParser, *, proxy: bool = True) -> None:
    """The influence flags; ``proxy``: with --proxy and its k-NN settings."""
    if proxy:
        add_proxy(parser)
    parser.add_argument("--solver", default="direct", choices=["direct", "cg", "ekfac"],
                        help="inverse-Hessian solver (direct: exact, cg: matrix-free, ekfac: approximate)")
    parser.add_argument("--influence-estimator", default="auto", choices=["auto", "first_order", "newton"],
                        help="first_order influence, newton (exact removal step, dense), or auto (newton when a "
                             "fold has < 4 samples per parameter)")
    parser.add_argument("--fit-tolerance", type=float, default=None, metavar="TOL",
                        help="linear proxy: stop its fit at ||grad|| <= TOL (1 + ||grad at the start||) (default "
                             "1e-8); what the scores need at ImageNet size: benchmarks/results/fit-tolerance.md")
    parser.add_argument("--cg-tolerance", type=float, default=None, metavar="TOL",
                        help="cg only: relative residual to stop at (default 1e-10)")
    parser.add_argument("--cg-max-iterations", type=int, default=None, metavar="N",
                        help="cg only: cap the iterations (approximate scores; default: no cap)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the linear proxy's math runs (float32 streams and matmuls, float64 "
                             "accumulation and dense solves; default cpu)")


def check_budget(workspace_or_train, ratio: float, *, stratify: bool = True) -> int:
    """k for ``ratio``; refuses (before any computing) a k below the class count under stratification."""
    from ifbeta.errors import UserError
    from ifbeta.policy.beta import k_for_ratio

    train = getattr(workspace_or_train, "train", workspace_or_train)
    k = k_for_ratio(len(train), ratio)
    if stratify and k < train.num_classes:
        raise UserError(f"ratio {ratio:g} keeps k={k} of {len(train)} samples, fewer than the {train.num_classes} "
                        "classes; lower the ratio")
    return k


def add_exclude(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exclude", default=None, metavar="FILE",
                        help="leave out the sample ids in FILE (one a line, '#' comments; or a CSV with an 'id' "
                             "column such as a subset's samples.csv); k stays round((1 - ratio) * N)")
    parser.add_argument("--exclude-tag", action="append", default=[], metavar="TAG",
                        help="leave out the samples tagged TAG in the store for this pool (repeatable; "
                             "the app's tag 'exclude')")


def excluded_ids(args, train) -> list[str] | None:
    """The sample ids ``--exclude FILE`` and ``--exclude-tag TAG`` name for the pool ``train`` (sorted,
    unique), or None when neither is given. A tag nobody used, or an id not in the pool, is refused."""
    from ifbeta.errors import UserError
    from ifbeta.subsets import tags

    ids: set[str] = set()
    if getattr(args, "exclude", None):
        ids.update(tags.read_id_list(args.exclude))
    wanted = getattr(args, "exclude_tag", None) or []
    if wanted:
        stored = tags.load(store_of(args), train.fingerprint)
        for tag in wanted:
            if tag not in stored:
                known = ", ".join(repr(t) for t in stored) or "none"
                raise UserError(f"no sample of this pool is tagged {tag!r} (tags: {known})")
            ids.update(stored[tag])
    tags.refuse_unknown(sorted(ids), set(train.ids))
    return sorted(ids) or None
