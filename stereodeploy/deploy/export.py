"""Export a trained network to ONNX with one contract for every source framework, then check it.

The contract every exported file follows (input, output, metadata) is :mod:`stereodeploy.contract`.

Each framework's exporter and native feature function come from its record in :mod:`stereodeploy.frameworks`;
the checkpoint says which framework wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stereodeploy.contract import INPUT_NAME, OUTPUT_NAME, ModelMeta, set_meta
from stereodeploy.data.io import atomic_write, ensure_writable
from stereodeploy.deploy.sidecar import write_sidecar
from stereodeploy.errors import UsageError, UserError
from stereodeploy.frameworks import FRAMEWORKS

OPSET = 17
PARITY_TOLERANCE = 1e-4


def parity_input(height: int = 375, width: int = 1242, seed: int = 0) -> np.ndarray:
    """A real-sized, textured (1, 1, H, W) float32 image in 0..255 for export checks."""
    from stereodeploy.data.datasets import synthetic_pair

    sample = synthetic_pair(height=height, width=width, max_disp=32, seed=seed)
    from stereodeploy.data.preprocess import to_gray

    return to_gray(sample.left)[None, None].astype(np.float32)


@dataclass
class ExportReport:
    path: Path
    meta: ModelMeta
    max_abs_diff: float
    input_shape: tuple[int, ...]


def export(checkpoint: Path, out: Path, max_disp: int = 128, overwrite: bool = False, check: bool = True,
           parity_size: tuple[int, int] = (375, 1242)) -> ExportReport:
    """Export a run directory or checkpoint to ONNX ``out`` and check it against the native network.

    Raises UserError if the largest difference on a real-sized input exceeds :data:`PARITY_TOLERANCE`; the file is
    only moved into place once every check passed.
    """
    import onnx

    from stereodeploy.train.checkpoint import load_checkpoint

    out = Path(out)
    if max_disp < 1:
        raise UsageError(f"the default max disparity stored in the model must be at least 1, got {max_disp}")
    ensure_writable(out, overwrite)
    ckpt = load_checkpoint(Path(checkpoint))
    if ckpt.framework not in FRAMEWORKS:
        raise UserError(f"{checkpoint} was written by an unknown framework {ckpt.framework!r}")
    fw = FRAMEWORKS[ckpt.framework]
    fw.require("export")
    model = fw.load("exporter")(ckpt.network, ckpt.weights, OPSET)
    meta = ModelMeta(network=ckpt.network, source_framework=fw.key,
                     source_framework_version=ckpt.meta.get("framework_version", ""), max_disp=max_disp,
                     training_data=ckpt.meta.get("data", {}))
    set_meta(model, meta)
    onnx.checker.check_model(model, full_check=True)
    diff, shape = 0.0, (1, 1, *parity_size)
    if check:
        image = parity_input(*parity_size)
        native = fw.load("native_features")(ckpt.network, ckpt.weights, image)
        ours = run_onnx(model, image)
        diff = float(np.max(np.abs(native - ours)))
        if not diff < PARITY_TOLERANCE:
            raise UserError(f"export check failed: ONNX and native {fw.label} features differ by {diff:.2e} "
                            f"(> {PARITY_TOLERANCE:.0e}); nothing was written")
    with atomic_write(out, overwrite=overwrite) as tmp:
        onnx.save_model(model, str(tmp))
    write_sidecar(model, out, overwrite=True)  # out.onnx.json: the contract for clients that cannot read metadata
    return ExportReport(path=out, meta=meta, max_abs_diff=diff, input_shape=shape)


def run_onnx(model: Any, image: np.ndarray) -> np.ndarray:
    """Run an in-memory ONNX feature model on the CPU (used by the export checks)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT_NAME], {INPUT_NAME: image})[0]

