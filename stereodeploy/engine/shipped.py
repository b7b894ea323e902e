"""Where the shipped models are: ``models/`` of the repository, installed as the package ``stereodeploy.models``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from stereodeploy.errors import UserError

DEFAULT_MODEL = "mccnn_fast_torch.onnx"


def shipped_models() -> Path:
    return Path(str(resources.files("stereodeploy.models")))


def default_model_path() -> Path:
    """The shipped default model, or $STEREODEPLOY_MODEL when set."""
    override = os.environ.get("STEREODEPLOY_MODEL")
    path = Path(override) if override else shipped_models() / DEFAULT_MODEL
    if not path.is_file():
        raise UserError(f"the default model {path} is missing: reinstall stereodeploy or pass --model")
    return path


@dataclass(frozen=True)
class ShippedModel:
    """One model file shipped with stereodeploy and what its metadata says."""

    name: str  # the file's stem: what `--model` accepts
    path: Path
    source_framework: str
    max_disp: int
    network: str  # e.g. "4 layers x 64 maps, 3x3"
    quantization: str  # "" for float32, else the scheme (e.g. "int8 static QDQ, weights per-channel")
    training_frames: int
    size_bytes: int
    default: bool
    network_short: str = ""  # e.g. "4x64, 3x3" (for narrow listings)


def _describe(path: Path, default: Path) -> ShippedModel:
    import json

    from stereodeploy.contract import read_file_meta

    meta, props = read_file_meta(path)
    quant = json.loads(props["stereodeploy.quantization"]).get("scheme", "int8") \
        if "stereodeploy.quantization" in props else ""
    n = meta.network
    return ShippedModel(name=path.stem, path=path, source_framework=meta.source_framework, max_disp=meta.max_disp,
                        network=f"{n.layers} layers x {n.maps} maps, {n.kernel}x{n.kernel}",
                        network_short=f"{n.layers}x{n.maps}, {n.kernel}x{n.kernel}", quantization=quant,
                        training_frames=len(meta.training_data.get("frames") or ()), size_bytes=path.stat().st_size,
                        default=path.name == default.name)


def list_models(folder: Path | None = None) -> list[ShippedModel]:
    """The shipped models (every ``*.onnx`` in ``folder``, default :func:`shipped_models`), sorted by name."""
    folder = shipped_models() if folder is None else Path(folder)
    return [_describe(p, folder / DEFAULT_MODEL) for p in sorted(folder.glob("*.onnx"))]


def resolve_model(model: str | os.PathLike[str], folder: Path | None = None) -> Path:
    """The file or run directory ``model`` names: an existing path as given, else a shipped model's name.

    A shipped model is named by its file's stem or file name (``mccnn_fast_torch``, ``mccnn_fast_torch.onnx``);
    an existing path of that name wins. Anything else is a :class:`UserError` listing the shipped names.
    """
    path = Path(model)
    if path.exists():
        return path
    folder = shipped_models() if folder is None else Path(folder)
    if len(path.parts) == 1:
        for candidate in (folder / path.name, folder / f"{path.name}.onnx"):
            if candidate.suffix == ".onnx" and candidate.is_file():
                return candidate
    names = ", ".join(p.stem for p in sorted(folder.glob("*.onnx"))) or "none installed"
    raise UserError(f"model {model} not found: give an ONNX file, a run directory or checkpoint, or a shipped model "
                    f"name ({names}; `stereodeploy models` lists them)")
