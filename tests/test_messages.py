"""Each face speaks its own words: no message the app shows names a command-line flag, and every flag a
command-line hint names exists on the command that prints it."""
from __future__ import annotations

import ast
import re
import sys
import warnings
from pathlib import Path

import pytest
import torch

from ifbeta.cli.commands import COMMANDS, build_parser
from ifbeta.errors import FIXES, in_app
from ifbeta.models import zoo

try:  # route every AppTest run through app.py's st.navigation (the autouse fixture of test_app)
    from tests.test_app import navigation_routing  # noqa: F401
except pytest.skip.Exception:  # streamlit missing: the app test below skips
    pass

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
OTHER_COMMAND = re.compile(r"`ifbeta ([a-z-]+)([^`]*)`")
warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit's deprecation notes


# ------------------------------------------------------------------------------------------------ app
def bad_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, architecture to choose): each one the Setup page must refuse."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny = zoo.build("cnn-tiny", num_classes=10, in_channels=1)
    (folder / "notes.pt").write_text("not a model\n")
    (folder / "empty.pt").write_bytes(b"")
    torch.save(tiny.state_dict(), folder / "state.pt")
    zoo.save_checkpoint(tiny, folder / "tiny.safetensors", arch="cnn-tiny", num_classes=10, in_channels=1)
    torch.save(tiny, folder / "pickled.pt")
    x = torch.randn(2, 1, 8, 8)
    torch.jit.save(torch.jit.trace_module(tiny.eval(), {"forward": x, "forward_features": x}), folder / "traced.pt")
    torch.jit.save(torch.jit.trace(tiny.eval(), x), folder / "plain-traced.pt")
    (folder / "a-folder.pt").mkdir(exist_ok=True)
    none = "(recorded in the checkpoint)"
    return {"text": (folder / "notes.pt", none), "empty": (folder / "empty.pt", none),
            "no arch": (folder / "state.pt", none), "wrong arch": (folder / "tiny.safetensors", "cnn-small"),
            "keys": (folder / "state.pt", "resnet8"), "pickle": (folder / "pickled.pt", none),
            "torchscript": (folder / "traced.pt", none), "folder": (folder / "a-folder.pt", none),
            "missing": (folder / "missing.pt", none)}


def bad_image_folders(folder: Path) -> dict[str, Path]:
    from tests.conftest import write_image

    corrupt, hidden = folder / "corrupt", folder / "hidden"
    for root in (corrupt, hidden):
        for split in ("train", "test"):
            for name in ("cat", "dog"):
                for i in range(3):
                    write_image(root / split / name / f"{i}.png", seed=i)
    (corrupt / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    write_image(hidden / "train" / ".secret" / "0.png")
    (folder / "a-file").write_text("x")
    (folder / "no-classes" / "train").mkdir(parents=True)
    return {"corrupt": corrupt, "hidden": hidden, "file": folder / "a-file", "missing": folder / "missing",
            "no classes": folder / "no-classes"}


def shown(at) -> list[str]:
    """Every message on the page: errors, warnings, infos, and exceptions (which must not occur)."""
    assert not at.exception, [e.value for e in at.exception]
    return [m.value for kind in (at.error, at.warning, at.info) for m in kind]


def test_the_setup_page_never_names_a_flag(session_store, digits_features, tmp_path):  # teacher trained first
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP, TIMEOUT

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    messages: dict[str, list[str]] = {}
    for name, (path, arch) in bad_checkpoints(tmp_path / "checkpoints").items():
        at.text_input(key="checkpoint_path").set_value(str(path)).run()
        at.selectbox(key="checkpoint_arch").set_value(arch).run()
        next(b for b in at.button if b.label == "Use this checkpoint").click().run()
        messages[f"path: {name}"] = shown(at)
        if path.is_file():
            at.file_uploader(key="teacher_upload").set_value((path.name, path.read_bytes(), "application/octet-stream"))
            at.run()
            at.selectbox(key="upload_arch").set_value(arch).run()
            next(b for b in at.button if b.label == "Use the uploaded checkpoint").click().run()
            messages[f"upload: {name}"] = shown(at)
        assert at.session_state["teacher"] == "auto", name
    at.selectbox(key="dataset_choice").set_value("imagefolder").run()
    for name, root in bad_image_folders(tmp_path / "folders").items():
        at.text_input(key="imagefolder_path").set_value(str(root)).run()
        messages[f"imagefolder: {name}"] = shown(at)
    assert all(messages.values()), {k: v for k, v in messages.items() if not v}  # each bad input said something
    flagged = {key: text for key, texts in messages.items() for text in texts if FLAG.search(text)}
    assert flagged == {}
    said = " | ".join(text for texts in messages.values() for text in texts)
    assert "turn on 'trust this pickle' if you trust this file" in said
    assert "tick 'skip unreadable images' in the sidebar" in said
    assert "choose cnn-tiny as the architecture" in said
    assert "is a folder, not a checkpoint file" in said and "is a file, not a folder" in said
    assert "not read: 1 hidden class folder(s)" in said


def test_every_fix_has_app_words_without_flags():
    for name, (command_line, app) in FIXES.items():
        assert FLAG.search(command_line), name  # the command line names its flag ...
        assert not FLAG.search(app), name  # ... the app never does
    from ifbeta.errors import ModelError

    assert in_app(ModelError("x", fix="teacher_arch", value="resnet8")) == "x; choose resnet8 as the architecture"


# ------------------------------------------------------------------------------------------------ CLI
FIX_TRIGGERS = {"trust_pickle": "--teacher", "teacher_arch": "--teacher", "name_arch": "--teacher",
                "other_arch": "--teacher", "skip_corrupt": "--dataset"}
"""fix -> the option whose input can raise it: every command with that option must have the hint's flags."""
FIX_COMMANDS = {"force": ["export"], "out": ["distill"]}
"""fixes raised for one command's own input."""


def command_options() -> dict[str, set[str]]:
    parser = build_parser()
    common = {s for action in parser._actions for s in action.option_strings}
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: common | {s for action in sub._actions for s in action.option_strings}
            for name, sub in subparsers.choices.items()}


