"""One entry point for training with either framework: data -> patch index -> stepper -> shared loop."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from stereodeploy import frameworks
from stereodeploy.config import NetworkConfig, SamplerConfig, TrainConfig, from_dict
from stereodeploy.data.patches import PatchIndex
from stereodeploy.errors import UsageError, UserError
from stereodeploy.nets.weights import Weights, init_weights
from stereodeploy.train.checkpoint import clear_run, read_run_config, resume_command

log = logging.getLogger("stereodeploy")


def make_stepper(framework: str, network: NetworkConfig, cfg: TrainConfig, weights: Weights):
    """The training stepper of ``framework`` (its record in :mod:`stereodeploy.frameworks`), after checking that
    its packages are installed."""
    fw = frameworks.get(framework)
    fw.require("train")
    return fw.load("stepper")(network, cfg, weights)


def build_index(samples: Sequence[Any], patch_size: int, sampler: SamplerConfig) -> tuple[PatchIndex, dict[str, Any]]:
    """Patch index over the samples that have ground truth; the summary says what was used and skipped."""
    from stereodeploy.data.preprocess import to_gray

    index = PatchIndex(patch_size, sampler)
    used, skipped = [], []
    for s in samples:
        if s.disp is None:
            skipped.append(s.name)
            continue
        index.add(to_gray(s.left), to_gray(s.right), s.disp, s.name)
        used.append(s.name)
    if skipped:
        log.warning("skipped %d of %d frames without ground truth disparity: %s", len(skipped), len(samples),
                    ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else ""))
    if not used:
        raise UserError("none of the training frames has ground truth disparity: give a dataset with disp_noc/disp_occ "
                        "(KITTI) or disp0GT.pfm (Middlebury)")
    if len(index) == 0:
        raise UserError("the training frames hold no usable example (no ground truth pixel whose patches fit)")
    return index, {"frames": used, "skipped_without_gt": skipped, "examples": len(index)}


def load_samples(paths: Sequence[Path], fmt: str | None = None, exclude: Sequence[str] = ()) -> list[Any]:
    from stereodeploy.data.datasets import load_dataset

    samples = []
    for p in paths:
        samples.extend(s for s in load_dataset(Path(p), fmt) if s.name not in set(exclude))
    return samples


def not_resumable(framework: str, out: Path | str) -> str:
    """The message for ``--resume`` on a folder that holds no run, with the command that starts one there."""
    return (f"{out} is not a run directory to resume (no config.json): start a new run there with "
            f"`stereodeploy train {framework} --data DATA --out {out}` (without --resume)")


def train_run(framework: str, samples: Sequence[Any], out: Path, network: NetworkConfig = NetworkConfig(),
              sampler: SamplerConfig = SamplerConfig(), cfg: TrainConfig = TrainConfig(),
              validation: Sequence[Any] = (), max_disp: int = 64, weights: Weights | None = None,
              data_sources: Sequence[str] = (), progress: bool = True, resume: bool = False,
              overwrite: bool = False, data_options: dict[str, Any] | None = None,
              device: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """Train ``framework`` on ``samples`` into run directory ``out``; returns the summary.

    ``weights`` default to the seeded framework-neutral initialisation, so both frameworks start equal.
    On ``resume`` the configuration is read back from ``out/config.json`` (only ``device``, when given, replaces
    the saved one), and the data must rebuild the very same examples. ``data_options`` (e.g. the excluded frames
    and the layout) are recorded with the data summary so that a resume can rebuild the same set. ``threads``:
    CPU threads per operation (None: a default that does not oversubscribe the cores, see
    :mod:`stereodeploy.util.threads`); the settings are recorded in the summary.

    Launched by torchrun (PyTorch) or with TF_CONFIG (TensorFlow), every process calls this with the same
    arguments; each trains on its slice of every batch and process 0 alone writes the run directory.
    """
    from stereodeploy.train.distributed import process_for
    from stereodeploy.train.loop import train
    from stereodeploy.util.threads import configure_threads

    out = Path(out)
    proc = process_for(framework)
    if proc.rank != 0:
        log.setLevel(logging.ERROR)  # logs come from process 0
    if resume:
        saved = read_run_config(out, required=False)
        if not saved:
            raise UserError(not_resumable(framework, out))
        if saved.get("framework") != framework:
            raise UserError(f"{out} is a {saved.get('framework')} run, not {framework}: resume it with "
                            f"`{resume_command(saved.get('framework'), out)}`")
        network = from_dict(NetworkConfig, saved["network"])
        sampler = from_dict(SamplerConfig, saved["sampler"])
        cfg = from_dict(TrainConfig, saved["train"])
        if device is not None:
            cfg = replace(cfg, device=device)
    elif out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: give a folder for the run with --out")
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out} exists and is not empty: choose another --out, pass --overwrite, or continue "
                             f"it with `{resume_command(framework, out)}`")
        if proc.rank == 0:
            clear_run(out)  # a new run must not leave the old one's checkpoint to be resumed or exported
    try:
        thread_settings = configure_threads(threads, frameworks=[framework])
    except ImportError:  # make_stepper says what to install
        thread_settings = configure_threads(threads)
    index, summary = build_index(samples, network.patch_size, sampler)
    summary["sources"] = list(data_sources)
    summary.update(data_options or {})
    if resume:
        old = saved.get("data", {})
        if old.get("frames") != summary["frames"] or saved.get("examples") != len(index):
            raise UserError(f"the data given to resume {out} is not the data it was trained on "
                            f"({len(summary['frames'])} frames / {len(index)} examples now, "
                            f"{len(old.get('frames', []))} / {saved.get('examples')} then): give the same --data, "
                            "--exclude and --format")
    stepper = make_stepper(framework, network, cfg, weights if weights is not None else init_weights(network, cfg.seed))
    from stereodeploy.util.threads import thread_report

    return train(stepper, index, network, cfg, out, data_summary=summary, validation=validation,
                 max_disp=max_disp, resume=resume, progress=progress,
                 run_info={"threads": {**thread_settings, **thread_report()}})


def train_from_paths(framework: str, data: Sequence[Path], out: Path, fmt: str | None = None,
                     exclude: Sequence[str] = (), val: Sequence[Path] = (), *, network: NetworkConfig = NetworkConfig(),
                     sampler: SamplerConfig = SamplerConfig(), cfg: TrainConfig = TrainConfig(), max_disp: int = 64,
                     resume: bool = False, overwrite: bool = False, progress: bool = True,
                     device: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """`stereodeploy train`: load the datasets at ``data`` and train into ``out``.

    Data paths are recorded resolved, so a resume works from any working directory. On ``resume`` the data,
    exclusions and layout default to the recorded ones; give ``data`` again for a dataset that moved (it must
    hold the same frames).
    """
    from stereodeploy.data.datasets import list_frames

    frameworks.get(framework).require("train")  # before any data is read
    out = Path(out)
    if resume:
        config = read_run_config(out, required=False)
        if not config:
            raise UserError(not_resumable(framework, out))
        saved = config.get("data", {})
        data = list(data) or [Path(p) for p in saved.get("sources", [])]
        exclude = list(exclude) or list(saved.get("exclude", []))
        fmt = fmt or saved.get("format")
        if not data:
            raise UsageError(f"cannot resume {out}: no config.json with the data sources there; give --data again")
        missing = [str(p) for p in data if not Path(p).exists()]
        if missing:
            raise UserError(f"the data of {out} is no longer at {', '.join(missing)}: if it moved, give its new "
                            f"place with `{resume_command(framework, out)} --data NEW_PATH`")
    elif not data:
        raise UsageError("give at least one --data folder (KITTI 2012/2015 or Middlebury layout)")
    if cfg.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if cfg.max_examples is not None and cfg.max_examples < 1:
        raise UsageError("--max-examples must be at least 1")
    data = [Path(p).resolve() for p in data]
    samples = load_samples(data, fmt, exclude)
    unknown = sorted(set(exclude) - {f.name for p in data for f in list_frames(p, fmt)})
    if unknown:
        raise UsageError(f"--exclude names no frame of the data: {', '.join(unknown)} (names are scene folders or "
                         "KITTI frame names such as 000005_10)")
    validation = [s for p in val for s in load_samples([p], None) if s.disp is not None]
    return train_run(framework, samples, out, network=network, sampler=sampler, cfg=cfg, validation=validation,
                     max_disp=max_disp, data_sources=[str(p) for p in data], progress=progress, resume=resume,
                     overwrite=overwrite, device=device, threads=threads,
                     data_options={"exclude": list(exclude), "format": fmt})
