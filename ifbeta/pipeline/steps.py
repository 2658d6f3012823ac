"""The cached steps up to a selection: dataset -> teacher -> features -> scores -> policy -> selection.

- ``open_workspace`` -> Workspace: the dataset's splits (train possibly a stratified pool of N), its
  teacher, and the teacher's features for the pool (features (N, d), logits (N, C), labels (N,)).
- ``scores`` -> (InfluenceResult, key): cross-fitted influence scores (N,) float64, > 0 helpful, and the
  teacher-only scores (N,) each.
- ``policies`` -> [PolicyResult]: the learned Beta policy (alpha, beta, trace; J lower is better) per ratio.
- ``choose`` -> Selection: indices (k,) int64, rows of the pool, k = round((1 - ratio) N); scores (N,)
  or None, NaN at excluded rows.

Each step goes through the artefact store, keyed by its config and the keys of its inputs, so a
CLI run, an app session or a server restart never recomputes what exists. Results are plain
dataclasses of numpy arrays (picklable; the app can hold them in ``st.cache_data``). Writing a
selection as a subset directory: ``subset_files.py``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

import numpy as np

from ifbeta import atomic
from ifbeta.config import InfluenceConfig, PolicyConfig
from ifbeta.data import datasets as data_module
from ifbeta.data.datasets import DatasetSplit
from ifbeta.influence import sharding
from ifbeta.models.features import FeatureSet, teacher_features
from ifbeta.models.teachers import Teacher, resolve_teacher
from ifbeta.progress import OnStep
from ifbeta.selection.beta_policy import POLICY_METHODS, method_influence_config, method_policy_config
from ifbeta.store import Store, json_ready, make_key
from ifbeta.subsets import exclusion as exclusions
from ifbeta.subsets.exclusion import Exclusion

log = logging.getLogger("ifbeta.pipeline")  # records under the package's name, as the CLI prints it


@dataclass
class Workspace:
    """A dataset's splits (train possibly reduced to a pool), its teacher, and the teacher's features."""

    train: DatasetSplit
    test: DatasetSplit
    teacher: Teacher
    features: FeatureSet
    store: Store
    pool: int | None = None

    def teacher_record(self) -> dict:
        return {"arch": self.teacher.info.arch, "checkpoint_sha256": self.teacher.info.sha256}


def pool_of(train: DatasetSplit, pool: int | None) -> DatasetSplit:
    """The training pool: a fixed stratified ``pool`` samples of ``train`` (None or 0: all of it)."""
    return train.subset(data_module.stratified_pool(train.labels, pool), split="train") if pool else train


def load_splits(dataset: str, *, store: Store, pool: int | None = None, skip_corrupt: bool = False
                ) -> tuple[DatasetSplit, DatasetSplit]:
    train = data_module.load(dataset, "train", store=store, skip_corrupt=skip_corrupt)
    test = data_module.load(dataset, "test", store=store, skip_corrupt=skip_corrupt)
    return pool_of(train, pool), test


def open_workspace(dataset: str, *, teacher: str = "auto", store: Store | None = None, pool: int | None = None,
                   skip_corrupt: bool = False, teacher_arch: str | None = None, trust_pickle: bool = False,
                   on_step: OnStep | None = None,
                   splits: tuple[DatasetSplit, DatasetSplit] | None = None) -> Workspace:
    """Load (or decode once) the dataset, resolve the teacher (training ``auto`` when missing) and
    extract its features for the training pool (cached). ``splits``: the (full train, test) of
    ``dataset`` already loaded with ``load_splits`` (no pool), so a caller holding them skips reloading."""
    store = store or Store.default()
    full_train, test = splits or load_splits(dataset, store=store, skip_corrupt=skip_corrupt)
    # the auto teacher is trained on the full training split, never on the pool alone
    train = pool_of(full_train, pool)
    resolved = resolve_teacher(teacher, full_train, store=store, arch=teacher_arch, test=test,
                               trust_pickle=trust_pickle, on_step=on_step)
    features = teacher_features(resolved, train, store=store, on_step=on_step)
    return Workspace(train, test, resolved, features, store, pool)


# ---------------------------------------------------------------------------- influence
def scores_key(workspace: Workspace, config: InfluenceConfig = InfluenceConfig()) -> str:
    """The store key ``scores`` uses for ``config`` (known without computing anything)."""
    return make_key({"influence": config.to_dict()}, [workspace.features.key])


def scores(workspace: Workspace, config: InfluenceConfig = InfluenceConfig(), *, on_step: OnStep | None = None):
    """Cross-fitted influence scores and teacher-only scores for the pool (cached); -> InfluenceResult."""
    from ifbeta.influence import families
    from ifbeta.influence import scores as influence

    features = workspace.features
    settings = {"influence": config.to_dict()}

    def compute():
        result = families.score(features.features, features.logits, features.labels, config=config, on_step=on_step)
        arrays = {"scores": result.scores, "fold": result.fold}
        arrays.update({f"teacher_{k}": v for k, v in result.teacher_scores.items()})
        meta = {"mu": result.mu, "solver": result.solver, "seconds": result.seconds,
                "grad_norms": [float(g) for g in result.grad_norms], "mu_table": result.mu_table}
        return arrays, meta

    # under torchrun every rank computes its shard (collective, outside the lock); rank 0 writes
    arrays, meta, key = sharding.get_or_compute(workspace.store, "scores", settings, [features.key], compute)
    teacher_scores = {k[len("teacher_"):]: np.asarray(v) for k, v in arrays.items() if k.startswith("teacher_")}
    result = influence.InfluenceResult(np.asarray(arrays["scores"]), np.asarray(arrays["fold"]), meta["mu"],
                                       meta["solver"], teacher_scores, meta["seconds"], meta["grad_norms"],
                                       meta["mu_table"])
    return result, key


# ---------------------------------------------------------------------------- policy
class _PolicyCheckpoint:
    """The bilevel loop's state, rewritten atomically after every outer step so a killed ``prune``
    resumes at the step it reached: ``<store>/checkpoints/policies-<key>.json``."""

    def __init__(self, store: Store, key: str):
        self.path = store.root / "checkpoints" / f"policies-{key}.json"

    def read(self) -> dict | None:
        try:
            state = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as error:
            log.warning("ignoring unreadable policy checkpoint %s: %s", self.path, error)
            return None
        if state.get("ratio") is not None:
            log.info("resuming the policy at ratio %g, step %d", state["ratio"], state["adam"]["step"])
        return state

    def write(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.path, json.dumps(json_ready(state)))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _policy_settings(config: PolicyConfig, ratio: float, influence_config: InfluenceConfig,
                     exclusion: "Exclusion | None") -> dict:
    settings = {"policy": config.to_dict(), "ratio": float(ratio), "kd": influence_config.proxy.kd.to_dict()}
    if "family" in (proxy := influence_config.proxy.to_dict()):  # not linear (linear policies keep their keys)
        settings["proxy"] = proxy
    if exclusion is not None:  # only then, so the keys of policies learned on the whole pool stay as they were
        settings["exclude"] = exclusion.sha256
    return settings


def policies(workspace: Workspace, ratios: list[float], config: PolicyConfig = PolicyConfig(), *,
             influence_config: InfluenceConfig = InfluenceConfig(), exclude: list[str] | None = None,
             compute: bool = True, on_step: OnStep | None = None) -> list | None:
    """The learned Beta policy for each ratio (cached per ratio); -> list[bilevel.PolicyResult].

    ``exclude``: sample ids left out; the policy is then learned on what remains (the sub-pool), at
    the sub-pool ratio that keeps the same k = round((1 - ratio) * N) (``Exclusion.sub_ratio``); the
    result carries ``ratio`` and ``indices`` (rows of the whole pool) as asked. With ``compute=False``
    nothing is computed: None unless every ratio is in the store already."""
    from ifbeta.policy import axes, bilevel

    features = workspace.features
    exclusion = exclusion_of(workspace, exclude)

    def settings_for(ratio: float) -> dict:
        return _policy_settings(config, ratio, influence_config, exclusion)

    inputs = [features.key, scores_key(workspace, influence_config)]
    store = workspace.store
    missing = [r for r in ratios if sharding.any_rank(not store.exists("policies", make_key(settings_for(r), inputs)))]
    if missing and not compute:
        return None
    if missing:  # one call shares mu, the J scale and warm starts across every missing ratio
        result, _ = scores(workspace, influence_config, on_step=on_step)
        values = axes.axis_values(result, config.axis)
        rows = np.arange(len(values)) if exclusion is None else exclusion.rows
        pick = (lambda array: array) if exclusion is None else (lambda array: np.asarray(array[rows]))
        asked = {float(r) if exclusion is None else exclusion.sub_ratio(r): float(r) for r in missing}
        progress_settings = {k: v for k, v in settings_for(0.5).items() if k not in ("ratio", "exclude")}
        if exclusion is not None:
            progress_settings["exclude"] = exclusion.sha256
        progress = _PolicyCheckpoint(store, make_key(progress_settings, inputs))

        def save(learned) -> None:  # each ratio is stored as soon as it is learned, in rows of the whole pool
            if not sharding.lead():  # under torchrun rank 0 writes; the others load after the barrier below
                return
            ratio = asked.get(float(learned.ratio), float(learned.ratio))
            document = {k: json_ready(v) for k, v in asdict(learned).items() if k != "indices"}
            document["ratio"] = ratio
            key = make_key(settings_for(ratio), inputs)
            with store.lock("policies", key):
                if not store.exists("policies", key):
                    store.save("policies", key, settings_for(ratio), {"indices": rows[learned.indices]}, document)

        bilevel.optimise_policy(pick(features.features), pick(features.logits), pick(features.labels),
                                ratios=list(asked), axis_values=pick(values),
                                kd=influence_config.proxy.kd, proxy=influence_config.proxy, on_step=on_step,
                                checkpoint=progress.write if sharding.lead() else None, device=influence_config.device,
                                resume=progress.read(), on_result=save, **asdict(config))
        if sharding.lead():
            progress.remove()
        sharding.barrier()
    out = []
    for ratio in ratios:
        arrays, meta = store.load("policies", make_key(settings_for(ratio), inputs), settings_for(ratio))
        out.append(bilevel.PolicyResult(**{**meta, "indices": np.asarray(arrays["indices"])}))
    return out


# ---------------------------------------------------------------------------- selection
def exclusion_of(workspace: Workspace, exclude: list[str] | None) -> Exclusion | None:
    """``subsets.exclusion.exclusion_of`` over the workspace's pool ids; None when nothing is excluded."""
    if exclude is None:
        return None
    return exclusions.exclusion_of(workspace.train.ids, exclude)


