"""The training loop shared by every framework: batches, schedule, timing, metrics, checkpoints, resume, plot.

A framework plugs in through :class:`Stepper` (one optimisation step, weights and optimiser state as numpy). The
loop times the network + optimisation step alone (the stepper synchronises before returning), the epoch and the
whole run the way the published PyTorch/TensorFlow comparison did, and writes a run directory in the format of
:mod:`stereodeploy.train.checkpoint`.

Several processes (torchrun, tf.distribute): every process runs this loop on its slice of the same global batch
(``Stepper.rank`` of ``Stepper.world``); the stepper averages the gradients over the whole batch and returns the
whole batch's loss and accuracy. Process 0 alone writes files, logs and shows progress.

Preemption: SIGINT and SIGTERM finish the current step, write a checkpoint and raise :class:`TrainingInterrupted`
(exit code 130 or 143 at the command line); a checkpoint is also written every ``checkpoint_minutes`` (and every
``checkpoint_every`` steps when set), and one before the first step, so that any run directory can be resumed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from stereodeploy.config import RunSpec
from stereodeploy.data.io import atomic_write
from stereodeploy.data.patches import Batch, PatchIndex
from stereodeploy.errors import UsageError, UserError
from stereodeploy.nets.weights import Weights
from stereodeploy.train.checkpoint import (
    Checkpoint,
    TrainingSummary,
    load_checkpoint,
    read_metrics,
    resume_command,
    save_checkpoint,
    write_json,
    write_metrics,
    write_run_config,
)
from stereodeploy.util.progress import progress_bar

if TYPE_CHECKING:
    from typing import Self  # Python 3.11+; only read by type checkers here


class Stepper(Protocol):
    """What a framework provides to the shared loop."""

    framework: str  # its key in stereodeploy.frameworks.FRAMEWORKS
    framework_version: str
    device: str
    rank: int  # this process, 0..world-1 (0 and 1 without distribution)
    world: int

    def step(self, batch: Batch, lr: float) -> tuple[float, float]:
        """One forward/backward/update on this process's slice of the global batch; returns the whole batch's
        (mean hinge loss, patch accuracy) after synchronising."""

    def any_rank(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any (only called when ``world > 1``)."""

    def get_weights(self) -> Weights: ...

    def set_weights(self, weights: Weights) -> None: ...

    def get_momentum(self) -> Weights: ...

    def set_momentum(self, momentum: Weights) -> None: ...

    def features(self, gray: np.ndarray) -> np.ndarray:
        """(H, W) grayscale 0..255 -> (C, H, W) L2-normalised features (for validation)."""


class TrainingInterrupted(UserError):
    """SIGINT or SIGTERM stopped training after a checkpoint; the exit code is 128 + the signal number."""


class _StopSignals:
    """While active, SIGINT and SIGTERM only record that a stop was asked for (the loop checks after each step).

    A signal repeated more than 2 s after the first stops at once (a user pressing Ctrl-C again); repeats
    within 2 s are the same request delivered twice (a terminal's and torchrun's).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._first = 0.0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None and time.monotonic() - self._first > 2.0:
            raise KeyboardInterrupt
        if self.received is None:
            self.received, self._first = signum, time.monotonic()

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


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


def plot_metrics(rows: Sequence[dict[str, Any]], path: Path, title: str = "") -> None:
    """Patch accuracy per epoch (and validation error, if any) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(epochs, [100 * r["accuracy"] for r in rows], "o-", label="patch accuracy (%)")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
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


def rank_slice(examples_per_batch: int, rank: int, world: int) -> tuple[int, int]:
    """Examples ``lo..hi-1`` of every global batch that process ``rank`` of ``world`` trains on (the batch contract:
    the slices of all processes make up the single-process batch; sizes differ by at most one)."""
    return rank * examples_per_batch // world, (rank + 1) * examples_per_batch // world


