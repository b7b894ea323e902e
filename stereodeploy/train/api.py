"""One entry point for training with either framework: data -> patch index -> stepper -> shared loop."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from stereodeploy import frameworks
from stereodeploy.config import NetworkConfig, RunSpec, SamplerConfig, TrainConfig
from stereodeploy.data.patches import PatchIndex
from stereodeploy.errors import UsageError, UserError
from stereodeploy.nets.weights import Weights, init_weights
from stereodeploy.train.checkpoint import TrainingSummary, clear_run, read_run_config, resume_command

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


def load_samples(paths: Sequence[Path | str], fmt: str | None = None, exclude: Sequence[str] = ()) -> list[Any]:
    from stereodeploy.data.datasets import load_dataset

    samples = []
    for p in paths:
        samples.extend(s for s in load_dataset(Path(p), fmt) if s.name not in set(exclude))
    return samples


def not_resumable(framework: str, out: Path | str) -> str:
    """The message for ``--resume`` on a folder that holds no run, with the command that starts one there."""
    return (f"{out} is not a run directory to resume (no config.json): start a new run there with "
            f"`stereodeploy train {framework} --data DATA --out {out}` (without --resume)")


def train_run(spec: RunSpec, out: Path, *, samples: Sequence[Any] | None = None,
              validation: Sequence[Any] | None = None, weights: Weights | None = None, resume: bool = False,
              options: Iterable[str] | None = None, overwrite: bool = False, progress: bool = True) -> TrainingSummary:
    """Train as ``spec`` says into run directory ``out``; returns the summary.

    The data is read from ``spec.data`` and ``spec.validation`` unless ``samples`` / ``validation`` (StereoSamples)
    are given, in which case ``spec.data`` only records where they came from. ``weights`` default to the seeded
    framework-neutral initialisation, so every framework starts equal.

    ``resume`` continues the run in ``out`` with the spec recorded there, changed by the ``options`` the caller
    set (:data:`~stereodeploy.config.RUN_OPTIONS` names, e.g. ``{"--epochs"}``; None: every option, read from
    ``spec``): what may change is honoured and logged (``--epochs 20`` extends the run to 20 epochs), what may
    not is a usage error naming the option. The data must rebuild the very same examples.

    Launched by a framework's distributed launcher (its record's ``process``), every process calls this with the
    same arguments; each trains on its slice of every batch and process 0 alone writes the run directory.
    """
    from stereodeploy.train.distributed import process_for
    from stereodeploy.train.loop import train
    from stereodeploy.util.threads import configure_threads, thread_report

    out = Path(out)
    fw = frameworks.get(spec.framework)
    fw.require("train")  # before any data is read
    proc = process_for(spec.framework)
    if proc.rank != 0:
        log.setLevel(logging.ERROR)  # logs come from process 0
    saved: dict[str, Any] = {}
    if resume:
        spec, saved = _resumed_spec(spec, out, options)
    elif out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: give a folder for the run with --out")
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"{out} exists and is not empty: choose another --out, pass --overwrite, or continue "
                             f"it with `{resume_command(spec.framework, out)}`")
        if proc.rank == 0:
            clear_run(out)  # a new run must not leave the old one's checkpoint to be resumed or exported
    if samples is None:
        spec, samples = _read_data(spec, out, resume)
    if validation is None:
        spec = replace(spec, validation=tuple(str(Path(p).resolve()) for p in spec.validation))
        validation = [s for p in spec.validation for s in load_samples([p]) if s.disp is not None]
    try:
        thread_settings = configure_threads(spec.threads, frameworks=[spec.framework])
    except ImportError:  # make_stepper says what to install
        thread_settings = configure_threads(spec.threads)
    index, summary = build_index(samples, spec.network.patch_size, spec.sampler)
    if resume:
        old = saved.get("data", {})
        if old.get("frames") != summary["frames"] or saved.get("examples") != len(index):
            raise UserError(f"the data given to resume {out} is not the data it was trained on "
                            f"({len(summary['frames'])} frames / {len(index)} examples now, "
                            f"{len(old.get('frames', []))} / {saved.get('examples')} then): give the same --data, "
                            "--exclude and --format")
    start = weights if weights is not None else init_weights(spec.network, spec.train.seed)
    stepper = make_stepper(spec.framework, spec.network, spec.train, start)
    return train(stepper, index, spec, out, data_summary=summary, validation=validation, resume=resume,
                 progress=progress, run_info={"threads": {**thread_settings, **thread_report()}})


def _resumed_spec(given: RunSpec, out: Path, options: Iterable[str] | None) -> tuple[RunSpec, dict[str, Any]]:
    """The spec recorded in ``out``, with the given options applied (see :func:`train_run`), and the record."""
    saved = read_run_config(out, required=False)
    if not saved:
        raise UserError(not_resumable(given.framework, out))
    if saved.get("framework") != given.framework:
        raise UserError(f"{out} is a {saved.get('framework')} run, not {given.framework}: resume it with "
                        f"`{resume_command(saved.get('framework'), out)}`")
    recorded = RunSpec.from_dict(saved)
    if options is None or "--data" in options:  # a moved dataset: recorded resolved, like a new run's
        given = replace(given, data=replace(given.data, sources=tuple(str(Path(p).resolve())
                                                                      for p in given.data.sources)))
    spec, changes = recorded.resumed(given, options)
    for change in changes:
        log.info("resuming %s with %s", out, change)
    return spec, saved


def _read_data(spec: RunSpec, out: Path, resume: bool) -> tuple[RunSpec, list[Any]]:
    """Load the training frames of ``spec.data`` (sources recorded resolved, so that a resume works from any
    working directory); the spec with resolved sources, and the frames."""
    from stereodeploy.data.datasets import list_frames

    data = spec.data
    if not data.sources:
        if resume:
            raise UsageError(f"cannot resume {out}: its config.json names no data sources; give --data again")
        raise UsageError("give at least one --data folder (KITTI 2012/2015 or Middlebury layout)")
    missing = [p for p in data.sources if not Path(p).exists()]
    if missing and resume:
        raise UserError(f"the data of {out} is no longer at {', '.join(missing)}: if it moved, give its new "
                        f"place with `{resume_command(spec.framework, out)} --data NEW_PATH`")
    sources = [Path(p).resolve() for p in data.sources]
    spec = replace(spec, data=replace(data, sources=tuple(map(str, sources))))
    samples = load_samples(sources, data.format, data.exclude)
    unknown = sorted(set(data.exclude) - {f.name for p in sources for f in list_frames(p, data.format)})
    if unknown:
        raise UsageError(f"--exclude names no frame of the data: {', '.join(unknown)} (names are scene folders or "
                         "KITTI frame names such as 000005_10)")
    return spec, samples
