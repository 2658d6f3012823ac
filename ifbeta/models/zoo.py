"""Model zoo (explicit dict) and safe checkpoint loading.

Checkpoint formats accepted by :func:`load_checkpoint`:
- ``.safetensors`` (what this package writes; metadata carries arch, num_classes, in_channels);
- a ``state_dict`` saved with ``torch.save`` (loaded with ``weights_only=True``; a dict holding
  ``state_dict`` / ``model`` is unwrapped);
- TorchScript archives (``torch.jit.save``) declaring ``forward_features`` and ``classifier``
  (:class:`ScriptedModel`), only with ``trust_pickle=True``: an archive holds code;
- a fully pickled ``nn.Module`` only with ``trust_pickle=True``: unpickling runs code from the file.
A plain-text, empty or foreign file is "not a checkpoint"; a folder is "a folder, not a checkpoint file".
"""
from __future__ import annotations

import hashlib
import json
import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ifbeta import atomic
from ifbeta.errors import ModelError  # noqa: F401  (raised here; its home is errors.py)
from ifbeta.models import architectures as arch_module

log = logging.getLogger(__name__)



def _resnet(depth, widths):
    return lambda num_classes, in_channels: arch_module.CifarResNet(depth, widths, num_classes, in_channels)


_NARROW, _WIDE = (16, 16, 32, 64), (32, 64, 128, 256)

ARCHITECTURES = {
    "resnet8": _resnet(8, _NARROW), "resnet14": _resnet(14, _NARROW), "resnet20": _resnet(20, _NARROW),
    "resnet32": _resnet(32, _NARROW), "resnet44": _resnet(44, _NARROW), "resnet56": _resnet(56, _NARROW),
    "resnet110": _resnet(110, _NARROW), "resnet8x4": _resnet(8, _WIDE), "resnet32x4": _resnet(32, _WIDE),
    "wrn-16-2": lambda c, i: arch_module.WideResNet(16, 2, c, i),
    "wrn-40-2": lambda c, i: arch_module.WideResNet(40, 2, c, i),
    "vgg8": lambda c, i: arch_module.VGG(8, c, i), "vgg13": lambda c, i: arch_module.VGG(13, c, i),
    "mobilenetv2": arch_module.mobilenetv2_cifar, "resnet18": arch_module.resnet18_cifar,
    "cnn-small": lambda c, i: arch_module.SmallCNN(c, i, width=32),
    "cnn-tiny": lambda c, i: arch_module.SmallCNN(c, i, width=8),
}

# Sensible defaults per dataset: (teacher, student). The student is always smaller.
DEFAULTS = {"digits": ("cnn-small", "cnn-tiny"), "mnist": ("cnn-small", "cnn-tiny"),
            "fashion-mnist": ("cnn-small", "cnn-tiny"), "cifar10": ("resnet20", "resnet8"),
            "cifar100": ("resnet56", "resnet20")}


def default_architectures(dataset_name: str, image_size: int) -> tuple[str, str]:
    """(teacher, student) defaults for a dataset; ImageFolders use the CIFAR pair for >= 16 px."""
    if dataset_name in DEFAULTS:
        return DEFAULTS[dataset_name]
    return ("resnet20", "resnet8") if image_size >= 16 else ("cnn-small", "cnn-tiny")


def build(name: str, *, num_classes: int, in_channels: int = 3) -> arch_module.ZooModel:
    """Instantiate an architecture from the zoo."""
    if name not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](num_classes, in_channels)


@dataclass(frozen=True)
class CheckpointInfo:
    arch: str
    num_classes: int
    in_channels: int
    sha256: str
    path: str
    metadata: dict


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(model: nn.Module, path: str | Path, *, arch: str, num_classes: int, in_channels: int,
                    metadata: dict | None = None) -> Path:
    """Write ``model``'s weights as safetensors with arch/num_classes/in_channels metadata (atomic)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"arch": arch, "num_classes": str(num_classes), "in_channels": str(in_channels),
            "extra": json.dumps(metadata or {})}
    return atomic.replace_with(path, lambda temporary: save_file(tensors, str(temporary), metadata=meta))


def _read_state(path: Path, trust_pickle: bool) -> tuple[dict | nn.Module, dict]:
    """Return (state_dict or module, metadata) from any accepted format."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {k: handle.get_tensor(k) for k in handle.keys()}, dict(handle.metadata() or {})
        except Exception as error:
            raise ModelError(f"{path} is not a readable safetensors file ({error}); re-export it") from None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("constants.pkl") for name in archive.namelist()):
                return _load_script(path, trust_pickle), {}
    elif _looks_like_text_or_garbage(path):
        raise ModelError(f"{path} is not a checkpoint (it is {_what_it_holds(path)}); "
                         "expected safetensors, a state_dict saved with torch.save, or TorchScript")
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_pickle:
            raise ModelError(f"{path} holds pickled Python objects, which can run code when loaded; save a "
                             "state_dict or safetensors instead", fix="trust_pickle") from None
        log.warning("loading a full pickle from %s because trust_pickle=True", path)
        loaded = _load_trusted(path, error)
    except Exception as error:
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"{path} is not a readable checkpoint ({type(error).__name__}"
                         f"{': ' + first if first else ''}); expected safetensors, a state_dict or TorchScript") from None
    if isinstance(loaded, nn.Module):
        return loaded, {}
    if isinstance(loaded, dict):
        for key in ("state_dict", "model", "model_state"):
            if isinstance(loaded.get(key), dict):
                return loaded[key], {}
        if not all(isinstance(value, torch.Tensor) for value in loaded.values()):
            raise ModelError(f"{path} holds a dict that is not a state_dict (not every value is a tensor)")
        return loaded, {}
    raise ModelError(f"{path} holds a {type(loaded).__name__}, not a state_dict")