def train(stepper: Stepper, index: PatchIndex, spec: RunSpec, run_dir: Path, *,
          data_summary: dict[str, Any] | None = None, validation: Sequence[Any] = (), resume: bool = False,
          progress: bool = True, on_step: Callable[[int, int], None] | None = None,
          run_info: dict[str, Any] | None = None) -> TrainingSummary:
    """Train ``stepper`` on ``index`` following ``spec``; returns the summary (also in RUN_DIR/summary.json).

    ``validation`` holds StereoSamples with ground truth: after each epoch the >=3 px error of winner-take-all
    disparities (up to ``spec.max_disp``) on them is logged. ``resume`` continues from RUN_DIR/checkpoint.npz up
    to ``spec.train.epochs`` (more epochs than before extend a finished run). ``run_info`` (thread settings) goes
    into the summary. RUN_DIR/config.json records ``spec`` (rewritten on resume: it may have changed).
    """
    run_dir = Path(run_dir)
    network, cfg = spec.network, spec.train
    rank, world = getattr(stepper, "rank", 0), getattr(stepper, "world", 1)
    writer = rank == 0
    per_batch = cfg.examples_per_batch
    if per_batch < world:
        raise UserError(f"a batch of {per_batch} examples cannot be shared by {world} processes: raise --batch-size "
                        f"to at least {2 * world}")
    part = rank_slice(per_batch, rank, world) if world > 1 else None
    n_batches = index.num_batches(per_batch, cfg.max_examples)
    rows: list[dict[str, Any]] = []
    start_epoch, start_batch, prog = 0, 0, {}
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoint.npz", framework=stepper.framework)
        begun = ckpt.epoch + (1 if ckpt.batch else 0)
        if cfg.epochs < begun:
            raise UsageError(f"--epochs {cfg.epochs} is fewer than the {begun} epochs {run_dir} has done or begun: "
                             f"give --epochs {begun} or more to continue it")
        stepper.set_weights(ckpt.weights)
        if ckpt.momentum is not None:
            stepper.set_momentum(ckpt.momentum)
        start_epoch, start_batch, prog = ckpt.epoch, ckpt.batch, dict(ckpt.progress)
        rows = read_metrics(run_dir)[:start_epoch]
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_run_config(run_dir, spec, data_summary or {}, framework_version=stepper.framework_version,
                         device=stepper.device, world_size=world, examples=len(index), batches_per_epoch=n_batches)
        if not resume:
            write_metrics(run_dir, [])
    meta = {"data": data_summary or {}, "framework_version": stepper.framework_version}
    run_seconds = float(prog.get("run_seconds", 0.0))
    last_save = time.monotonic()

    def checkpoint(epoch: int, batch: int, partial: dict[str, float]) -> None:
        nonlocal last_save
        if writer:
            save_checkpoint(run_dir / "checkpoint.npz", Checkpoint(
                framework=stepper.framework, network=network, weights=stepper.get_weights(),
                momentum=stepper.get_momentum(), epoch=epoch, batch=batch,
                progress={**partial, "run_seconds": run_seconds}, meta=meta))
        last_save = time.monotonic()

    if not resume:
        checkpoint(0, 0, {})  # from the first step on, the run directory can be resumed
    bar = progress_bar(progress and writer)
    global_step = start_epoch * n_batches + start_batch
    every_seconds = 60.0 * cfg.checkpoint_minutes
    with bar, _StopSignals() as stop:
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
            stopping = False
            for b, batch in enumerate(index.batches(epoch, per_batch, cfg.max_examples, start=first, part=part),
                                      start=first):
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
                stopping = stop.received is not None
                if world > 1:
                    stopping = stepper.any_rank(stopping)
                due = (cfg.checkpoint_every and global_step % cfg.checkpoint_every == 0
                       or every_seconds and time.monotonic() - last_save >= every_seconds)
                if (stopping or due) and b + 1 < n_batches:
                    now = time.perf_counter()
                    run_seconds += now - t_epoch
                    epoch_seconds += now - t_epoch
                    t_epoch = now
                    checkpoint(epoch, b + 1, {"loss_sum": loss_sum, "acc_sum": acc_sum, "step_seconds": step_sum,
                                              "epoch_seconds": epoch_seconds, "steps": steps})
                if stopping:
                    break
            if stopping and b + 1 < n_batches:
                _interrupted(stop.received, stepper.framework, run_dir, epoch, b + 1)
            now = time.perf_counter()
            epoch_seconds += now - t_epoch
            run_seconds += now - t_epoch
            row = asdict(EpochMetrics(
                epoch=epoch, lr=lr, loss=loss_sum / steps, accuracy=acc_sum / steps, steps=steps,
                examples=steps * per_batch, epoch_seconds=epoch_seconds, step_seconds=step_sum / steps))
            if validation:
                row["validation_error"] = validation_error(stepper, validation, spec.max_disp)
            rows.append(row)
            checkpoint(epoch + 1, 0, {})
            if writer:
                write_metrics(run_dir, rows)
                plot_metrics(rows, run_dir / "accuracy.png", title=f"MC-CNN fast, {stepper.framework}")
            if stopping and epoch + 1 < cfg.epochs:
                _interrupted(stop.received, stepper.framework, run_dir, epoch + 1, 0)
    summary = TrainingSummary(
        framework=stepper.framework, framework_version=stepper.framework_version, device=stepper.device,
        world_size=world, **summarize(rows, run_seconds, per_batch), **(run_info or {}),
        # with the start's load in run_info: was the machine busier than its cores?
        load_average_end=round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None)
    if writer:
        write_json(run_dir / "summary.json", summary.to_dict())
    return summary


def _interrupted(signum: int | None, framework: str, run_dir: Path, epoch: int, batch: int) -> None:
    signum = signum or signal.SIGTERM  # another process of the job received it
    name = signal.Signals(signum).name
    raise TrainingInterrupted(f"{name}: stopped at epoch {epoch + 1}, batch {batch} after writing "
                              f"{run_dir / 'checkpoint.npz'}; continue with `{resume_command(framework, run_dir)}`",
                              exit_code=128 + signum)

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
    from stereodeploy.data.preprocess import to_gray
    from stereodeploy.engine.matching import wta_from_features
    from stereodeploy.study.evaluate import average_rate, error_rate

    errors = []
    for s in samples:
        fl = stepper.features(to_gray(s.left))
        fr = stepper.features(to_gray(s.right))
        disp = wta_from_features(fl, fr, min(s.max_disp or max_disp, fl.shape[-1] - 1))
        errors.append(error_rate(disp, s.disp))
    return average_rate(errors)