def raised_strings(tree: ast.AST):
    """(enclosing function name, text) of every string constant inside a ``raise`` statement."""
    for function in [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.Module))]:
        for node in ast.walk(function):
            if isinstance(node, ast.Raise):
                for part in ast.walk(node):
                    if isinstance(part, ast.Constant) and isinstance(part.value, str):
                        yield getattr(function, "name", ""), part.value


def test_every_command_line_hint_names_a_flag_of_its_command():
    options = command_options()
    wrong = []
    for fix, (command_line, _) in FIXES.items():
        assert fix in FIX_TRIGGERS or fix in FIX_COMMANDS, f"say which commands can raise the fix {fix!r}"
        commands = FIX_COMMANDS.get(fix) or [c for c, own in options.items() if FIX_TRIGGERS[fix] in own]
        wrong += [(fix, c, flag) for c in commands for flag in FLAG.findall(command_line) if flag not in options[c]]
    sources = {name: Path(module.__file__).read_text() for name, module in COMMANDS.items()}
    for path in sorted((ROOT / "ifbeta" / "cli").glob("*.py")):
        for function, text in raised_strings(ast.parse(path.read_text())):
            if path.name == "common.py":  # shared helpers: every command that calls them
                commands = [c for c, source in sources.items() if f"common.{function}(" in source]
            else:
                commands = [c for c, module in COMMANDS.items() if Path(module.__file__) == path]
            for other, span in OTHER_COMMAND.findall(text):  # "see `ifbeta select --list`": that command's flags
                wrong += [(path.name, other, flag) for flag in FLAG.findall(span) if flag not in options.get(other, ())]
            text = OTHER_COMMAND.sub("", text)
            wrong += [(path.name, c, flag) for c in commands for flag in FLAG.findall(text) if flag not in options[c]]
    assert wrong == []


def test_engine_messages_name_flags_only_through_fixes():
    """Outside ifbeta/cli an error names a flag only through ``FIXES`` (so each face gets its words)."""
    found = []
    for path in sorted((ROOT / "ifbeta").rglob("*.py")):
        if "cli" in path.relative_to(ROOT / "ifbeta").parts or path.name == "errors.py":
            continue
        for _, text in raised_strings(ast.parse(path.read_text())):
            found += [(str(path.relative_to(ROOT)), flag) for flag in FLAG.findall(text)]
    assert found == []
