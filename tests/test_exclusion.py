"""Excluded samples (pipeline.choose(exclude=...), ifbeta select / prune --exclude) on digits: never kept,
the same k, their own store keys and subset folders, recorded in the manifest."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ifbeta import pipeline
from ifbeta.config import PolicyConfig
from ifbeta.policy.beta import k_for_ratio
from ifbeta.subsets import files as subset_files
from ifbeta.subsets import tags

QUICK = PolicyConfig(steps=2)


@pytest.fixture(scope="module")
def ws(session_store):
    return pipeline.open_workspace("digits", store=session_store)


@pytest.fixture(scope="module")
def excluded(ws):
    """Every fourth sample of the first 800: 200 ids spread over the classes."""
    return [ws.train.ids[i] for i in range(0, 800, 4)]


def rows_of(ws, ids):
    position = {sample_id: row for row, sample_id in enumerate(ws.train.ids)}
    return np.asarray(sorted(position[i] for i in ids))


@pytest.mark.parametrize("method", ["random-balanced", "moderate", "ifbeta"])
def test_excluded_samples_are_never_kept_and_k_is_unchanged(ws, excluded, method):
    ratio = 0.5
    whole = pipeline.choose(ws, method, ratio, policy_config=QUICK)
    chosen = pipeline.choose(ws, method, ratio, policy_config=QUICK, exclude=excluded)
    k = k_for_ratio(len(ws.train.ids), ratio)
    assert len(whole.indices) == len(chosen.indices) == k
    assert not np.isin(rows_of(ws, excluded), chosen.indices).any()
    assert np.all(np.diff(chosen.indices) > 0) and chosen.indices.dtype == np.int64
    assert chosen.info["excluded"] == len(excluded) and chosen.info["sub_pool"] == len(ws.train.ids) - len(excluded)
    assert chosen.info["sub_ratio"] == pytest.approx(1 - k / (len(ws.train.ids) - len(excluded)))
    if chosen.scores is not None:  # the method's scores are NaN exactly where nothing could be chosen
        assert np.array_equal(np.flatnonzero(np.isnan(chosen.scores)), rows_of(ws, excluded))


def test_the_exclusion_is_part_of_the_store_key(ws, excluded):
    pipeline.choose(ws, "moderate", 0.6, exclude=excluded)
    assert pipeline.choose(ws, "moderate", 0.6, compute=False) is None  # no exclusion: not computed yet
    assert pipeline.choose(ws, "moderate", 0.6, exclude=excluded[:-1], compute=False) is None  # another one
    again = pipeline.choose(ws, "moderate", 0.6, exclude=list(reversed(excluded)) + excluded[:3], compute=False)
    assert again is not None and again.info["excluded"] == len(excluded)  # order and repeats do not matter
    assert pipeline.subset_directory(ws, "moderate", 0.6, 0) != pipeline.subset_directory(
        ws, "moderate", 0.6, 0, exclude=excluded)
    assert pipeline.subset_directory(ws, "moderate", 0.6, 0, exclude=None) == pipeline.subset_directory(
        ws, "moderate", 0.6, 0)


def test_the_policy_is_learned_on_what_remains(ws, excluded):
    [learned] = pipeline.policies(ws, [0.5], QUICK, exclude=excluded)
    assert learned.ratio == 0.5 and learned.k == k_for_ratio(len(ws.train.ids), 0.5) == len(learned.indices)
    assert not np.isin(rows_of(ws, excluded), learned.indices).any()
    assert pipeline.policy_stored(ws, "ifbeta", 0.5, policy_config=QUICK, exclude=excluded)
    assert not pipeline.policy_stored(ws, "ifbeta", 0.5, policy_config=QUICK, exclude=excluded[:10])
    assert not pipeline.policy_stored(ws, "moderate", 0.5, exclude=excluded)


def test_the_manifest_records_the_exclusion(ws, excluded, tmp_path):
    chosen = pipeline.choose(ws, "ifbeta", 0.5, policy_config=QUICK, exclude=excluded)
    directory = pipeline.save_selection(ws, chosen, "ifbeta", 0.5, 0, exclude=excluded)
    assert directory.name.endswith("-x" + pipeline.exclusion_of(ws, excluded).sha256[:8])
    manifest = json.loads((directory / "manifest.json").read_text())
    extra = manifest["extra"]
    assert extra["excluded"] == len(excluded) and extra["excluded_ids"] == sorted(excluded)
    assert len(extra["excluded_sha256"]) == 64
    loaded = subset_files.load(directory, ws.train)
    assert np.array_equal(loaded.indices, chosen.indices)
    samples = (directory / "samples.csv").read_text().splitlines()
    header = samples[0].split(",")
    rows = {line.split(",")[header.index("id")]: line.split(",") for line in samples[1:]}
    inclusion = header.index("inclusion_probability")
    assert all(float(rows[i][inclusion]) == 0.0 and rows[i][header.index("kept")] == "0" for i in excluded)
    assert sum(float(row[inclusion]) for row in rows.values()) == pytest.approx(len(chosen.indices), rel=1e-6)
    with pytest.raises(ValueError, match="another exclusion"):
        pipeline.write_subset(ws, chosen, tmp_path / "s", ratio=0.5, seed=0)


def test_long_exclusions_record_count_and_hash_only(ws):
    many = ws.train.ids[:1001]
    chosen = pipeline.choose(ws, "random", 0.9, exclude=many)
    directory = pipeline.save_selection(ws, chosen, "random", 0.9, 0, exclude=many)
    extra = json.loads((directory / "manifest.json").read_text())["extra"]
    assert extra["excluded"] == 1001 and "excluded_ids" not in extra and extra["excluded_sha256"]


def test_too_few_left_and_unknown_ids_are_refused(ws):
    with pytest.raises(ValueError, match=r"leaves 347, fewer than the k=674"):
        pipeline.choose(ws, "moderate", 0.5, exclude=ws.train.ids[:1000])
    with pytest.raises(ValueError, match=r"^1 sample id\(s\) are not in this pool, e\.g\. 'cifar10/train/7'"):
        pipeline.choose(ws, "moderate", 0.5, exclude=["digits/1", "cifar10/train/7"])


# ------------------------------------------------------------------------------------------ command line
def ifbeta(*args, cache):
    return subprocess.run([sys.executable, "-m", "ifbeta.cli", "--cache", str(cache), *args],
                          capture_output=True, text=True, timeout=600)


def test_select_and_prune_leave_out_a_file_of_ids(ws, excluded, session_store, tmp_path):
    id_file = tmp_path / "leave-out.txt"
    id_file.write_text("# reviewed by hand\n" + "\n".join(excluded) + "\n")
    selected = ifbeta("select", "--method", "moderate", "--ratio", "0.5", "--exclude", str(id_file),
                      "--out", str(tmp_path / "mod"), "--json", cache=session_store.root)
    assert selected.returncode == 0, selected.stderr
    summary = json.loads(selected.stdout.strip().splitlines()[-1])
    assert summary["k"] == 674 and summary["excluded"] == len(excluded)
    indices = np.load(tmp_path / "mod" / "indices.npy")
    assert len(indices) == 674 and not np.isin(rows_of(ws, excluded), indices).any()
    assert json.loads((tmp_path / "mod" / "manifest.json").read_text())["extra"]["excluded"] == len(excluded)

    id_csv = tmp_path / "leave-out.csv"
    id_csv.write_text("index,id,note\n" + "".join(f"{n},{i},reviewed\n" for n, i in enumerate(excluded)))
    pruned = ifbeta("prune", "--ratio", "0.5", "--steps", "2", "--exclude", str(id_csv),
                    "--out", str(tmp_path / "pr"), "--json", cache=session_store.root)
    assert pruned.returncode == 0, pruned.stderr
    summary = json.loads(pruned.stdout.strip().splitlines()[-1])
    assert summary["subsets"][0]["k"] == 674 and summary["subsets"][0]["excluded"] == len(excluded)
    indices = np.load(tmp_path / "pr" / "indices.npy")
    assert len(indices) == 674 and not np.isin(rows_of(ws, excluded), indices).any()


def test_prune_leaves_out_a_stored_tag(ws, excluded, session_store, tmp_path):
    tags.add(session_store, ws.train.fingerprint, tags.EXCLUDE, excluded, known=ws.train.ids)
    try:
        pruned = ifbeta("prune", "--ratio", "0.5", "--steps", "2", "--exclude-tag", tags.EXCLUDE,
                        "--out", str(tmp_path / "pr"), "--json", cache=session_store.root)
        assert pruned.returncode == 0, pruned.stderr
        indices = np.load(tmp_path / "pr" / "indices.npy")
        assert len(indices) == 674 and not np.isin(rows_of(ws, excluded), indices).any()
        manifest = json.loads((tmp_path / "pr" / "manifest.json").read_text())
        assert manifest["method"] == "ifbeta" and manifest["extra"]["excluded_ids"] == sorted(excluded)
    finally:
        tags.remove(session_store, ws.train.fingerprint, tags.EXCLUDE, excluded)


@pytest.mark.parametrize("extra_args, message", [
    (["--exclude", "/no/such/ids.txt"], "does not exist"),
    (["--exclude-tag", "never used"], "no sample of this pool is tagged 'never used'"),
    (["--exclude", "UNKNOWN"], "not in this pool"),
])
def test_bad_exclusions_are_one_line_and_exit_code_2(session_store, tmp_path, extra_args, message):
    (tmp_path / "unknown.txt").write_text("digits/1\nnot-a-digit\n")
    extra_args = [str(tmp_path / "unknown.txt") if a == "UNKNOWN" else a for a in extra_args]
    result = ifbeta("select", "--method", "moderate", "--ratio", "0.5", *extra_args, "--out", str(tmp_path / "x"),
                    cache=session_store.root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "x").exists()
