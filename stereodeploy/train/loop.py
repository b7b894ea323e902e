"""The training loop shared by every framework: batches, schedule, timing, metrics, checkpoints, resume, plot.

A framework plugs in through :class:`Stepper` (one optimisation step, weights and optimiser state as numpy). The
loop times the network + optimisation step alone (the stepper synchronises before returning), the epoch and the
whole run the way the published PyTorch/TensorFlow comparison did, and writes a run directory:

    RUN_DIR/config.json      framework, network, sampler and training configuration, data summary
    RUN_DIR/metrics.jsonl    one line per epoch: lr, loss, patch accuracy, times, validation error
    RUN_DIR/summary.json     total, mean epoch and mean step time, examples per second
    RUN_DIR/checkpoint.npz   weights, momentum, epoch and next batch (written at every epoch end and every N steps)
    RUN_DIR/accuracy.png     patch accuracy (and validation error) per epoch

Checkpoints are plain ``.npz`` archives (arrays plus one JSON string) loaded with ``allow_pickle=False``: loading
never executes code, and both frameworks share the format (the ``framework`` field tells them apart).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stereodeploy import __version__
from stereodeploy.config import NetworkConfig, SamplerConfig, TrainConfig, from_dict
from stereodeploy.errors import UserError
from stereodeploy.io import atomic_write
from stereodeploy.nets.weights import Weights
from stereodeploy.patches import Batch, PatchIndex

CHECKPOINT_FORMAT = 1


class Stepper(Protocol):
    """What a framework provides to the shared loop."""

    framework: str  # "torch" or "tf"
    framework_version: str
    device: str

    def step(self, batch: Batch, lr: float) -> tuple[float, float]:
        """One forward/backward/update; returns (mean hinge loss, patch accuracy) after synchronising."""

    def get_weights(self) -> Weights: ...

    def set_weights(self, weights: Weights) -> None: ...

    def get_momentum(self) -> Weights: ...

    def set_momentum(self, momentum: Weights) -> None: ...

    def features(self, gray: np.ndarray) -> np.ndarray:
        """(H, W) grayscale 0..255 -> (C, H, W) L2-normalised features (for validation)."""


# ---------------------------------------------------------------------------- checkpoints
@dataclass
class Checkpoint:
    framework: str
    network: NetworkConfig
    weights: Weights
    momentum: Weights | None = None
    epoch: int = 0  # epoch in progress (or next, when batch == 0)
    batch: int = 0  # next batch of that epoch
    progress: dict[str, Any] = field(default_factory=dict)  # partial-epoch sums, run clock
    meta: dict[str, Any] = field(default_factory=dict)  # train/sampler config, versions


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    arrays: dict[str, np.ndarray] = {}
    for i, (k, b) in enumerate(ckpt.weights):
        arrays[f"w{i}"], arrays[f"b{i}"] = k, b
    for i, (k, b) in enumerate(ckpt.momentum or []):
        arrays[f"mw{i}"], arrays[f"mb{i}"] = k, b
    header = {
        "format": "stereodeploy-checkpoint", "format_version": CHECKPOINT_FORMAT, "stereodeploy": __version__,
        "framework": ckpt.framework, "network": asdict(ckpt.network), "epoch": ckpt.epoch, "batch": ckpt.batch,
        "progress": ckpt.progress, "meta": ckpt.meta, "has_momentum": ckpt.momentum is not None,
    }
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with atomic_write(path, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


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
    if header.get("format_version", 0) > CHECKPOINT_FORMAT:
        raise UserError(f"{path} was written by stereodeploy {header.get('stereodeploy')} (checkpoint format "
                        f"{header['format_version']}); this is {__version__}: upgrade stereodeploy to read it")
    if framework is not None and header["framework"] != framework:
        raise UserError(f"{path} is a {header['framework']} checkpoint, not {framework}: use "
                        f"`stereodeploy train {header['framework']} --resume` for it")
    n = sum(1 for k in arrays if k.startswith("w"))
    weights = [(arrays[f"w{i}"], arrays[f"b{i}"]) for i in range(n)]
    momentum = [(arrays[f"mw{i}"], arrays[f"mb{i}"]) for i in range(n)] if header.get("has_momentum") else None
    return Checkpoint(framework=header["framework"], network=from_dict(NetworkConfig, header["network"]),
                      weights=weights, momentum=momentum, epoch=header["epoch"], batch=header["batch"],
                      progress=header.get("progress", {}), meta=header.get("meta", {}))


# ---------------------------------------------------------------------------- the loop
@dataclass
class EpochMetrics:
    epoch: int
    lr: float
    loss: float
    accuracy: float
    steps: int
    examples: int
    epoch_seconds: float
    step_seconds: float  # mean network + optimisation step
    validation_error: float | None = None


def _write_json(path: Path, obj: Any) -> None:
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_metrics(run_dir: Path, rows: Sequence[dict[str, Any]]) -> None:
    with atomic_write(run_dir / "metrics.jsonl", overwrite=True) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def plot_metrics(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Patch accuracy per epoch (and validation error, if any) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r["epoch"] + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(epochs, [100 * r["accuracy"] for r in rows], "o-", label="patch accuracy (%)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("patch accuracy (%)")
    ax.grid(alpha=0.3)
    if any(r.get("validation_error") is not None for r in rows):
        ax2 = ax.twinx()
        ax2.plot(epochs, [r.get("validation_error") for r in rows], "s--", color="tab:red", label="validation >=3 px error (%)")
        ax2.set_ylabel(">=3 px error (%)", color="tab:red")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_write(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def train(stepper: Stepper, index: PatchIndex, network: NetworkConfig, cfg: TrainConfig, run_dir: Path,
          data_summary: dict[str, Any] | None = None, validation: Sequence[Any] = (), max_disp: int = 64,
          resume: bool = False, progress: bool = True,
          on_step: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Train ``stepper`` on ``index`` following ``cfg``; returns the summary (also in RUN_DIR/summary.json).

    ``validation`` holds StereoSamples with ground truth: after each epoch the >=3 px error of winner-take-all
    disparities on them is logged. ``resume`` continues from RUN_DIR/checkpoint.npz.
    """
    run_dir = Path(run_dir)
    per_batch = cfg.examples_per_batch
    n_batches = index.num_batches(per_batch, cfg.max_examples)
    rows: list[dict[str, Any]] = []
    start_epoch, start_batch, prog = 0, 0, {}
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoint.npz", framework=stepper.framework)
        stepper.set_weights(ckpt.weights)
        if ckpt.momentum is not None:
            stepper.set_momentum(ckpt.momentum)
        start_epoch, start_batch, prog = ckpt.epoch, ckpt.batch, dict(ckpt.progress)
        rows = read_metrics(run_dir)[:start_epoch]
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "config.json", {
            "format_version": CHECKPOINT_FORMAT, "stereodeploy": __version__, "framework": stepper.framework,
            "framework_version": stepper.framework_version, "device": stepper.device,
            "network": asdict(network), "sampler": asdict(index.config), "train": asdict(cfg),
            "data": data_summary or {}, "examples": len(index), "batches_per_epoch": n_batches,
        })
        _write_metrics(run_dir, [])
    meta = {"train": asdict(cfg), "sampler": asdict(index.config), "data": data_summary or {},
            "framework_version": stepper.framework_version}
    run_seconds = float(prog.get("run_seconds", 0.0))

    def checkpoint(epoch: int, batch: int, partial: dict[str, float]) -> None:
        save_checkpoint(run_dir / "checkpoint.npz", Checkpoint(
            framework=stepper.framework, network=network, weights=stepper.get_weights(),
            momentum=stepper.get_momentum(), epoch=epoch, batch=batch,
            progress={**partial, "run_seconds": run_seconds}, meta=meta))

    bar = _progress(progress)
    global_step = start_epoch * n_batches + start_batch
    with bar:
        task = bar.add_task(f"train {stepper.framework}", total=(cfg.epochs - start_epoch) * n_batches - start_batch)
        for epoch in range(start_epoch, cfg.epochs):
            lr = cfg.lr_at(epoch)
            first = start_batch if epoch == start_epoch else 0
            partial = prog if epoch == start_epoch and first else {}
            loss_sum = float(partial.get("loss_sum", 0.0))
            acc_sum = float(partial.get("acc_sum", 0.0))
            step_sum = float(partial.get("step_seconds", 0.0))
            epoch_seconds = float(partial.get("epoch_seconds", 0.0))
            steps = int(partial.get("steps", 0))
            t_epoch = time.perf_counter()
            for b, batch in enumerate(index.batches(epoch, per_batch, cfg.max_examples, start=first), start=first):
                t0 = time.perf_counter()
                loss, acc = stepper.step(batch, lr)
                step_sum += time.perf_counter() - t0
                loss_sum += loss
                acc_sum += acc
                steps += 1
                global_step += 1
                bar.update(task, advance=1, description=f"train {stepper.framework} epoch {epoch + 1}/{cfg.epochs} loss {loss:.4f}")
                if on_step is not None:
                    on_step(epoch, b)
                if cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0 and b + 1 < n_batches:
                    now = time.perf_counter()
                    run_seconds += now - t_epoch
                    epoch_seconds += now - t_epoch
                    t_epoch = now
                    checkpoint(epoch, b + 1, {"loss_sum": loss_sum, "acc_sum": acc_sum, "step_seconds": step_sum,
                                              "epoch_seconds": epoch_seconds, "steps": steps})
            now = time.perf_counter()
            epoch_seconds += now - t_epoch
            run_seconds += now - t_epoch
            row = asdict(EpochMetrics(
                epoch=epoch, lr=lr, loss=loss_sum / steps, accuracy=acc_sum / steps, steps=steps,
                examples=steps * per_batch, epoch_seconds=epoch_seconds, step_seconds=step_sum / steps))
            if validation:
                row["validation_error"] = validation_error(stepper, validation, max_disp)
            rows.append(row)
            _write_metrics(run_dir, rows)
            checkpoint(epoch + 1, 0, {})
            plot_metrics(rows, run_dir / "accuracy.png", title=f"MC-CNN fast, {stepper.framework}")
    summary = summarize(rows, run_seconds, per_batch)
    summary.update(framework=stepper.framework, framework_version=stepper.framework_version, device=stepper.device)
    _write_json(run_dir / "summary.json", summary)
    return summary


