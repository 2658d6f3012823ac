"""The app rows of benchmarks/reliability.py: the Setup page (checkpoint paths, uploads, ImageFolder roots,
allowed roots), the Subset page's export and a damaged artefact, driven through app.py with
``streamlit.testing.v1.AppTest``; each row reads the messages on the page."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import reliability_inputs as inputs

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
TIMEOUT = 300
FLAG_WORDS = "names a command-line flag"


def _route_through_app() -> None:
    """Every AppTest run goes through app.py's st.navigation (as tests/app_support.py arranges for tests)."""
    from streamlit.runtime import pages_manager

    original = pages_manager.PagesManager.__init__
    if getattr(original, "routed", False):
        return

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        pages_manager.PagesManager.uses_pages_directory = False

    init.routed = True
    pages_manager.PagesManager.__init__ = init


def _fresh():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    return at


def _messages(at) -> list[str]:
    return [m.value for kind in (at.error, at.warning) for m in kind]


def _row(b, what: str, expected: str, at, contains: str, *, kind: str = "error", extra=()) -> None:
    from reliability_faces import FLAG

    problems = [f"exception: {e.value}"[:200] for e in at.exception]
    shown = [m.value for m in (at.error if kind == "error" else at.warning)]
    found = [m for m in shown if contains in m]
    if not found:
        problems.append(f"no {kind} with {contains!r}")
    problems += [f"{FLAG_WORDS}: {m[:80]}" for m in _messages(at) if FLAG.search(m)]
    observed = found[0] if found else ("; ".join(_messages(at)) or "(no message)")
    b.add("app", what, expected, observed, problems + list(extra))


def _button(at, label: str):
    """The button labelled ``label``; one more run when the page has not drawn it yet (a rerun pending)."""
    found = next((button for button in at.button if button.label == label), None)
    if found is None:
        at.run()
        found = next(button for button in at.button if button.label == label)
    return found


def _checkpoint_paths(b, at) -> None:
    c, none = b.ckpt, "(recorded in the checkpoint)"
    cases = [("text", none, False, "not a checkpoint (it is plain text)"),
             ("empty", none, False, "not a checkpoint (it is empty)"),
             ("garbage", none, False, "neither a ZIP archive nor a pickle"),
             ("folder", none, False, "is a folder, not a checkpoint file"),
             ("missing", none, False, "no file at"),
             ("state dict", none, False, "choose its architecture"),
             ("state dict", "resnet8", False, "is the chosen architecture right?"),
             ("good", "cnn-small", False, "choose cnn-tiny as the architecture"),
             ("3 classes", none, False, "predicts 3 classes"),
             ("rgb", none, False, "cnn-tiny expects (8, 1, 3, 3)"),
             ("nan weights", none, False, "NaN or Inf"),
             ("truncated safetensors", none, False, "not a readable safetensors"),
             ("malicious pickle", none, False, "turn on 'trust this pickle'"),
             ("torchscript", none, False, "turn on 'trust this pickle'"),
             ("torchscript 3 classes", none, True, "predicts 3 classes"),
             ("torchscript no forward_features", none, True, "without forward_features")]
    for name, arch, trust, contains in cases:
        at.text_input(key="checkpoint_path").set_value(str(c[name])).run()
        at.selectbox(key="checkpoint_arch").set_value(arch).run()
        at.checkbox(key="checkpoint_trust").set_value(trust).run()
        _button(at, "Use this checkpoint").click().run()
        kept = [] if at.session_state["teacher"] == "auto" else [f"teacher set to {at.session_state['teacher']}"]
        label = f"checkpoint path: {name}" + (f", architecture {arch}" if arch != none else "") + (", trusted" if trust else "")
        _row(b, label, "clear error", at, contains, extra=kept)
    at.checkbox(key="checkpoint_trust").set_value(False).run()


