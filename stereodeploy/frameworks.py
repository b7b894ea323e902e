"""What a deep learning framework is to stereodeploy: one record per framework, read by every other module.

A record names, as ``"module:attribute"`` strings resolved only when used (so ``import stereodeploy`` loads no
framework), the pieces each stage of the flow needs: the training stepper, the ONNX exporter, the native feature
function of the export check, the engine backend and the device rule. It also says which packages each use needs
and which pip extra brings them, so that every command checks its requirements before it starts any work.

Adding a framework means adding one record to :data:`FRAMEWORKS`; the CLI choices, the backends table, the
comparison's runtimes and the report's names all follow from it.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Literal

from stereodeploy.errors import UsageError, UserError

Use = Literal["train", "export", "backend"]


@dataclass(frozen=True)
class Framework:
    """One framework: its names, what it needs, and where its pieces live."""

    key: str  # the name on the command line and in checkpoints: torch, tf
    label: str  # the name people read: PyTorch, TensorFlow
    extra: str  # pip extra that installs everything below: pip install 'stereodeploy[extra]'
    needs: dict[str, tuple[tuple[str, str], ...]]  # use -> ((import name, what it is), ...)
    stepper: str  # "module:class" of the training stepper (stereodeploy.train.loop's Stepper protocol)
    exporter: str  # "module:function" (network, weights, opset) -> onnx.ModelProto
    native_features: str  # "module:function" (network, weights, (N,1,H,W) image) -> (N,C,H,W) features
    backend: str  # "module:class" of the engine backend (stereodeploy.engine.backends.Backend)
    device: str  # "module:function" "cpu" | "cuda" -> (the framework's device object, description)
    model_file: str  # file name of this framework's exported model (shipped models, compare's report)
    version_module: str  # the module whose __version__ is the framework's version

    def missing(self, use: Use) -> list[tuple[str, str]]:
        """The (import name, description) pairs that ``use`` needs and this environment lacks."""
        return [(name, what) for name, what in self.needs[use] if not _installed(name)]

    def require(self, use: Use, purpose: str | None = None) -> None:
        """Raise a one-line :class:`UserError` naming the extra to install when ``use`` cannot run here."""
        missing = self.missing(use)
        if missing:
            name, what = missing[0]
            doing = purpose or {"train": f"training with {self.label}", "export": f"exporting a {self.label} run",
                                "backend": f"the {self.key} backend"}[use]
            raise UserError(f"{doing} needs {what} ({name}), which is not installed: "
                            f"pip install 'stereodeploy[{self.extra}]'")

    def load(self, attribute: str) -> Any:
        """The object named by one of the ``"module:attribute"`` fields, e.g. ``load("exporter")``."""
        module, name = getattr(self, attribute).split(":")
        return getattr(importlib.import_module(module), name)

    def resolve_device(self, device: str, option: str = "--device", index: int = 0) -> tuple[Any, str]:
        """``cpu`` or ``cuda`` -> (device object, description); ``index`` picks the GPU of a distributed process.
        A one-line error naming ``option`` (the command's option that chose the device) when it is not usable."""
        if device not in DEVICES:
            raise UsageError(f"unknown device {device!r}: use {option} {' or '.join(DEVICES)}")
        return self.load("device")(device, option, index)

    def version(self) -> str:
        return str(getattr(importlib.import_module(self.version_module), "__version__", ""))


DEVICES = ("cpu", "cuda")

FRAMEWORKS: dict[str, Framework] = {
    "torch": Framework(
        key="torch", label="PyTorch", extra="torch",
        needs={"train": (("torch", "PyTorch"),), "export": (("torch", "PyTorch"),),
               "backend": (("torch", "PyTorch"),)},
        stepper="stereodeploy.train.torch_trainer:TorchStepper",
        exporter="stereodeploy.nets.torch_net:to_onnx_model",
        native_features="stereodeploy.nets.torch_net:native_features",
        backend="stereodeploy.engine.torch_backend:TorchBackend",
        device="stereodeploy.nets.torch_net:resolve_device",
        model_file="mccnn_fast_torch.onnx",
        version_module="torch",
    ),
    "tf": Framework(
        key="tf", label="TensorFlow", extra="tf",
        needs={"train": (("tensorflow", "TensorFlow"), ("keras", "Keras 3")),
               "export": (("tensorflow", "TensorFlow"), ("keras", "Keras 3"),
                          ("tf2onnx", "tf2onnx, the TensorFlow to ONNX converter")),
               "backend": (("tensorflow", "TensorFlow"), ("keras", "Keras 3"))},
        stepper="stereodeploy.train.tf_trainer:TFStepper",
        exporter="stereodeploy.nets.tf_net:to_onnx_model",
        native_features="stereodeploy.nets.tf_net:native_features",
        backend="stereodeploy.engine.tf_backend:TFBackend",
        device="stereodeploy.nets.tf_net:resolve_device",
        model_file="mccnn_fast_tf.onnx",
        version_module="tensorflow",
    ),
}


def get(key: str) -> Framework:
    """The record of framework ``key``; an unknown name is a usage error listing the known ones."""
    try:
        return FRAMEWORKS[key]
    except KeyError:
        raise UsageError(f"unknown framework {key!r}: use {' or '.join(FRAMEWORKS)}") from None


def label(key: str) -> str:
    """The readable name of ``key`` (the key itself for anything that is not a framework, e.g. onnx)."""
    return FRAMEWORKS[key].label if key in FRAMEWORKS else key


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
