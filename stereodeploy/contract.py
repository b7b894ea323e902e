"""The contract of a stereodeploy feature model file, shared by the exporters and every runtime.

``stereodeploy.format = features/1``:

- input ``image``: raw grayscale, float32 0..255, (N, 1, H, W) with dynamic N, H, W; the per-image
  normalisation of :func:`stereodeploy.data.preprocess.normalize` happens inside the graph;
- output ``features``: L2-normalised feature map (N, C, H, W), same H and W (zero padding);
- ``metadata_props``: the keys of :class:`ModelMeta`, read back at load time.

This module needs neither a framework nor the ``onnx`` package: the engine reads the same metadata through
onnxruntime.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from stereodeploy import __version__
from stereodeploy.config import NetworkConfig, from_dict
from stereodeploy.errors import UserError
from stereodeploy.frameworks import FRAMEWORKS

FORMAT = "features/1"
INPUT_NAME = "image"
OUTPUT_NAME = "features"

@dataclass(frozen=True)
class ModelMeta:
    """What an exported file says about itself (stored as strings in ONNX ``metadata_props``)."""

    network: NetworkConfig
    source_framework: str
    source_framework_version: str = ""
    max_disp: int = 128
    training_data: dict[str, Any] = field(default_factory=dict)
    stereodeploy_version: str = __version__
    format: str = FORMAT

    @property
    def patch_size(self) -> int:
        return self.network.patch_size

    def to_props(self) -> dict[str, str]:
        return {
            "stereodeploy.format": self.format,
            "stereodeploy.version": self.stereodeploy_version,
            "stereodeploy.network": json.dumps(asdict(self.network)),
            "stereodeploy.patch_size": str(self.patch_size),
            "stereodeploy.max_disp": str(self.max_disp),
            "stereodeploy.source_framework": self.source_framework,
            "stereodeploy.source_framework_version": self.source_framework_version,
            "stereodeploy.training_data": json.dumps(self.training_data),
            "stereodeploy.normalization": "per image: (x - mean) / sqrt(var + 1e-6), inside the graph",
        }

    @classmethod
    def from_props(cls, props: dict[str, str], where: str = "model") -> ModelMeta:
        fmt = props.get("stereodeploy.format")
        if fmt is None:
            raise UserError(f"{where} is ONNX but not a stereodeploy feature model (no stereodeploy metadata): "
                            "export it with `stereodeploy export`")
        if fmt.split("/")[0] == "matcher":
            raise UserError(f"{where} is a self-contained matcher (written by `stereodeploy export-matcher`), not a "
                            "feature model: run it with onnxruntime directly, or give the feature model it was "
                            "built from")
        if fmt.split("/")[0] != FORMAT.split("/")[0] or int(fmt.split("/")[1]) > int(FORMAT.split("/")[1]):
            raise UserError(f"{where} has format {fmt}, which this stereodeploy {__version__} cannot read: upgrade stereodeploy")
        try:
            return cls(
                network=from_dict(NetworkConfig, json.loads(props["stereodeploy.network"])),
                source_framework=props.get("stereodeploy.source_framework", ""),
                source_framework_version=props.get("stereodeploy.source_framework_version", ""),
                max_disp=int(props.get("stereodeploy.max_disp", 128)),
                training_data=json.loads(props.get("stereodeploy.training_data", "{}")),
                stereodeploy_version=props.get("stereodeploy.version", ""),
                format=fmt,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise UserError(f"{where} has damaged stereodeploy metadata ({exc}): export it again") from None


def check_model_path(path: Path | str, what: str = "model file") -> Path:
    """``path`` as a Path if it is a file; a folder or a missing file is a UserError in one line."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an ONNX file: for a training run, export it with `stereodeploy "
                        f"export {path} --out model.onnx`, or run it natively with --backend "
                        f"{'|'.join(FRAMEWORKS)}")
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist: give an ONNX file written by `stereodeploy export`")
    return path


def unreadable(path: Path | str, exc: BaseException) -> UserError:
    """The one-line error for a file no ONNX reader can parse."""
    return UserError(f"{path} is not a readable ONNX file ({type(exc).__name__}): export the model again")


def load_onnx(path: Path | str, what: str = "model file") -> Any:
    """An ONNX file as an onnx.ModelProto; a missing or unreadable file is a UserError in one line.

    For the exporters: the engine reads a model through onnxruntime instead (:func:`session_meta`), which spares it
    the ``onnx`` package's import (over a second, most of it ``ml_dtypes``).
    """
    import onnx

    path = check_model_path(path, what)
    try:
        return onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - a corrupt file is the user's problem, in one line
        raise unreadable(path, exc) from None


def session_meta(session: Any, where: str = "model") -> ModelMeta:
    """The :class:`ModelMeta` of the file an ``onnxruntime.InferenceSession`` runs (its ``metadata_props``)."""
    return ModelMeta.from_props(dict(session.get_modelmeta().custom_metadata_map), where)


def read_file_meta(path: Path | str) -> tuple[ModelMeta, dict[str, str]]:
    """The :class:`ModelMeta` and the raw metadata of an ONNX file, read through onnxruntime (no ``onnx``)."""
    import onnxruntime as ort

    path = check_model_path(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # only the metadata is wanted
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        raise unreadable(path, exc) from None
    props = dict(session.get_modelmeta().custom_metadata_map)
    return ModelMeta.from_props(props, str(path)), props


def set_meta(model: Any, meta: ModelMeta) -> None:
    del model.metadata_props[:]
    for key, value in meta.to_props().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def read_meta(model: Any, where: str = "model") -> ModelMeta:
    return ModelMeta.from_props({p.key: p.value for p in model.metadata_props}, where)
