"""The bad inputs benchmarks/reliability.py tries: checkpoint files of every wrong kind, image folders with
something wrong in them, and the small damage done to stored artefacts. Each maker writes into a folder
it is given and returns the paths, named for what is wrong with them."""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ifbeta.models import zoo


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: proof, if the marker folder appears, that a pickle ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _traced(path: Path, *, num_classes: int = 10, features: bool = True) -> Path:
    torch.manual_seed(0)
    model = zoo.build("resnet8", num_classes=num_classes, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    script = (torch.jit.trace_module(model, {"forward": x, "forward_features": x}) if features
              else torch.jit.trace(model, x))
    torch.jit.save(script, str(path))
    return path


def _safetensors(path: Path, *, arch: str = "cnn-tiny", num_classes: int = 10, in_channels: int = 1,
                 broken: bool = False) -> Path:
    torch.manual_seed(0)
    model = zoo.build(arch, num_classes=num_classes, in_channels=in_channels)
    if broken:
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
    return zoo.save_checkpoint(model, path, arch=arch, num_classes=num_classes, in_channels=in_channels)


def checkpoints(folder: Path, marker: Path) -> dict[str, Path]:
    """name -> a checkpoint file (or folder) that is wrong in the way its name says, plus good ones."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {"text": folder / "notes.pt", "empty": folder / "empty.pt", "garbage": folder / "garbage.pt",
            "folder": folder / "a-folder.pt", "missing": folder / "missing.pt", "txt suffix": folder / "model.txt"}
    made["text"].write_text("my teacher, trained last week\n")
    made["empty"].write_bytes(b"")
    made["garbage"].write_bytes(bytes(range(256)) * 4)
    made["folder"].mkdir(exist_ok=True)
    tiny = zoo.build("cnn-tiny", num_classes=10, in_channels=1)
    torch.save(tiny.state_dict(), folder / "state.pt")
    made["state dict"] = folder / "state.pt"
    made["txt suffix"].write_bytes((folder / "state.pt").read_bytes())
    torch.save({"weight": Payload(marker)}, folder / "evil.pt")  # torch.save's ZIP format
    made["malicious pickle"] = folder / "evil.pt"
    (folder / "evil-raw.pkl.pt").write_bytes(pickle.dumps(Payload(marker), protocol=4))  # a bare pickle
    made["malicious bare pickle"] = folder / "evil-raw.pkl.pt"
    torch.save(tiny, folder / "pickled.pt")  # a whole module: code on load
    made["pickled module"] = folder / "pickled.pt"
    made["torchscript"] = _traced(folder / "traced.pt")
    made["torchscript 3 classes"] = _traced(folder / "traced3.pt", num_classes=3)
    made["torchscript no forward_features"] = _traced(folder / "plain-traced.pt", features=False)
    made["good"] = _safetensors(folder / "tiny.safetensors")
    made["3 classes"] = _safetensors(folder / "three.safetensors", num_classes=3)
    made["rgb"] = _safetensors(folder / "rgb.safetensors", in_channels=3)
    made["nan weights"] = _safetensors(folder / "nan.safetensors", broken=True)
    data = made["good"].read_bytes()
    (folder / "cut.safetensors").write_bytes(data[: len(data) // 2])
    made["truncated safetensors"] = folder / "cut.safetensors"
    return made


def upload_bytes(made: dict[str, Path]) -> dict[str, tuple[str, bytes]]:
    """name -> (upload file name, bytes) of the uploads the Setup page must refuse."""
    buffer = io.BytesIO()
    torch.save(zoo.build("cnn-tiny", num_classes=10, in_channels=1).state_dict(), buffer)
    return {"garbage": ("garbage.pt", made["garbage"].read_bytes()), "text": ("notes.pt", made["text"].read_bytes()),
            "empty": ("empty.pt", b""), "3 classes": ("three.safetensors", made["3 classes"].read_bytes()),
            "malicious pickle": ("evil.pt", made["malicious pickle"].read_bytes()),
            "torchscript": ("traced.pt", made["torchscript"].read_bytes()),
            "truncated safetensors": ("cut.safetensors", made["truncated safetensors"].read_bytes()),
            "nan weights": ("nan.safetensors", made["nan weights"].read_bytes()),
            "not a checkpoint suffix": ("notes.txt", b"hello")}


def write_image(path: Path, seed: int, size: int = 12) -> None:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGB").save(path)


def image_folders(folder: Path) -> dict[str, Path]:
    """name -> an ImageFolder root (or a path in its place) that is wrong in the way its name says."""
    roots = {name: folder / name.replace(" ", "-") for name in ("good", "hidden", "corrupt", "non-ascii")}
    classes = {"non-ascii": ["a b", "a_b", "ünï猫"]}
    for name, root in roots.items():
        for split, count in (("train", 4), ("test", 2)):
            for c, label in enumerate(classes.get(name, ["cat", "dog"])):
                for i in range(count):
                    write_image(root / split / label / f"{i}.png", seed=100 * c + i)
    write_image(roots["hidden"] / "train" / ".secret" / "0.png", seed=7)
    (roots["corrupt"] / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    (folder / "a-file").write_text("x")
    roots["file"] = folder / "a-file"
    roots["missing"] = folder / "missing"
    (folder / "no-train" / "test" / "cat").mkdir(parents=True)
    roots["no train"] = folder / "no-train"
    (folder / "no-classes" / "train").mkdir(parents=True)
    (folder / "no-classes" / "test").mkdir(parents=True)
    roots["no classes"] = folder / "no-classes"
    return roots


# --------------------------------------------------------------------------------------- damage to files
def truncate(path: Path) -> None:
    """Cut the file to half its size."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


def flip_byte(path: Path) -> None:
    """Change one byte near the end (the size stays; only the sha256 can tell)."""
    with open(path, "r+b") as handle:
        handle.seek(-9, os.SEEK_END)
        value = handle.read(1)[0]
        handle.seek(-9, os.SEEK_END)
        handle.write(bytes([value ^ 0xFF]))


def zero_data(path: Path) -> None:
    """Overwrite an ``.npy`` file's data (not its header) with zeros: a valid array of the wrong values."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(handle)
        start = handle.tell()
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.seek(start)
        handle.write(bytes(size - start))