def selection_inputs(workspace: Workspace, influence_result=None, *, with_images: bool = False,
                     rows: np.ndarray | None = None):
    """The SelectionInputs of the pool, or of its ``rows`` only ((M,) int64 sorted: a sub-pool)."""
    from ifbeta.selection.registry import SelectionInputs

    features = workspace.features

    def pick(array):
        return array if rows is None or array is None else array[rows]

    teacher_scores = None if influence_result is None else influence_result.teacher_scores
    images = workspace.train.images if with_images else None
    if images is not None and rows is not None:
        import torch

        images = images[torch.as_tensor(rows)]
    return SelectionInputs(features=pick(features.features), teacher_logits=pick(features.logits),
                           labels=pick(features.labels),
                           influence=None if influence_result is None else pick(influence_result.scores),
                           teacher_scores=None if teacher_scores is None else
                           {name: pick(values) for name, values in teacher_scores.items()},
                           images=images, num_classes=workspace.train.num_classes)


def _selection_settings(method: str, ratio: float, seed: int, options: dict, policy_config: PolicyConfig,
                        exclusion: Exclusion | None) -> dict:
    settings = {"method": method, "ratio": float(ratio), "seed": seed, "options": json_ready(options)}
    if method in POLICY_METHODS:
        settings["policy"] = method_policy_config(method, policy_config).to_dict()
    if exclusion is not None:  # only then, so selections made on the whole pool keep their keys
        settings["exclude"] = exclusion.sha256
    return settings


