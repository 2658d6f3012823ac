"""Benchmark grids (docs/BENCHMARKS.md): what is measured. A grid is (method x ratio x seed x budget)
plus the full-pool ceiling per seed; ``PRESETS`` names the recorded ones."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

CHEAP_METHODS = ("random", "random-balanced", "ifbeta", "ifbeta-entropy", "influence-top", "entropy",
                 "el2n-teacher", "ccs", "dual-beta", "moderate")


@dataclass(frozen=True)
class BenchSpec:
    dataset: str
    teacher: str = "auto"
    student: str | None = None
    pool: int | None = None
    ratios: tuple[float, ...] = (0.5, 0.7, 0.9)
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = CHEAP_METHODS
    budgets: tuple[str, ...] = ("epochs",)
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float = 0.05
    steps_ratios: tuple[float, ...] | None = None  # ratios run under the steps budget (None: all)
    notes: tuple[str, ...] = field(default_factory=tuple)
    full: bool = True  # include the full-pool ceiling (one run per seed)
    policy: dict = field(default_factory=dict)  # PolicyConfig overrides for ifbeta / ifbeta-entropy (e.g. shrinkage)
    teacher_arch: str | None = None  # the teacher's architecture when its checkpoint does not record it
    trust_pickle: bool = False  # allow a pickled or TorchScript teacher (runs code from the file)
    skip_corrupt: bool = False  # leave unreadable ImageFolder images out
    proxy: str = "linear"  # proxy family of the influence scores and of J (influence.families): linear | knn

    def influence_config(self):
        """The InfluenceConfig every selection of the grid is made with (its proxy family)."""
        from ifbeta.config import InfluenceConfig, ProxyConfig

        return InfluenceConfig(proxy=ProxyConfig(family=self.proxy))


PRESETS = {
    "digits": BenchSpec(dataset="digits", seeds=(0, 1, 2, 3, 4), epochs=30,
                        notes=("digits: for tests and demos, not for claims",)),
    "cifar10-cpu": BenchSpec(dataset="imagefolder:../shared/data/cifar10", pool=10_000, student="resnet8",
                             epochs=15, budgets=("epochs", "steps"), steps_ratios=(0.5, 0.7), batch_size=256,
                             learning_rate=0.1,
                             notes=("pool: fixed stratified 10,000 of the 50,000 training images (seed 0)",)),
    "cifar10-power": BenchSpec(dataset="imagefolder:../shared/data/cifar10", pool=10_000, student="resnet8",
                               epochs=15, batch_size=256, learning_rate=0.1, seeds=tuple(range(8)),
                               ratios=(0.5, 0.7, 0.9), budgets=("epochs",), full=True,
                               methods=("random", "ifbeta", "ifbeta-knn", "kcenter", "facility-location", "ccs"),
                               notes=("pool: fixed stratified 10,000 of the 50,000 training images (seed 0), "
                                      "as in cifar10-cpu",
                                      "8 paired seeds: the 95% t-interval of each paired difference to random")),
    "paper": BenchSpec(dataset="cifar100", teacher="auto", student="resnet8x4", ratios=(0.3, 0.5, 0.7, 0.9),
                       epochs=240, batch_size=64, learning_rate=0.05, budgets=("epochs", "steps"),
                       notes=("needs a GPU; teacher resnet32x4 via --teacher", "cosine schedule")),
}


def cells(spec: BenchSpec) -> list[dict]:
    """Every distillation run of the grid: one dict per (method, ratio, seed, budget) + full per seed."""
    out = [{"method": "full", "ratio": 0.0, "seed": s, "budget": "epochs"} for s in spec.seeds] if spec.full else []
    for budget in spec.budgets:
        ratios = spec.ratios if budget == "epochs" or spec.steps_ratios is None else spec.steps_ratios
        out += [{"method": m, "ratio": r, "seed": s, "budget": budget}
                for r in ratios for m in spec.methods for s in spec.seeds]
    return out


def cell_name(cell: dict) -> str:
    if cell["method"] == "full":
        return f"full-s{cell['seed']}"
    return f"{cell['method']}-r{cell['ratio']:g}-s{cell['seed']}-{cell['budget']}"


def spec_from(preset: str | None, **overrides) -> BenchSpec:
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset] if preset else BenchSpec(dataset=overrides.get("dataset") or "digits")
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
