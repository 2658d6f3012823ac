"""The Python API rows of benchmarks/reliability.py: bad arrays, checkpoints, subsets, stores, tags and
uploads given to the engine's functions directly (exception type and message)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import reliability_inputs as inputs


def _arrays(b) -> None:
    from ifbeta.influence import scores
    from ifbeta.policy import beta

    rng = np.random.default_rng(0)
    x, logits, labels = rng.normal(size=(40, 3)), rng.normal(size=(40, 2)), np.arange(40) % 2
    for shape in ((40,), (40, 3, 2)):
        b.api(f"`scores.score` with {len(shape)}-D features {shape}", lambda s=shape: scores.score(np.ones(s), logits,
              labels), "clear error", (ValueError,), f"features must be a 2-d array (N, d), got shape {shape}")
    b.api("`scores.score` with 1-D teacher logits", lambda: scores.score(x, np.zeros(40), labels), "clear error",
          (ValueError,), "teacher_logits must be a 2-d array (N, C)")
    b.api("`scores.score` with 39 labels for 40 rows", lambda: scores.score(x, logits, labels[:39]), "clear error",
          (ValueError,), "labels")
    bad = x.copy()
    bad[5, 1] = np.nan
    b.api("`scores.score` with a NaN feature", lambda: scores.score(bad, logits, labels), "clear error", (ValueError,),
          "NaN")
    b.api("`scores.score` with labels outside [0, C)", lambda: scores.score(x, logits, labels + 5), "clear error",
          (ValueError,), "labels")
    u = (np.arange(10) + 0.5) / 10
    for value in (0.0, 1.0, 1.5, -0.2, np.nan):
        wrong = u.copy()
        wrong[3] = value
        b.api(f"`beta.sample_subset` with u[3] = {value} (outside (0, 1))",
              lambda w=wrong: beta.sample_subset(w, np.arange(10) % 2, 4, 2.0, 1.0, seed=0), "clear error",
              (ValueError,), ("strictly inside (0, 1)", "row 3"))
    b.api("`beta.policy_probabilities` with u[3] = 1.0", lambda: beta.policy_probabilities(
        np.where(np.arange(10) == 3, 1.0, u), np.arange(10) % 2, 4, 2.0, 1.0), "clear error", (ValueError,), "row 3")


def _checkpoints(b, train) -> None:
    from ifbeta.errors import ModelError, in_app
    from ifbeta.models import teachers

    c = b.ckpt
    said = {"text": "not a checkpoint (it is plain text)", "empty": "not a checkpoint (it is empty)",
            "folder": "is a folder, not a checkpoint file", "malicious pickle": "pickled Python objects",
            "malicious bare pickle": "pickle", "torchscript": "TorchScript archive",
            "3 classes": "predicts 3 classes but the dataset has 10", "rgb": "cnn-tiny expects (8, 1, 3, 3)",
            "nan weights": "NaN or Inf", "state dict": "does not record its architecture",
            "truncated safetensors": "not a readable safetensors file"}
    for name, text in said.items():
        b.api(f"`teachers.load_teacher` of {name} ({c[name].name})", lambda p=c[name]: teachers.load_teacher(p, train),
              "clear error", (ModelError,), text)
    b.api("`load_teacher(state_dict, arch='resnet8')`: the wrong architecture", lambda: teachers.load_teacher(
        c["state dict"], train, arch="resnet8"), "clear error", (ModelError,), "does not fit resnet8",
        check=lambda e: [] if "is the chosen architecture right?" in in_app(e) else ["app words missing"])
    ran = b.marker.exists()
    b.add("API", "after the malicious pickles above: did their code run?", "refused",
          "the payload's folder was created" if ran else "the payload's folder does not exist: nothing ran",
          ["the pickle ran"] if ran else [])
    b.api("`load_teacher(TorchScript, trust_pickle=True)`", lambda: teachers.load_teacher(c["torchscript"], train,
          trust_pickle=True), "read with warning", check=lambda t: [] if t.info.arch else ["no arch"])


def _uploads(b, train) -> None:
    from ifbeta.errors import ModelError
    from ifbeta.models import teachers

    folder = b.work / "api-uploads"
    good = b.ckpt["good"].read_bytes()
    b.api("`store_upload` of plain text", lambda: teachers.store_upload(folder, "notes.pt", b"hello", max_mb=1,
          dataset=train), "refused", (ModelError,), "the upload notes.pt is not a checkpoint",
          check=lambda e: [f"stored {list(folder.iterdir())}"] if folder.is_dir() and any(folder.iterdir()) else [])
    b.api("`store_upload` over the size limit", lambda: teachers.store_upload(folder, "big.safetensors", good,
          max_mb=len(good) / 2**21, dataset=train), "refused", (ModelError,), "uploads are limited to")
    b.api("`store_upload` named notes.txt", lambda: teachers.store_upload(folder, "notes.txt", good, max_mb=1,
          dataset=train), "refused", (ModelError,), "unsupported checkpoint type .txt")

    def inside(path):
        resolved = Path(path).resolve()
        return [] if resolved.parent == folder.resolve() and ".." not in Path(path).name else [f"stored at {path}"]

    b.api("path traversal: `store_upload` named ../../evil.safetensors", lambda: teachers.store_upload(
        folder, "../../evil.safetensors", good, max_mb=1, dataset=train), "read", check=inside,
        show=lambda path: f"stored as {path}")


def _subsets(b, train) -> None:
    from ifbeta.errors import SubsetError
    from ifbeta.subsets import export
    from ifbeta.subsets import files as subset_files
    from tests.toy_subsets import make_dataset, write_toy

    b.api("`subsets.files.load` of a file (file given as a folder)", lambda: subset_files.load(b.folders["file"]),
          "clear error", (SubsetError,), "is a file, not a folder")
    b.api("`subsets.files.load` of a missing folder", lambda: subset_files.load(b.work / "missing"), "clear error",
          (SubsetError,), "does not exist")
    tampered = b.work / "subset-tampered"
    shutil.copytree(b.subset, tampered)
    np.save(tampered / "indices.npy", np.load(tampered / "indices.npy")[:-1])
    b.api("a subset whose indices.npy was changed", lambda: subset_files.load(tampered, train), "clear error",
          (SubsetError,), "does not match its manifest")
    other = make_dataset(n=len(train.ids), name="other")
    b.api("a digits subset applied to another dataset", lambda: subset_files.load(b.subset, other), "clear error",
          (SubsetError,), "was made for dataset")
    broken = b.work / "subset-bad-manifest"
    shutil.copytree(b.subset, broken)
    (broken / "manifest.json").write_text("{oops")
    b.api("a subset whose manifest.json is not JSON", lambda: subset_files.load(broken), "clear error", (SubsetError,),
          "is not valid JSON")
    names = ("a b", "a_b", "ünï猫")
    toy = make_dataset(n=6, classes=names)
    path = write_toy(b.work / "toy-subset", toy, indices=[0, 1, 2, 3, 4, 5])
    images = np.zeros((6, 1, 4, 4), dtype=np.uint8)

    def mapped(destination):
        manifest = json.loads((Path(destination) / "manifest.json").read_text())
        folders = sorted(p.name for p in (Path(destination) / "train").iterdir())
        want = {"0_a_b_0": "a b", "1_a_b": "a_b", "2_ünï猫": "ünï猫"}
        return [] if manifest.get("class_folders") == want and folders == sorted(want) else [f"mapping {manifest}"]

    b.api("export of classes 'a b' and 'a_b' (one folder name) and 'ünï猫'", lambda: export.export_imagefolder(
        subset_files.load(path), images, toy, b.work / "toy-export"), "read", check=mapped,
        show=lambda d: f"manifest class_folders {json.loads((Path(d) / 'manifest.json').read_text())['class_folders']}")
    from ifbeta.errors import in_app

    b.api("export into a folder holding other files", lambda: export.export_imagefolder(
        subset_files.load(path), images, toy, b.folders["good"]), "clear error", (SubsetError, ValueError), "--force",
        check=lambda e: [] if "--force" not in in_app(e) else ["the app's words name --force"])


def _store_and_tags(b, train) -> None:
    from ifbeta.errors import CorruptArtefact, DatasetError, StoreError
    from ifbeta.store import Store, safe_name
    from ifbeta.subsets import tags

    store = Store(b.work / "api-store")
    made = {"x": np.arange(5.0)}
    store.get_or_compute("loo", {"a": 1}, [], lambda: (made, {}))
    b.api("`Store.load` with another config", lambda: store.load("loo", store.entries("loo")[0][0], {"a": 2}),
          "clear error", (StoreError,), "different config")
    key = store.entries("loo")[0][0]
    inputs.flip_byte(store.path("loo", key) / "x.npy")
    b.api("`Store.load` of a changed x.npy", lambda: store.load("loo", key), "clear error", (CorruptArtefact,),
          ("failed its check", "moved to"))
    b.api("`Store.get_or_compute` after the damage", lambda: store.get_or_compute("loo", {"a": 1}, [],
          lambda: (made, {})), "recomputed", check=lambda r: [] if np.array_equal(r[0]["x"], made["x"]) else ["differs"],
        show=lambda r: f"x = {r[0]['x'].tolist()}, equal to the original")
    inputs.truncate(store.path("loo", key) / "x.npy")
    b.api("`Store.get_or_compute` after x.npy was cut short", lambda: store.get_or_compute(
        "loo", {"a": 1}, [], lambda: (made, {})), "recomputed", warned=True,
        check=lambda r: [] if np.array_equal(r[0]["x"], made["x"]) else ["differs"])
    from ifbeta.data import datasets as data

    b.api("`datasets.load('digitz')`", lambda: data.load("digitz"), "clear error", (DatasetError,), "unknown dataset")
    b.api("`datasets.load` of imagefolder:<a file>", lambda: data.load(f"imagefolder:{b.folders['file']}"),
          "clear error", (DatasetError,), "is a file, not a folder")
    b.api("path traversal: `safe_name('../../etc/passwd')`", lambda: safe_name("../../etc/passwd", fallback="x"),
          "read", check=lambda n: [] if "/" not in n and not n.startswith(".") else [f"gave {n!r}"], show=repr)
    b.api("a tag of 100 characters", lambda: tags.add(store, train.fingerprint, "x" * 100, [train.ids[0]]),
          "clear error", (ValueError,), "use at most")
    b.api("an empty tag", lambda: tags.add(store, train.fingerprint, "  ", [train.ids[0]]), "clear error",
          (ValueError,), "a tag needs a name")
    b.api("tagging ids not in the pool", lambda: tags.add(store, train.fingerprint, "exclude", ["nope/1"],
          known=train.ids), "clear error", (ValueError,), "not in this pool")
    b.api("tags given one string, not a list of ids", lambda: tags.add(store, train.fingerprint, "exclude",
          train.ids[0]), "clear error", (ValueError,), "not one string")


def _pipeline(b) -> None:
    from ifbeta import pipeline
    from ifbeta.config import PolicyConfig
    from ifbeta.errors import DatasetError

    b.api("`open_workspace(pool=-5)`", lambda: pipeline.open_workspace("digits", pool=-5), "clear error",
          (DatasetError,), "pool")
    b.api("`open_workspace(pool=5)` (fewer than the 10 classes)", lambda: pipeline.open_workspace("digits", pool=5),
          "clear error", (DatasetError,), "10 classes")
    b.api("`PolicyConfig(steps=0)`", lambda: PolicyConfig(steps=0), "clear error", (ValueError,), "steps")
    b.api("`open_workspace(teacher='auto')` after train-teacher", lambda: pipeline.open_workspace("digits"), "read",
          check=lambda ws: [] if ws.teacher.info.sha256 == b.teacher_sha else ["another teacher"],
          show=lambda ws: f"teacher {ws.teacher.info.path} (the one trained)")


def rows(b) -> None:
    from ifbeta.data import datasets as data

    train = data.load("digits", "train")
    _arrays(b)
    _checkpoints(b, train)
    _uploads(b, train)
    _subsets(b, train)
    _store_and_tags(b, train)
    _pipeline(b)
