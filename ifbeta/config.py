"""Frozen configuration dataclasses shared by every step.

One KD setting (tau, lam) is shared by the linear proxy (influence, bilevel) and by the real
distillation, so the proxy optimises exactly the loss the student will be trained with.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class KDConfig:
    """Hinton KD loss: (1 - lam) * CE(student, y) + lam * tau^2 * KL(p_teacher^tau || p_student^tau)."""

    tau: float = 4.0  # softmax temperature; > 1 softens the teacher's distribution
    lam: float = 0.9  # weight of the KD term; 0 = plain cross-entropy, 1 = pure distillation

    def to_dict(self) -> dict:
        return asdict(self)


KNN_FIELDS = ("family", "neighbours", "neighbour_grid", "bandwidth", "bandwidth_grid")


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy student of docs/METHOD.md: its family (influence.families.FAMILIES) and settings.

    family "linear": the KD-aligned linear head of section 2 (mu ... max_iterations apply);
    "knn": the soft k-nearest-neighbour smoother of section 9 (neighbours ... bandwidth_grid apply).
    """

    kd: KDConfig = field(default_factory=KDConfig)
    mu: float | None = None  # ridge strength; None = choose by validation over mu_grid
    mu_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    bias_damping: float = 1e-3  # eps: the bias ridge is mu * eps (shift invariance of KD)
    tolerance: float = 1e-8  # stop the inner fit when ||grad|| < tolerance * (1 + ||grad_0||)
    max_iterations: int = 100  # Newton / L-BFGS iterations
    family: str = "linear"  # linear | knn
    neighbours: int | None = None  # knn: k, units of weight mass per prediction; None = by validation
    neighbour_grid: tuple[int, ...] = (5, 10, 20, 50)
    bandwidth: float | None = None  # knn: h in standardised feature units; None = by validation
    bandwidth_grid: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)  # x median distance to the k-th neighbour

    def to_dict(self) -> dict:
        """The settings as a dict, an artefact key's input; the linear family leaves the k-NN settings (and
        the family) out, so the keys of everything computed before families existed stay valid."""
        settings = asdict(self)
        return settings if self.family != "linear" else {k: v for k, v in settings.items() if k not in KNN_FIELDS}


@dataclass(frozen=True)
class InfluenceConfig:
    """Cross-fitted influence scoring (docs/METHOD.md section 3)."""

    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    solver: str = "direct"  # direct | cg | ekfac
    folds: int = 2  # K of K-fold cross-fitting; no sample is scored by a fold that contains it
    seed: int = 0
    chunk_size: int = 8192  # samples per chunk when streaming features
    materialise_fold: bool = True  # float64 copy of the training fold for the fit; False = re-read it every pass
    # first_order: s_i = g_V^T H^-1 grad l_i | newton: exact removal step + L_V curvature (dense only)
    # auto: newton where a fold has < 4 samples per parameter (first-order is biased there), else first_order
    estimator: str = "auto"
    # cg solver only: stop at this relative residual, and after this many iterations (None: the solver's
    # defaults, 1e-10 and no cap). A capped solve is approximate; the log reports its final residual.
    cg_tolerance: float | None = None
    cg_max_iterations: int | None = None
    # where the proxy's math runs: "cpu" or "cuda" (float32 streams and matmuls, float64 accumulation and dense
    # solves). Not part of the artefact key: the device changes the scores only at float32 round-off.
    device: str = "cpu"

    def __post_init__(self):
        if self.solver != "cg" and (self.cg_tolerance is not None or self.cg_max_iterations is not None):
            raise ValueError(f"cg_tolerance and cg_max_iterations apply to the cg solver only, not {self.solver!r}")
        if self.cg_tolerance is not None and not 0.0 < self.cg_tolerance < 1.0:
            raise ValueError(f"cg_tolerance must be in (0, 1), got {self.cg_tolerance}")
        if self.cg_max_iterations is not None and self.cg_max_iterations < 1:
            raise ValueError(f"cg_max_iterations must be >= 1, got {self.cg_max_iterations}")

    def to_dict(self) -> dict:
        """The settings as a dict, the artefact key's input; unset cg limits and the device are left out, so
        the keys of scores computed before they existed stay valid."""
        settings = {k: v for k, v in asdict(self).items()
                    if not (k.startswith("cg_") and v is None) and k != "device"}
        return {**settings, "proxy": self.proxy.to_dict()}


@dataclass(frozen=True)
class PolicyConfig:
    """The bilevel Beta policy of docs/METHOD.md sections 4-5; ``optimise_policy(..., **config.to_dict())``."""

    estimator: str = "implicit"  # implicit | reinforce | grid (policy.estimators.ESTIMATORS)
    axis: str = "influence"  # what the Beta ranks: influence scores | teacher entropy (policy.axes.AXES)
    steps: int = 40  # maximum outer steps (implicit, reinforce)
    learning_rate: float = 0.1  # Adam step on (log alpha, log beta)
    shrinkage: float = 1.0  # c in units of the dataset's J spread; rho(r) = c * r / (1 - r); 0 = J alone
    stratify: bool = True  # ranks within class and per-class quotas
    seed: int = 0  # split, samplers and the final subset
    folds: int = 2  # 2 = cross-fitting (each half trains, the other validates); 1 = one split
    val_fraction: float = 0.5  # validation share when folds == 1
    init: tuple[float, float] = (1.0, 1.0)  # starting (alpha, beta); (1, 1) = uniform = random pruning
    tolerance: float = 1e-4  # stop when the relative objective change stays below this ...
    patience: int = 5  # ... for this many consecutive steps
    reinforce_samples: int = 4  # subsets drawn per fold and step (reinforce)
    grid_size: int = 7  # points per axis of the (alpha, beta) grid (grid estimator)
    # uniform: start at init, shrink towards U(0, 1) | ratio-adaptive: start at and shrink towards the
    # Beta(alpha0(r), beta0(r)) of policy.beta.ratio_adaptive_prior (hard kept at low r, easy at high r)
    start: str = "uniform"

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1 (outer steps of the policy), got {self.steps}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    def to_dict(self) -> dict:
        """The settings as a dict, an artefact key's input; start "uniform" is left out, so the keys of
        policies learned before it existed stay valid."""
        settings = asdict(self)
        return settings if self.start != "uniform" else {k: v for k, v in settings.items() if k != "start"}