_PICKLE_START = 0x80  # torch.save's legacy format is a pickle (protocol >= 2), its zip format a ZIP archive


def _looks_like_text_or_garbage(path: Path) -> bool:
    """True when the file can be neither of torch.save's formats (a ZIP archive is checked before)."""
    with open(path, "rb") as handle:
        first = handle.read(1)
    return not first or first[0] != _PICKLE_START


def _what_it_holds(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(512)
    if not head:
        return "empty"
    try:
        head.decode("utf-8")
        return "plain text"
    except UnicodeDecodeError:
        return "neither a ZIP archive nor a pickle"


class ScriptedModel(nn.Module):
    """A TorchScript teacher seen as a zoo model. The archive must declare ``forward_features(x) ->
    (N, d)`` (the penultimate features) and a ``classifier`` submodule ((N, d) -> (N, C) logits), as
    ``torch.jit.trace_module(model, {"forward": x, "forward_features": x})`` of a zoo model gives, or a
    scripted module with ``@torch.jit.export def forward_features``."""

    def __init__(self, script: nn.Module):
        super().__init__()
        self.script = script
        self.classifier = script.classifier

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (N, d)
        return self.script.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C)
        return self.script(x)


def _load_script(path: Path, trust_pickle: bool) -> nn.Module:
    """A TorchScript archive (code, so only with ``trust_pickle``) wrapped as a :class:`ScriptedModel`."""
    if not trust_pickle:
        raise ModelError(f"{path} is a TorchScript archive, which runs its own code when loaded",
                         fix="trust_pickle")
    try:
        script = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        raise ModelError(f"{path} is a damaged TorchScript archive ({error})") from None
    missing = [name for name in ("forward_features", "classifier") if not hasattr(script, name)]
    if missing:
        raise ModelError(f"{path} is TorchScript without {' and '.join(missing)}: the penultimate features cannot "
                         "be reached; save it with torch.jit.trace_module(model, {'forward': x, "
                         "'forward_features': x}) (or export forward_features when scripting)")
    log.warning("loading TorchScript from %s because trust_pickle=True", path)
    return ScriptedModel(script)


def _load_trusted(path: Path, _error: Exception):
    """Unpickle a full model the caller trusts: the classes the file names are imported and
    allow-listed, then loaded through the weights-only unpickler (no other global can run)."""
    import importlib

    def resolve(name: str):
        module, _, attribute = name.rpartition(".")
        value = importlib.import_module(module)
        for part in attribute.split("."):
            value = getattr(value, part)
        return value

    try:
        allowed = [resolve(name) for name in torch.serialization.get_unsafe_globals_in_checkpoint(str(path))]
        with torch.serialization.safe_globals(allowed):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelError(f"{path} could not be unpickled even as trusted ({type(error).__name__}: {error})") from None


def load_checkpoint(path: str | Path, *, arch: str | None = None, num_classes: int | None = None,
                    in_channels: int | None = None, trust_pickle: bool = False) -> tuple[nn.Module, CheckpointInfo]:
    """Load a model in eval mode. Architecture, class count and channels come from the file's
    metadata when present and are checked against the arguments; a mismatch is a ``ModelError``."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path} is a folder, not a checkpoint file; give the checkpoint file inside it")
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    state, meta = _read_state(path, trust_pickle)
    file_arch = meta.get("arch")
    if arch and file_arch and arch != file_arch:
        raise ModelError(f"{path} holds a {file_arch}, not a {arch}", fix="teacher_arch", value=file_arch)
    arch = arch or file_arch
    file_classes = int(meta["num_classes"]) if "num_classes" in meta else None
    if num_classes is not None and file_classes is not None and num_classes != file_classes:
        raise ModelError(f"{path} predicts {file_classes} classes but the dataset has {num_classes}")
    num_classes = num_classes or file_classes
    in_channels = in_channels or (int(meta["in_channels"]) if "in_channels" in meta else 3)
    if isinstance(state, nn.Module):
        model = state
    else:
        model = _model_from_state(path, state, arch, num_classes, in_channels)
    _check_finite(model, path)
    info = CheckpointInfo(arch or type(model).__name__, num_classes or -1, in_channels, file_sha256(path),
                          str(path), json.loads(meta.get("extra", "{}")))
    return model.eval(), info


def _model_from_state(path: Path, state: dict, arch: str | None, num_classes: int | None,
                      in_channels: int) -> nn.Module:
    if arch is None:
        raise ModelError(f"{path} does not record its architecture", fix="name_arch",
                         value=", ".join(ARCHITECTURES))
    if num_classes is None:
        weight = state.get("classifier.weight")
        if weight is None:
            raise ModelError(f"{path} does not record its class count and has no classifier.weight")
        num_classes = int(weight.shape[0])
    model = build(arch, num_classes=num_classes, in_channels=in_channels)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelError(f"{path} does not fit {arch}: {len(missing)} missing key(s) (e.g. {missing[:3]}), "
                         f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})", fix="other_arch")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            hint = " (class count differs from the dataset)" if key.startswith("classifier") else ""
            raise ModelError(f"{path}: {key} has shape {tuple(value.shape)}, {arch} expects "
                             f"{tuple(own[key].shape)}{hint}")
    model.load_state_dict(state)
    return model


def _check_finite(model: nn.Module, path: Path) -> None:
    for name, tensor in list(model.state_dict().items()):
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelError(f"{path} has NaN or Inf values in {name}; the checkpoint is broken")