def _uploads(b, at) -> None:
    folder = b.cache / "uploads"

    def stored():
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    said = {"garbage": "neither a ZIP archive nor a pickle", "text": "not a checkpoint (it is plain text)",
            "empty": "not a checkpoint (it is empty)", "3 classes": "predicts 3 classes",
            "malicious pickle": "turn on 'trust this pickle'", "torchscript": "turn on 'trust this pickle'",
            "truncated safetensors": "not a readable safetensors", "nan weights": "NaN or Inf",
            "not a checkpoint suffix": "unsupported checkpoint type .txt"}
    for name, (file_name, content) in inputs.upload_bytes(b.ckpt).items():
        before = stored()
        at.file_uploader(key="teacher_upload").set_value((file_name, content, "application/octet-stream"))
        at.run()
        offered = next((button for button in at.button if button.label == "Use the uploaded checkpoint"), None)
        if offered is None:  # the uploader itself takes only checkpoint suffixes: nothing to use
            extra = [] if stored() == before and at.session_state["teacher"] == "auto" else ["stored or selected"]
            b.add("app", f"upload: {name} ({file_name})", "refused", "the uploader does not take the file (only "
                  ".safetensors, .pt, .pth, .ckpt); nothing stored, nothing offered", extra)
            continue
        offered.click().run()
        options = at.selectbox(key="teacher").options
        extra = [] if stored() == before else [f"stored {sorted(set(stored()) - set(before))}"]
        extra += [] if at.session_state["teacher"] == "auto" else ["made the teacher"]
        extra += [f"listed as {o}" for o in options if Path(file_name).stem in o]
        _row(b, f"upload: {name} ({file_name})", "refused", at, said[name], extra=extra)
    ran = b.marker.exists()
    b.add("app", "after the malicious upload and path above: did its code run?", "refused",
          "the payload's folder was created" if ran else "the payload's folder does not exist: nothing ran",
          ["the pickle ran"] if ran else [])
    at = _fresh()  # a page of its own: the refused suffix above leaves the uploader in an odd state
    at.file_uploader(key="teacher_upload").set_value(("../../evil.safetensors", b.ckpt["good"].read_bytes(),
                                                       "application/octet-stream"))
    at.run()
    _button(at, "Use the uploaded checkpoint").click().run()
    at.run()
    chosen = Path(at.session_state["teacher"])
    problems = [f"exception: {e.value}" for e in at.exception] + [f"error: {e.value}" for e in at.error]
    problems += [] if chosen.parent == folder.resolve() or chosen.parent == folder else [f"stored at {chosen}"]
    b.add("app", "path traversal: a good upload named ../../evil.safetensors", "read",
          f"stored as uploads/{chosen.name}", problems)
    at.selectbox(key="teacher").set_value("auto").run()


def _trusted_torchscript(b, at) -> None:
    at.text_input(key="checkpoint_path").set_value(str(b.ckpt["torchscript"])).run()
    at.selectbox(key="checkpoint_arch").set_value("(recorded in the checkpoint)").run()
    at.checkbox(key="checkpoint_trust").set_value(True).run()
    _button(at, "Use this checkpoint").click().run()
    at.run()
    set_to = [] if at.session_state["teacher"].endswith("traced.pt") else ["not made the teacher"]
    _row(b, "checkpoint path: TorchScript, trusted", "read with warning", at, "runs code from the file",
         kind="warning", extra=set_to + [f"error: {e.value}" for e in at.error])
    at.checkbox(key="checkpoint_trust").set_value(False).run()
    at.selectbox(key="teacher").set_value("auto").run()


def _image_folders(b, at) -> None:
    f = b.folders
    at.selectbox(key="dataset_choice").set_value("imagefolder").run()
    cases = [("file", "is a file, not a folder", "error"), ("missing", "does not exist", "error"),
             ("no train", "train", "error"), ("no classes", "class", "error"),
             ("corrupt", "tick 'skip unreadable images'", "error"), ("hidden", "not read: 1 hidden class folder", "warning")]
    for name, contains, kind in cases:
        at.text_input(key="imagefolder_path").set_value(str(f[name])).run()
        _row(b, f"ImageFolder root: {name}", "read with warning" if kind == "warning" else "clear error", at, contains,
             kind=kind)
    at.text_input(key="imagefolder_path").set_value(f"{f['good']}/train/../../missing").run()
    _row(b, "path traversal: ImageFolder root <good>/train/../../missing", "clear error", at, "does not exist")
    at.text_input(key="imagefolder_path").set_value(str(f["corrupt"])).run()
    at.checkbox(key="skip_corrupt").set_value(True).run()
    _row(b, "ImageFolder root: corrupt, 'skip unreadable images' ticked", "read with warning", at,
         "skipped 1 unreadable", kind="warning")
    at.checkbox(key="skip_corrupt").set_value(False).run()
    at.selectbox(key="dataset_choice").set_value("digits").run()


