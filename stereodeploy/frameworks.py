"""What a deep learning framework is to stereodeploy: one record per framework, read by every other module.

A record names, as ``"module:attribute"`` strings resolved only when used (so ``import stereodeploy`` loads no
framework), the pieces each stage of the flow needs: the training stepper, the ONNX exporter, the native feature
function of the export check, the engine backend, the device rule, the thread settings, the launcher convention
of a distributed job and the start-up log switch. It also says which packages each use needs and which pip extra
brings them, so that every command checks its requirements before it starts any work.

Adding a framework means adding one record to :data:`FRAMEWORKS` (and the framework's own modules it names); the
CLI's choices and train commands, the thread settings, the process reader, the backends table, the comparison's
runtimes, versions and thread variables, and the report's names and differences all follow from it. The first
record is the reference the comparison's differences are taken against. tests/test_frameworks.py checks that no
other module names a framework.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
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
    version_module: str  # the module whose __version__ is the framework's version (and whose import loads it)
    # "module:function" (intra_op, inter_op) -> None sizing the framework's thread pools once it is loaded, and
    # "module:function" () -> {"intra_op": n, "inter_op": m}, the counts it uses (stereodeploy.util.threads)
    set_threads: str
    thread_counts: str
    # "module:function" () -> stereodeploy.train.distributed.Process: this process's place in a distributed job,
    # read from the environment of the framework's launcher
    process: str
    distributed_hint: str  # how to start a distributed run (train command's help)
    # python arguments that run a command as N local processes ("{n}" is replaced), () when there is no such
    # launcher: `stereodeploy train KEY --nproc-per-node N` re-executes itself as `python ARGS -m stereodeploy ...`
    local_launch: tuple[str, ...] = ()
    # environment variables the framework reads when it starts -> "intra" or "inter" (the thread counts to put there)
    thread_env: dict[str, str] = field(default_factory=dict)
    # version report: name -> the pip distributions that provide it (the first one installed counts)
    distributions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    quiet: str = ""  # "module:function" (verbose) -> None silencing start-up logs; run before the first import

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

    def loaded(self) -> bool:
        """Whether this process has imported the framework already (nothing is imported to find out)."""
        return self.version_module in sys.modules


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
        set_threads="stereodeploy.nets.torch_net:set_threads",
        thread_counts="stereodeploy.nets.torch_net:thread_counts",
        process="stereodeploy.train.distributed:torch_process",
        distributed_hint="torchrun --nproc-per-node N -m stereodeploy train torch",
        local_launch=("-m", "torch.distributed.run", "--standalone", "--nproc-per-node={n}"),
        distributions={"torch": ("torch",)},
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
        set_threads="stereodeploy.nets.tf_net:set_threads",
        thread_counts="stereodeploy.nets.tf_net:thread_counts",
        process="stereodeploy.train.distributed:tf_process",
        distributed_hint="one process per TF_CONFIG task",
        thread_env={"TF_NUM_INTRAOP_THREADS": "intra", "TF_NUM_INTEROP_THREADS": "inter"},
        distributions={"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu"), "keras": ("keras",),
                       "tf2onnx": ("tf2onnx",)},
        quiet="stereodeploy.util.quiet:quiet_tensorflow",
    ),
}


# The trainer used where a command does not ask for one (adapt, the hints that print a train command): the first
# record above.
DEFAULT = next(iter(FRAMEWORKS))


def get(key: str) -> Framework:
    """The record of framework ``key``; an unknown name is a usage error listing the known ones."""
    try:
        return FRAMEWORKS[key]
    except KeyError:
        raise UsageError(f"unknown framework {key!r}: use {' or '.join(FRAMEWORKS)}") from None


def label(key: str) -> str:
    """The readable name of ``key`` (the key itself for anything that is not a framework, e.g. onnx)."""
    return FRAMEWORKS[key].label if key in FRAMEWORKS else key


def labels(joiner: str = " or ") -> str:
    """The readable names of all frameworks, e.g. ``PyTorch or TensorFlow``."""
    return joiner.join(fw.label for fw in FRAMEWORKS.values())


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
