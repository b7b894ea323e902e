"""The checkpoint and run-directory format (framework-free): what `stereodeploy train` writes and everything reads.

    RUN_DIR/config.json      the run's RunSpec (the one record of its options; rewritten when a resume changes
                             one), the data summary beside the data spec, examples, batches per epoch
    RUN_DIR/metrics.jsonl    one line per epoch: lr, loss, patch accuracy, times, validation error
    RUN_DIR/summary.json     the TrainingSummary: total, mean epoch and mean step time, examples/s, threads
    RUN_DIR/checkpoint.npz   weights, momentum, epoch and next batch; the framework version and the frames it was
                             trained on (for an export of the checkpoint alone)
    RUN_DIR/accuracy.png     patch accuracy (and validation error) per epoch

Checkpoints are plain ``.npz`` archives (arrays plus one JSON string) loaded with ``allow_pickle=False``: loading
never executes code, and both frameworks share the format (the ``framework`` field tells them apart). A checkpoint
does not depend on the number of processes that wrote it: the batch contract (docs/training.md) makes a run the
same experiment at any world size, so a run written by 2 processes resumes in 1 and the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stereodeploy import __version__
from stereodeploy.config import NetworkConfig, RunSpec, from_dict
from stereodeploy.data.io import atomic_write
from stereodeploy.errors import UserError
from stereodeploy.nets.weights import Weights

FORMAT_VERSION = 1  # of checkpoint.npz and config.json; a reader refuses anything newer
RUN_FILES = ("checkpoint.npz", "metrics.jsonl", "summary.json", "accuracy.png", "config.json")


@dataclass
class Checkpoint:
    framework: str
    network: NetworkConfig
    weights: Weights
    momentum: Weights | None = None
    epoch: int = 0  # epoch in progress (or next, when batch == 0)
    batch: int = 0  # next batch of that epoch
    progress: dict[str, Any] = field(default_factory=dict)  # partial-epoch sums, run clock
    meta: dict[str, Any] = field(default_factory=dict)  # framework_version, data (frames trained on)


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` atomically (a reader never sees a half-written file, a kill never destroys the last one)."""
    arrays: dict[str, np.ndarray] = {}
    for i, (k, b) in enumerate(ckpt.weights):
        arrays[f"w{i}"], arrays[f"b{i}"] = k, b
    for i, (k, b) in enumerate(ckpt.momentum or []):
        arrays[f"mw{i}"], arrays[f"mb{i}"] = k, b
    header = {
        "format": "stereodeploy-checkpoint", "format_version": FORMAT_VERSION, "stereodeploy": __version__,
        "framework": ckpt.framework, "network": asdict(ckpt.network), "epoch": ckpt.epoch, "batch": ckpt.batch,
        "progress": ckpt.progress, "meta": ckpt.meta, "has_momentum": ckpt.momentum is not None,
    }
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with atomic_write(path, overwrite=True) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def resume_command(framework: str, run_dir: Path | str) -> str:
    """The command that continues run ``run_dir`` (every error message that suggests it uses this)."""
    return f"stereodeploy train {framework} --resume --out {run_dir}"


def load_checkpoint(path: Path, framework: str | None = None) -> Checkpoint:
    """Read a checkpoint without executing anything from it; ``framework`` checks which trainer wrote it."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.npz"
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: give a run directory written by `stereodeploy train` or its checkpoint.npz")
    try:
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            arrays = {k: data[k] for k in data.files if k != "header"}
    except Exception as exc:  # noqa: BLE001 - any failure to parse is the user's file, reported in one line
        raise UserError(f"{path} is not a stereodeploy checkpoint ({type(exc).__name__}): give a checkpoint.npz written by `stereodeploy train`") from None
    if header.get("format") != "stereodeploy-checkpoint":
        raise UserError(f"{path} is not a stereodeploy checkpoint")
    if header.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{path} was written by stereodeploy {header.get('stereodeploy')} (checkpoint format "
                        f"{header['format_version']}); this is {__version__}: upgrade stereodeploy to read it")
    if framework is not None and header["framework"] != framework:
        raise UserError(f"{path} is a {header['framework']} checkpoint, not {framework}: continue its run with "
                        f"`{resume_command(header['framework'], path.parent)}`")
    n = sum(1 for k in arrays if k.startswith("w"))
    weights = [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(n)]
    momentum = [(arrays[f"mw{i}"], arrays[f"mb{i}"]) for i in range(n)] if header.get("has_momentum") else None
    return Checkpoint(framework=header["framework"], network=from_dict(NetworkConfig, header["network"]),
                      weights=weights, momentum=momentum, epoch=header["epoch"], batch=header["batch"],
                      progress=header.get("progress", {}), meta=header.get("meta", {}))


# ---------------------------------------------------------------------------- the run directory
def write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def write_run_config(run_dir: Path, spec: RunSpec, data_summary: dict[str, Any], **record: Any) -> None:
    """Write RUN_DIR/config.json: ``spec`` at the top level, the data summary (frames, examples) beside the data
    spec under ``data``, and ``record`` (framework version, world size ...), stamped with the format version and
    the package version."""
    config = spec.to_dict()
    config["data"] = {**config["data"], **data_summary}
    write_json(Path(run_dir) / "config.json",
               {"format_version": FORMAT_VERSION, "stereodeploy": __version__, **config, **record})


def read_run_spec(run_dir: Path) -> RunSpec:
    """The :class:`RunSpec` recorded in RUN_DIR/config.json (a UserError when there is none)."""
    return RunSpec.from_dict(read_run_config(run_dir))


@dataclass(frozen=True)
class TrainingSummary:
    """What a run measured (RUN_DIR/summary.json): Table I's times, the final metrics, where and how it ran."""

    framework: str
    framework_version: str
    device: str
    epochs: int
    total_seconds: float
    mean_epoch_seconds: float
    mean_step_seconds: float
    examples_per_second: float
    final_loss: float | None
    final_accuracy: float | None
    final_validation_error: float | None
    world_size: int = 1
    threads: dict[str, Any] = field(default_factory=dict)  # settings made and counts used (util.threads)
    load_average_end: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_run_config(run_dir: Path, required: bool = True) -> dict[str, Any]:
    """RUN_DIR/config.json as a dict: the one reader of that file.

    Missing: a UserError when ``required``, else ``{}``. Newer than this package or not JSON: always a UserError.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        if required:
            raise UserError(f"{run_dir} is not a run directory (no config.json): give a folder written by "
                            "`stereodeploy train`")
        return {}
    try:
        config = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} cannot be read ({exc}): it is not a run configuration written by stereodeploy") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a run configuration written by stereodeploy")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(f"{run_dir} was written by stereodeploy {config.get('stereodeploy')}, newer than this "
                        f"{__version__}: upgrade stereodeploy to use it")
    return config


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_metrics(run_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    with atomic_write(Path(run_dir) / "metrics.jsonl", overwrite=True) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def clear_run(run_dir: Path) -> None:
    """Remove the files of an old run in ``run_dir`` (a new run must not leave its checkpoint to be resumed)."""
    for name in RUN_FILES:
        (Path(run_dir) / name).unlink(missing_ok=True)
