"""What the commands of the `stereodeploy` CLI share: choices, option definitions and the error boundary.

Each option used by several commands is defined here once, as an ``Annotated`` type; the choices that name a
framework or a backend follow :data:`stereodeploy.frameworks.FRAMEWORKS`. Neither this module nor the commands
import a framework.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from stereodeploy.errors import UsageError, UserError
from stereodeploy.frameworks import DEVICES, FRAMEWORKS


def user_errors(func: Callable) -> Callable:
    """The boundary of every command: a UserError becomes one line on stderr and its exit code, Ctrl-C exit 130,
    and each warning one ``warning:`` line on stderr."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            with warnings_as_lines():
                return func(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


@contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Show each distinct warning once, as ``warning: <message>`` on stderr (no file name, no source line)."""

    def show(message, category, filename, lineno, file=None, line=None):
        typer.echo(f"warning: {message}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default", UserWarning)  # ours; libraries keep their own filters
        warnings.showwarning = show
        yield


def network_or_usage_error(layers: int, maps: int, kernel: int):
    """The :class:`~stereodeploy.config.NetworkConfig` of the options, a bad value being a usage error."""
    from stereodeploy.config import NetworkConfig

    try:
        return NetworkConfig(layers=layers, maps=maps, kernel=kernel)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


# ------------------------------------------------------------------------------------------------ choices
Framework = Enum("Framework", {key: key for key in FRAMEWORKS}, type=str)
BackendName = Enum("BackendName", {key: key for key in ("onnx", *FRAMEWORKS)}, type=str)
Device = Enum("Device", {key: key for key in DEVICES}, type=str)


class Postprocess(str, Enum):
    none = "none"
    full = "full"


class DataFormat(str, Enum):
    kitti2012 = "kitti2012"
    kitti2015 = "kitti2015"
    middlebury = "middlebury"


class Quantization(str, Enum):
    int8 = "int8"


def value(choice: Enum | None) -> str | None:
    """The string of an optional choice."""
    return None if choice is None else choice.value


# ------------------------------------------------------------------------------------------------ options
Overwrite = Annotated[bool, typer.Option(help="Replace existing outputs.")]
Progress = Annotated[bool, typer.Option(help="Show progress bars.")]
Threads = Annotated[int | None, typer.Option(
    help="CPU threads per operation (default: training takes the free cores, shared by this node's processes; "
         "inference all usable cores).")]
FormatOption = Annotated[DataFormat | None, typer.Option("--format", help="Dataset layout; detected if omitted.")]
BackendOption = Annotated[BackendName, typer.Option(help="Feature backend.")]
ProviderOption = Annotated[Device, typer.Option(help="cpu or cuda (checked as active; no silent fallback).")]
DeviceOption = Annotated[Device, typer.Option(help="cpu or cuda.")]
PostprocessOption = Annotated[Postprocess, typer.Option(help="none: winner-take-all; full: MC-CNN post-processing.")]
ModelOption = Annotated[Path | None, typer.Option(
    help="Model: ONNX file, a shipped model's name (`stereodeploy models`), or a run directory / checkpoint for a "
         "native --backend (default: the shipped model).")]

# training: the schedule and the network, shared by `train` and `compare`
Epochs = Annotated[int, typer.Option(help="Epochs (the study: 14).")]
BatchSize = Annotated[int, typer.Option(help="Pairs per batch (128 = 64 positive + 64 negative).")]
LearningRate = Annotated[float, typer.Option("--lr", help="Learning rate.")]
Momentum = Annotated[float, typer.Option(help="SGD momentum.")]
LrDrops = Annotated[list[int], typer.Option("--lr-drop", help="Epoch at which lr is multiplied by 0.1 (repeatable).")]
MaxExamples = Annotated[int | None, typer.Option(help="Examples per epoch (default: all).")]
Seed = Annotated[int, typer.Option(help="Seed of the initial weights and of the sampler.")]
Layers = Annotated[int, typer.Option(help="Convolution layers.")]
Maps = Annotated[int, typer.Option(help="Feature maps per layer.")]
Kernel = Annotated[int, typer.Option(help="Kernel size.")]
