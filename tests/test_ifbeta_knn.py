"""ifbeta-knn: IF-Beta over the k-NN proxy's influence ranks with J from the k-NN proxy, whatever
proxy family the rest of a grid uses."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ifbeta.config import InfluenceConfig, PolicyConfig, ProxyConfig
from ifbeta.selection import beta_policy
from ifbeta.selection.registry import METHODS, select
from tests.selection_problems import make_problem

KNN = InfluenceConfig(proxy=ProxyConfig(family="knn"))
QUICK = PolicyConfig(steps=3)


def test_method_influence_config_fixes_only_the_family():
    linear = InfluenceConfig(folds=3, seed=4)
    knn = beta_policy.method_influence_config("ifbeta-knn", linear)
    assert knn.proxy.family == "knn" and knn.folds == 3 and knn.seed == 4 and knn.proxy.kd == linear.proxy.kd
    assert beta_policy.method_influence_config("ifbeta-knn", knn) is knn
    for method in ("ifbeta", "ifbeta-entropy", "kcenter"):
        assert beta_policy.method_influence_config(method, linear) is linear
    assert beta_policy.method_policy_config("ifbeta-knn", QUICK) == dataclasses.replace(QUICK, axis="influence")
    assert "ifbeta-knn" in METHODS and METHODS["ifbeta-knn"].costly


def test_the_registry_method_ignores_another_familys_influence():
    problem = make_problem(n=160, d=5, images=False)  # problem.influence: random, not k-NN scores
    chosen = select("ifbeta-knn", problem, 0.6, seed=1, steps=3)
    reference = select("ifbeta", dataclasses.replace(problem, influence=None), 0.6, seed=1, steps=3, config=KNN)
    np.testing.assert_array_equal(chosen.indices, reference.indices)
    np.testing.assert_array_equal(chosen.scores, reference.scores)
    assert chosen.info["alpha"] == reference.info["alpha"] and chosen.info["beta"] == reference.info["beta"]


@pytest.mark.slow
def test_ifbeta_knn_in_a_linear_grid_equals_ifbeta_with_the_knn_config(session_store, digits_features, tmp_path):
    from ifbeta import pipeline
    from ifbeta.subsets import files

    workspace = pipeline.open_workspace("digits", store=session_store)
    linear = InfluenceConfig()
    for ratio, seed in ((0.7, 0), (0.5, 2)):
        knn = pipeline.choose(workspace, "ifbeta-knn", ratio, seed=seed, policy_config=QUICK, influence_config=linear)
        reference = pipeline.choose(workspace, "ifbeta", ratio, seed=seed, policy_config=QUICK, influence_config=KNN)
        plain = pipeline.choose(workspace, "ifbeta", ratio, seed=seed, policy_config=QUICK, influence_config=linear)
        np.testing.assert_array_equal(knn.indices, reference.indices)
        assert (knn.info["alpha"], knn.info["beta"]) == (reference.info["alpha"], reference.info["beta"])
        assert (knn.info["alpha"], knn.info["beta"]) != (plain.info["alpha"], plain.info["beta"])
    assert pipeline.policy_stored(workspace, "ifbeta-knn", 0.7, policy_config=QUICK, influence_config=linear)
    knn_scores, _ = pipeline.scores(workspace, KNN)
    np.testing.assert_array_equal(knn.scores, knn_scores.scores)  # the ranks are the k-NN proxy's
    linear_scores, _ = pipeline.scores(workspace, linear)
    written = pipeline.write_subset(workspace, knn, tmp_path / "subset", ratio=0.5, seed=2,
                                    influence_result=linear_scores)  # as a linear grid writes it
    loaded = files.load(written, workspace.train)
    np.testing.assert_array_equal(loaded.indices, knn.indices)