def policy_stored(workspace: Workspace, method: str, ratio: float, *, policy_config: PolicyConfig = PolicyConfig(),
                  influence_config: InfluenceConfig = InfluenceConfig(), exclude: list[str] | None = None) -> bool:
    """Whether ``method`` is an IF-Beta method whose policy at ``ratio`` (and exclusion) is in the store,
    so ``choose`` only draws from it (cheap: no learning)."""
    if method not in POLICY_METHODS:
        return False
    influence_config = method_influence_config(method, influence_config)
    settings = _policy_settings(method_policy_config(method, policy_config), ratio, influence_config,
                                exclusion_of(workspace, exclude))
    return workspace.store.exists("policies", make_key(settings, [workspace.features.key,
                                                                   scores_key(workspace, influence_config)]))


def _select(workspace: Workspace, method: str, ratio: float, seed: int, options: dict, result, learned,
            exclusion: Exclusion | None) -> tuple[dict, dict]:
    """The selection arrays (indices: rows of the whole pool; scores: NaN at excluded rows) and info."""
    from ifbeta.policy.beta import k_for_ratio
    from ifbeta.selection import registry as selection

    rows = None if exclusion is None else exclusion.rows
    sub_ratio = ratio if exclusion is None else exclusion.sub_ratio(ratio)
    method_name = "ifbeta-fixed" if learned is not None else method
    if rows is not None and sub_ratio <= 0.0:  # exactly k remain: keep them all
        chosen = selection.Selection(np.arange(len(rows)), None, {"method": method_name, "seconds": 0.0,
                                                                  "k": len(rows), "ratio": sub_ratio, "seed": seed})
    else:
        inputs = selection_inputs(workspace, result, with_images=method in ("el2n-train", "forgetting"), rows=rows)
        chosen = selection.select(method_name, inputs, sub_ratio, seed=seed, **options)
    info = {**json_ready(chosen.info), "method": method, "ratio": float(ratio)}
    if learned is not None:
        info.update(alpha=learned.alpha, beta=learned.beta, trace=json_ready(learned.trace),
                    policy_seconds=sum(step.get("seconds", 0.0) for step in learned.trace))
    indices, method_scores = chosen.indices, chosen.scores
    if rows is not None:  # back to rows of the whole pool
        indices = rows[chosen.indices]
        if method_scores is not None:
            method_scores = np.full(exclusion.n, np.nan)
            method_scores[rows] = chosen.scores
        info.update(excluded=len(exclusion.ids), excluded_sha256=exclusion.sha256, sub_pool=len(rows),
                    sub_ratio=sub_ratio)
    if len(indices) != k_for_ratio(len(workspace.features.labels), ratio):
        raise RuntimeError(f"{method} kept {len(indices)} samples, expected k for ratio {ratio:g}")
    arrays = {"indices": np.asarray(indices, dtype=np.int64)}
    if method_scores is not None:
        arrays["scores"] = np.asarray(method_scores, dtype=np.float64)
    return arrays, info