def summarize(rows: Sequence[dict[str, Any]], run_seconds: float, per_batch: int) -> dict[str, Any]:
    """Table I of the study: total training time, mean epoch time, mean network + optimisation step time."""
    steps = sum(r["steps"] for r in rows)
    step_total = sum(r["step_seconds"] * r["steps"] for r in rows)
    return {
        "epochs": len(rows),
        "total_seconds": run_seconds,
        "mean_epoch_seconds": run_seconds / max(1, len(rows)),
        "mean_step_seconds": step_total / max(1, steps),
        "examples_per_second": steps * per_batch / step_total if step_total else 0.0,
        "final_loss": rows[-1]["loss"] if rows else None,
        "final_accuracy": rows[-1]["accuracy"] if rows else None,
        "final_validation_error": rows[-1].get("validation_error") if rows else None,
    }


def validation_error(stepper: Stepper, samples: Sequence[Any], max_disp: int) -> float:
    """Mean >=3 px error (%) of winner-take-all disparities over ``samples`` (StereoSamples with ground truth)."""
    from stereodeploy.engine.matching import wta_from_features
    from stereodeploy.evaluate import average_rate, error_rate
    from stereodeploy.io import to_gray

    errors = []
    for s in samples:
        fl = stepper.features(to_gray(s.left))
        fr = stepper.features(to_gray(s.right))
        disp = wta_from_features(fl, fr, min(s.max_disp or max_disp, fl.shape[-1] - 1))
        errors.append(error_rate(disp, s.disp))
    return average_rate(errors)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=not enabled, transient=False)