def _allowed_roots(b) -> None:
    allowed = b.work / "allowed"
    allowed.mkdir(exist_ok=True)
    shutil.copy2(b.ckpt["good"], allowed / "tiny.safetensors")
    (allowed / "link.safetensors").symlink_to(b.ckpt["good"])
    shutil.copytree(b.folders["good"], allowed / "images", dirs_exist_ok=True)
    os.environ["IFBETA_ALLOWED_ROOTS"] = str(allowed)
    try:
        at = _fresh()
        words = "outside the folders this server may read"
        for label, path in (("outside", b.ckpt["good"]), ("<allowed>/../checkpoints/tiny.safetensors (traversal)",
                            allowed / ".." / "checkpoints" / "tiny.safetensors"),
                            ("a link inside pointing outside", allowed / "link.safetensors")):
            at.text_input(key="checkpoint_path").set_value(str(path)).run()
            _button(at, "Use this checkpoint").click().run()
            kept = [] if at.session_state["teacher"] == "auto" else ["made the teacher"]
            _row(b, f"IFBETA_ALLOWED_ROOTS: checkpoint {label}", "refused", at, words, extra=kept)
        at.selectbox(key="dataset_choice").set_value("imagefolder").run()
        at.text_input(key="imagefolder_path").set_value(str(b.folders["good"])).run()
        _row(b, "IFBETA_ALLOWED_ROOTS: ImageFolder root outside", "refused", at, words)
        at.text_input(key="imagefolder_path").set_value(str(allowed / "images")).run()
        problems = [f"error: {e.value}" for e in at.error] + [f"exception: {e.value}" for e in at.exception]
        b.add("app", "IFBETA_ALLOWED_ROOTS: ImageFolder root inside", "read",
              "; ".join(_messages(at)) or "read, no error", problems)
    finally:
        os.environ.pop("IFBETA_ALLOWED_ROOTS", None)


def _export(b) -> None:
    at = _fresh()
    at.switch_page("pages/subset.py").run()
    at.selectbox(key="subset_method").set_value("random").run()
    taken = b.work / "taken-by-app"
    taken.mkdir(exist_ok=True)
    (taken / "notes.txt").write_text("mine")
    at.text_input(key="export_path").set_value(str(taken))
    next(button for button in at.button if button.label == "Export").click().run()
    left = [] if sorted(p.name for p in taken.iterdir()) == ["notes.txt"] else ["the folder was changed"]
    _row(b, "Subset page: export into a folder holding other files", "clear error", at, "choose a new or empty folder",
         extra=left)


def _damaged_features(b) -> None:
    import streamlit as st

    from ifbeta.store import Store
    from pages._studio import steps

    store = Store(b.cache)
    original = {n: np.array(a) for n, a in store.load("features", b.features_key)[0].items()}
    before = set((b.cache / "quarantine" / "features").glob("*"))
    inputs.flip_byte(store.path("features", b.features_key) / "features.npy")  # size kept: no open map is cut
    st.cache_resource.clear()
    steps._READY.clear()
    at = _fresh()
    problems = [f"exception: {e.value}" for e in at.exception] + [f"error: {e.value}" for e in at.error]
    try:
        arrays = store.load("features", b.features_key)[0]
        problems += [] if all(np.array_equal(original[n], arrays[n]) for n in original) else ["values differ"]
    except Exception as error:  # noqa: BLE001  (the damaged artefact was not recomputed)
        problems.append(f"not recomputed: {type(error).__name__}")
    moved = set((b.cache / "quarantine" / "features").glob("*")) - before
    problems += [] if len(moved) == 1 else [f"{len(moved)} folders quarantined"]
    ready = any("Ready" in s.value for s in at.success)
    problems += [] if ready else ["the page did not get ready"]
    b.add("app", "Setup page after one byte of features.npy changed: values equal to the originals", "recomputed",
          f"page ready: {ready}; quarantined: {len(moved)}; values equal: {not problems}", problems)


def rows(b) -> None:
    import sys

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    _route_through_app()
    _damaged_features(b)
    at = _fresh()
    _checkpoint_paths(b, at)
    _trusted_torchscript(b, at)
    _uploads(b, at)
    at = _fresh()
    _image_folders(b, at)
    _allowed_roots(b)
    _export(b)