def choose(workspace: Workspace, method: str, ratio: float, *, seed: int = 0, options: dict | None = None,
           policy_config: PolicyConfig = PolicyConfig(), influence_config: InfluenceConfig = InfluenceConfig(),
           exclude: list[str] | None = None, compute: bool = True, on_step: OnStep | None = None):
    """Run a selection method on the pool (cached); -> selection.Selection (indices: rows of the pool).

    For the IF-Beta methods (``POLICY_METHODS``) the policy is learned once per ratio (seed of
    ``policy_config``) and the subset is drawn from it with ``seed``; ``ifbeta-knn`` scores and learns
    with the k-NN proxy whatever ``influence_config`` names (``method_influence_config``). ``exclude``: sample ids never
    kept; the method runs on the rest (the sub-pool, a policy is learned there) and keeps the same
    k = round((1 - ratio) * N) as without them; ``scores`` are NaN at the excluded rows, and ``info``
    says ``excluded`` (count) and ``excluded_sha256``. ValueError when fewer than k samples remain or an
    id is not in the pool. With ``compute=False`` nothing is computed: None unless the selection is in
    the store already."""
    from ifbeta.selection import registry as selection

    options, influence_config = dict(options or {}), method_influence_config(method, influence_config)
    exclusion = exclusion_of(workspace, exclude)
    if exclusion is not None:
        exclusion.sub_ratio(ratio)  # fewer than k left: refuse before any work
    settings = _selection_settings(method, ratio, seed, options, policy_config, exclusion)
    inputs_keys = [workspace.features.key, scores_key(workspace, influence_config)]
    if not compute and not workspace.store.exists("selections", make_key(settings, inputs_keys)):
        return None
    result = learned = None
    if compute:
        result, _ = scores(workspace, influence_config, on_step=on_step)
        if method in POLICY_METHODS:
            config = method_policy_config(method, policy_config)
            learned = policies(workspace, [ratio], config, influence_config=influence_config, exclude=exclude,
                               on_step=on_step)[0]
            options = {"alpha": learned.alpha, "beta": learned.beta, "axis": config.axis,
                       "stratify": config.stratify, **options}

    def compute_selection():
        return _select(workspace, method, ratio, seed, options, result, learned, exclusion)

    arrays, info, _ = workspace.store.get_or_compute("selections", settings, inputs_keys, compute_selection)
    return selection.Selection(np.asarray(arrays["indices"]), np.asarray(arrays["scores"]) if "scores" in arrays
                               else None, info)

