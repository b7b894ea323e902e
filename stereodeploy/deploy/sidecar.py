"""The JSON sidecar written beside every exported ONNX file (``model.onnx`` -> ``model.onnx.json``): the same
contract as the file's ``metadata_props``, for clients whose ONNX API cannot read those (onnxruntime-web and
onnxruntime-node among them, and any C/C++ program that would rather not parse protobuf), plus the names, element
types and shapes of the inputs and outputs. The shipped models of ``models/`` have one too; rewrite them after
changing a shipped file with::

    python -m stereodeploy.deploy.sidecar models/*.onnx
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stereodeploy.data.io import atomic_write

SUFFIX = ".json"


def sidecar_path(onnx_path: Path | str) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    path = Path(onnx_path)
    return path.with_name(path.name + SUFFIX)


def _values(values: Any) -> list[dict[str, Any]]:
    from onnx import TensorProto

    out = []
    for v in values:
        t = v.type.tensor_type
        dims = [d.dim_param if d.HasField("dim_param") else int(d.dim_value) for d in t.shape.dim]
        out.append({"name": v.name, "type": TensorProto.DataType.Name(t.elem_type).lower(), "shape": dims})
    return out


def contract(model: Any) -> dict[str, Any]:
    """What a client needs to know about ``model`` (onnx.ModelProto), as plain JSON types."""
    return {
        "metadata": {p.key: p.value for p in model.metadata_props},
        "inputs": _values(model.graph.input),
        "outputs": _values(model.graph.output),
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
    }


def write_sidecar(model: Any, onnx_path: Path | str, overwrite: bool = False) -> Path:
    """Write ``contract(model)`` beside ``onnx_path``, atomically; returns the sidecar's path."""
    path = sidecar_path(onnx_path)
    with atomic_write(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(contract(model), indent=2) + "\n")
    return path


def stale_sidecar(onnx_path: Path | str) -> str | None:
    """Why the sidecar of ``onnx_path`` does not describe it (missing, unreadable, or another contract), or None."""
    from stereodeploy.contract import load_onnx

    path = sidecar_path(onnx_path)
    if not path.is_file():
        return f"{path} is missing"
    try:
        written = json.loads(path.read_text())
    except ValueError as exc:
        return f"{path} is not JSON ({exc})"
    expected = contract(load_onnx(onnx_path))
    for key in expected:
        if written.get(key) != expected[key]:
            return f"{path}: its {key!r} differs from the file's"
    return None


def main(argv: list[str] | None = None) -> int:
    """Write (or rewrite) the sidecar of each ONNX file named on the command line."""
    import sys

    from stereodeploy.contract import load_onnx

    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m stereodeploy.deploy.sidecar FILE.onnx [...]", file=sys.stderr)
        return 2
    for name in paths:
        print(write_sidecar(load_onnx(name), name, overwrite=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
