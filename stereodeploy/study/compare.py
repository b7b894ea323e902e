"""The published experiment in one call, extended to ONNX: does the framework or the runtime change training time,
execution time or accuracy?

:func:`compare` trains PyTorch and TensorFlow on the same samples from the same initial weights with the same
batches and schedule, exports both to ONNX, evaluates native PyTorch, native TensorFlow, ONNX(PyTorch) and
ONNX(TensorFlow) with and without post-processing, and writes::

    OUT/runs/torch, OUT/runs/tf        run directories (config, metrics.jsonl, summary.json, checkpoint)
    OUT/models/mccnn_fast_<fw>.onnx    the exported models
    OUT/report.json, OUT/report.md     Table I, Table II, execution times, machine, versions, configuration
    OUT/accuracy.png                   patch accuracy per epoch of both frameworks
    OUT/disparity.png, OUT/error.png   the first evaluation image per runtime, next to its ground truth

Framework code is reached only through :func:`stereodeploy.train.api.train_run`, :func:`stereodeploy.deploy.export.export`
and the engine's backends, so this module imports neither torch nor TensorFlow itself.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from stereodeploy import __version__
from stereodeploy.config import DataSpec, NetworkConfig, RunSpec, SamplerConfig, TrainConfig
from stereodeploy.errors import UsageError, UserError
from stereodeploy.frameworks import FRAMEWORKS, labels
from stereodeploy.study.evaluate import THRESHOLD, EvalResult, evaluate, ground_truth_kind

# (label, framework that trained the weights, backend, model source: the run directory or the exported file):
# each framework natively, then each framework's export on onnxruntime
RUNTIMES = tuple((fw.label, fw.key, fw.key, "run") for fw in FRAMEWORKS.values()) + tuple(
    (f"ONNX ({fw.label})", fw.key, "onnx", "onnx") for fw in FRAMEWORKS.values())
POSTPROCESS = ("none", "full")
# environment variables that set how many threads the frameworks and kernels use (reported with the machine)
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", *(v for fw in FRAMEWORKS.values() for v in fw.thread_env),
               "NUMBA_NUM_THREADS")
log = logging.getLogger("stereodeploy")
_DISTRIBUTIONS = {
    "numpy": ("numpy",), **{k: v for fw in FRAMEWORKS.values() for k, v in fw.distributions.items()},
    "onnx": ("onnx",), "onnxruntime": ("onnxruntime", "onnxruntime-gpu"), "numba": ("numba",),
}


def check_requirements() -> None:
    """Raise a one-line :class:`UserError` naming the extra to install when a framework cannot train or export."""
    for fw in FRAMEWORKS.values():
        for use in ("train", "export"):
            fw.require(use, purpose=f"compare (it trains and exports {fw.label})")


# --------------------------------------------------------------------------------------------------------------
# Machine and versions


def _cpu_name() -> str:
    name = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return name


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Platform, processor and CPU counts (and the GPU's name when ``device`` is cuda)."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "machine": platform.machine(), "processor": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]  # other work on the machine skews timings
    info["thread_settings"] = {k: os.environ[k] for k in _THREAD_ENV if k in os.environ}
    info["device"] = device
    if device == "cuda":  # the description of the first framework's GPU: "cuda (name)"
        info["gpu"] = next(iter(FRAMEWORKS.values())).resolve_device("cuda")[1]
    return info


def versions() -> dict[str, str | None]:
    """Python and package versions (installed distributions; ``None`` for one that is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version(), "stereodeploy": __version__}
    for name, dists in _DISTRIBUTIONS.items():
        out[name] = None
        for dist in dists:
            try:
                out[name] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


# --------------------------------------------------------------------------------------------------------------
# The experiment


class PhaseLoad:
    """The 1-minute load average at the end of each timed phase. The load counts this process's own threads, so a
    load above the usable cores means other work shared them: that phase's times cannot be compared."""

    def __init__(self, cores: int | None = None):
        from stereodeploy.util.threads import usable_cores

        self.cores = cores or usable_cores()
        self.phases: dict[str, float] = {}

    def record(self, phase: str, load: float | None = None) -> None:
        if load is None and hasattr(os, "getloadavg"):
            load = os.getloadavg()[0]
        if load is not None:
            self.phases[phase] = round(load, 2)

    def busy(self) -> dict[str, float]:
        """The phases whose load exceeded the usable cores (by more than half a core)."""
        return {phase: load for phase, load in self.phases.items() if load > self.cores + 0.5}

    def warnings(self, threads: str = "", count: int | None = None) -> list[str]:
        """One warning (or none) for all the busy phases, saying what the threads were (``threads``, their
        ``count``: above 1, the warning suggests --threads 1)."""
        busy = self.busy()
        if not busy:
            return []
        worst = max(busy, key=busy.__getitem__)
        advice = ("rerun on a quiet machine, or with --threads 1 (a framework's threads wait for one another on "
                  "shared cores)" if count is None or count > 1 else "rerun on a quiet machine")
        return [f"the load average was above the {self.cores} usable cores in {len(busy)} of {len(self.phases)} "
                f"timed phases (up to {busy[worst]:.1f}, at the end of {worst}): other work shared the cores, so "
                "the whole-run times are not comparable" + (f" ({threads})" if threads else "") + "; the "
                "interleaved step times beside Table I saw the same load for both frameworks; for whole-run times "
                + advice]


STEP_ROUNDS = 10  # interleaved rounds of one step per framework (after STEP_WARMUP untimed ones)
STEP_WARMUP = 2
QUICK_EXAMPLES = 12800  # --max-examples of the quick run the estimate suggests (100 batches of 128)


def threads_text(threads: int, report: dict[str, Any]) -> str:
    """What the frameworks' thread pools were, e.g. "--threads 2: PyTorch 2 intra-op / 1 inter-op, ..."."""
    parts = [f"{fw.label} {report[key]['intra_op']} intra-op / {report[key]['inter_op']} inter-op"
             for key, fw in FRAMEWORKS.items() if isinstance(report.get(key), dict)]
    return f"threads {threads} for every framework" + (f": {', '.join(parts)}" if parts else "")


def step_benchmark(train: Sequence[Any], network: NetworkConfig, sampler: SamplerConfig, cfg: TrainConfig,
                   weights: Any, rounds: int = STEP_ROUNDS, warmup: int = STEP_WARMUP) -> dict[str, Any]:
    """Training step time of every framework, measured fairly on a shared machine: in each round every
    framework takes one step on the same batch, the order alternating between rounds, so all see the same load
    within seconds. Fresh steppers from ``weights`` (the training runs are not touched). Returns the median and
    every time per framework, the rounds, the load average before and after, and the batches per epoch."""
    import statistics
    import time

    from stereodeploy.train.api import build_index, make_stepper
    from stereodeploy.util.threads import thread_report

    index, _ = build_index(train, network.patch_size, sampler)
    steppers = {fw: make_stepper(fw, network, cfg, [(k.copy(), b.copy()) for k, b in weights]) for fw in FRAMEWORKS}
    times: dict[str, list[float]] = {fw: [] for fw in FRAMEWORKS}
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    order = list(FRAMEWORKS)
    for r, batch in zip(range(warmup + rounds), index.batches(0, cfg.batch_size, cfg.max_examples)):
        for fw in (order if r % 2 == 0 else order[::-1]):  # neither framework always goes first
            t0 = time.perf_counter()
            steppers[fw].step(batch, cfg.lr)
            if r >= warmup:
                times[fw].append(time.perf_counter() - t0)
    return {"rounds": len(times[order[0]]), "warmup": warmup,
            "median_step_seconds": {fw: statistics.median(t) if t else None for fw, t in times.items()},
            "step_seconds": times, "batches_per_epoch": index.num_batches(cfg.batch_size, cfg.max_examples),
            "load_average": [round(x, 2) if x is not None else None for x in
                             (load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None)],
            "threads": thread_report()}


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def estimate_text(bench: dict[str, Any], epochs: int, batch_size: int, frames: int) -> str:
    """The whole run's training time from the interleaved step times, and how to make it small."""
    steps = epochs * bench["batches_per_epoch"]
    med = {fw: t for fw, t in bench["median_step_seconds"].items() if t is not None}
    per = ", ".join(f"{FRAMEWORKS[fw].label} {_clock(steps * t)} ({1000 * t:.0f} ms per step)"
                    for fw, t in med.items())
    quick_steps = min(bench["batches_per_epoch"], -(-QUICK_EXAMPLES // batch_size))
    total = steps * sum(med.values())
    quick = quick_steps * sum(med.values())
    text = (f"compare will train for about {_clock(total)} ({epochs} epoch{'s'[:epochs != 1]} x "
            f"{bench['batches_per_epoch']} steps per framework: {per}), then export both and evaluate "
            f"{len(RUNTIMES) * len(POSTPROCESS)} runtime settings on {frames} frame{'s'[:frames != 1]}")
    if quick < total:
        text += f"; for a quick run give --epochs 1 --max-examples {QUICK_EXAMPLES} (about {_clock(quick)} of training)"
    return text


COMPARE_FILE = "compare.json"  # the settings of a comparison, in its --out folder: what --resume reads back


def resume_command(out: Path | str) -> str:
    """The command that continues the comparison in ``out`` (every message that suggests it uses this)."""
    return f"stereodeploy compare --resume --out {out}"


def resume_compare(out: Path | str, progress: bool = True) -> dict[str, Any]:
    """Continue the comparison in ``out`` with the settings it started with (``out/compare.json``)."""
    out = Path(out)
    try:
        saved = json.loads((out / COMPARE_FILE).read_text())
    except FileNotFoundError:
        raise UserError(f"{out} holds no comparison to resume (no {COMPARE_FILE}): start one with "
                        "`stereodeploy compare --train-data PATH --eval-data PATH --out OUT`") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{out / COMPARE_FILE} is unreadable ({exc}): start the comparison again") from None
    network = NetworkConfig(**saved.pop("network"))
    return compare(saved.pop("train_data"), saved.pop("eval_data"), out, network=network, progress=progress,
                   resume=True, **saved)


def _eval_max_disp(option: int | None, samples: Sequence[Any]) -> int:
    """One max disparity for validation and the exported metadata: the option, else the largest hint, else 128."""
    if option is not None:
        return option
    hints = [s.max_disp for s in samples if s.max_disp]
    return max(hints) if hints else 128


def _check_out(out: Path, overwrite: bool) -> None:
    from stereodeploy.data.io import ensure_writable

    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: give a folder for the report")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} exists and is not empty: choose another --out or pass --overwrite")
    ensure_writable(out / "report.json", overwrite)


def _load(train_data: Sequence[Path], eval_data: Path, hold_out: Sequence[str], train_format: str | None,
          eval_format: str | None) -> tuple[list[Any], list[Any], str]:
    from stereodeploy.data.datasets import detect_format, load_dataset
    from stereodeploy.train.api import load_samples

    train = load_samples(list(train_data), train_format, exclude=hold_out)
    if not train:
        raise UserError("no training frame is left after --hold-out: hold out fewer frames or add --train-data")
    fmt = eval_format or detect_format(eval_data)
    evaluation = load_dataset(eval_data, fmt)
    if hold_out:
        names = {s.name for s in evaluation}
        missing = [n for n in hold_out if n not in names]
        if missing:
            raise UserError(f"held-out frame(s) {', '.join(missing)} are not in {eval_data}: check the names "
                            f"(found {', '.join(sorted(names)[:8])}{', ...' if len(names) > 8 else ''})")
        evaluation = [s for s in evaluation if s.name in set(hold_out)]
    if not any(s.disp is not None for s in evaluation):
        raise UserError(f"no evaluation frame in {eval_data} has ground truth: evaluate on frames with disparity maps")
    return train, evaluation, fmt


def compare(train_data: Sequence[Path] | Path, eval_data: Path, out: Path, epochs: int = 14,
            max_examples: int | None = None, device: str = "cpu", *, network: NetworkConfig = NetworkConfig(),
            batch_size: int = 128, lr: float = 0.002, momentum: float = 0.9, lr_drops: Sequence[int] = (12,),
            seed: int = 0, hold_out: Sequence[str] = (), train_format: str | None = None,
            eval_format: str | None = None, max_disp: int | None = None, validate: bool = True,
            progress: bool = True, overwrite: bool = False, threads: int | None = None,
            resume: bool = False) -> dict[str, Any]:
    """Run the whole comparison into folder ``out`` and return the report (also written as report.json / .md).

    ``resume`` continues a comparison that stopped (Ctrl-C, a kill) in ``out``: a framework whose training
    finished is kept, one that stopped continues from its checkpoint (:func:`resume_compare` reads the settings
    back from ``out/compare.json``). Both frameworks and the evaluation use one thread count (``threads``, else
    the default for this machine chosen once), and their step times are also measured interleaved
    (:func:`step_benchmark`), which stays comparable when other work shares the cores.

    ``hold_out`` names frames (Middlebury scenes, KITTI frame ids) left out of training; when given, only they are
    evaluated. ``validate`` logs the evaluation set's winner-take-all error after every epoch (untimed). The
    defaults are the study's: 14 epochs, learning rate 0.002 dropped tenfold at epoch 12, batches of 128 pairs.
    """
    from stereodeploy.deploy.export import export
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.nets.weights import init_weights
    from stereodeploy.train.api import train_run
    from stereodeploy.train.checkpoint import read_metrics, read_run_config

    out = Path(out)
    train_paths = [Path(train_data)] if isinstance(train_data, (str, Path)) else [Path(p) for p in train_data]
    eval_data = Path(eval_data)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, lr_drops=tuple(lr_drops),
                      max_examples=max_examples, seed=seed, device=device)  # validates the options
    check_requirements()
    from stereodeploy.train.distributed import process_for

    if any(process_for(fw).distributed for fw in FRAMEWORKS):  # like with like: one process for every framework
        raise UsageError("compare trains every framework in one process: run it without a distributed launcher "
                         f"({'; '.join(fw.distributed_hint for fw in FRAMEWORKS.values())})")
    if device == "cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise UserError("--device cuda evaluates ONNX on the GPU too, but this onnxruntime has no CUDA provider: "
                            "pip install onnxruntime-gpu, or use --device cpu")
    if resume:
        if not (out / COMPARE_FILE).is_file():
            raise UserError(f"{out} holds no comparison to resume (no {COMPARE_FILE}): start one with "
                            "`stereodeploy compare --train-data PATH --eval-data PATH --out OUT`")
    else:
        _check_out(out, overwrite)
    from stereodeploy.util.threads import configure_threads, default_threads

    # the data first: a wrong path or held-out name is refused before any framework loads
    train, evaluation, eval_fmt = _load(train_paths, eval_data, hold_out, train_format, eval_format)
    threads = threads or default_threads()  # chosen once: the same count for both frameworks and the evaluation
    configure_threads(threads, frameworks=list(FRAMEWORKS))
    machine = machine_info(device)  # the load average before the work starts
    scored = [s for s in evaluation if s.disp is not None]
    unscored = [s.name for s in evaluation if s.disp is None]
    val_disp = _eval_max_disp(max_disp, scored)
    model_disp = max_disp if max_disp is not None else max(val_disp, 128)  # the exported default, for other data
    sampler = SamplerConfig(seed=seed)
    weights = init_weights(network, seed)
    if not resume:
        from stereodeploy.data.io import write_json

        write_json(out / COMPARE_FILE, {
            "train_data": [str(p.resolve()) for p in train_paths], "eval_data": str(eval_data.resolve()),
            "epochs": epochs, "max_examples": max_examples, "device": device, "network": asdict(network),
            "batch_size": batch_size, "lr": lr, "momentum": momentum, "lr_drops": list(lr_drops), "seed": seed,
            "hold_out": list(hold_out), "train_format": train_format, "eval_format": eval_format,
            "max_disp": max_disp, "validate": validate, "threads": threads}, overwrite=True)

    # ---- the frameworks' step times, interleaved (fair under load), and from them the whole run's estimate
    load = PhaseLoad()
    bench = step_benchmark(train, network, sampler, cfg, weights)
    load.record("interleaved steps")
    log.info(estimate_text(bench, epochs, batch_size, len(scored)))

    # ---- training: same samples, sampler seed, initial weights, schedule and threads for both frameworks
    from stereodeploy.train.loop import TrainingInterrupted

    summaries: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    for fw in FRAMEWORKS:
        run_dir = out / "runs" / fw
        if resume and (run_dir / "summary.json").is_file():  # finished before the stop: kept as it is
            summaries[fw] = json.loads((run_dir / "summary.json").read_text())
        else:
            again = resume and (run_dir / "checkpoint.npz").is_file()  # else (killed before one) from the start
            spec = RunSpec(framework=fw, data=DataSpec(sources=tuple(map(str, train_paths)), exclude=tuple(hold_out),
                                                       format=train_format),
                           network=network, sampler=sampler, train=cfg, max_disp=val_disp, threads=threads)
            try:
                summaries[fw] = train_run(spec, run_dir, samples=train, validation=scored if validate else (),
                                          weights=[(k.copy(), b.copy()) for k, b in weights], progress=progress,
                                          overwrite=overwrite or resume, resume=again).to_dict()
            except TrainingInterrupted as exc:  # the train command it names would resume only this framework
                stopped = str(exc).split("; continue with")[0]
                raise TrainingInterrupted(f"{stopped} ({FRAMEWORKS[fw].label} training); continue the comparison "
                                          f"with `{resume_command(out)}`", exit_code=exc.exit_code) from None
            load.record(f"{FRAMEWORKS[fw].label} training")
        histories[fw] = read_metrics(run_dir)
    train_summary = read_run_config(out / "runs" / next(iter(FRAMEWORKS)), required=False).get("data", {})

    # ---- export both to ONNX (each checked against its native network)
    exported = {}
    for fw in FRAMEWORKS:
        rep = export(out / "runs" / fw, out / "models" / FRAMEWORKS[fw].model_file, max_disp=model_disp, overwrite=overwrite)
        exported[fw] = {"path": f"models/{FRAMEWORKS[fw].model_file}", "max_abs_diff": rep.max_abs_diff}

    # ---- evaluate every runtime, with and without post-processing
    first = scored[0]
    captured: dict[tuple[str, str], np.ndarray] = {}
    evaluations: list[dict[str, Any]] = []
    results: dict[tuple[str, str], EvalResult] = {}
    for label, fw, backend, source in RUNTIMES:
        path = out / "runs" / fw if source == "run" else out / "models" / FRAMEWORKS[fw].model_file
        for pp in POSTPROCESS:
            matcher = StereoMatcher.from_file(path, max_disp=val_disp, postprocess=pp, backend=backend,
                                              provider=device, sgm_preset=eval_fmt, threads=threads)

            def keep(sample: Any, res: Any, key: tuple[str, str] = (label, pp)) -> None:
                if sample.name == first.name:
                    captured[key] = res.disparity

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # frames without ground truth: listed once in the report
                res = evaluate(evaluation, matcher, model=str(path.relative_to(out)), max_disp=max_disp,
                               progress=progress, on_frame=keep)
            results[(label, pp)] = res
            evaluations.append({"runtime": label, "framework": fw, **res.to_dict()})
            load.record(f"{label} {pp} evaluation")
    threads_note = threads_text(threads, bench["threads"])
    for warning in load.warnings(threads_note, threads):  # at most one
        warnings.warn(warning, stacklevel=2)

    report = _build_report(
        out=out, machine=machine, summaries=summaries, histories=histories, exported=exported, results=results,
        evaluations=evaluations, captured=captured, first=first, load=load,
        config={
            "network": asdict(network), "sampler": asdict(sampler), "train": asdict(cfg), "device": device,
            "max_disp": max_disp if max_disp is not None else "per frame (calib ndisp, else the model's)",
            "validation_max_disp": val_disp, "model_max_disp": model_disp, "sgm_preset": eval_fmt,
            "postprocess": list(POSTPROCESS),
            "threshold": THRESHOLD, "train_data": [str(p) for p in train_paths], "eval_data": str(eval_data),
            "eval_format": eval_fmt, "hold_out": list(hold_out), "validate": validate,
            "world_size": {fw: summaries[fw].get("world_size", 1) for fw in FRAMEWORKS},
            "threads": {"chosen": threads, "text": threads_note,
                        **{fw: summaries[fw].get("threads") for fw in FRAMEWORKS}},
        },
        bench=bench,
        data={"train_frames": train_summary.get("frames", [s.name for s in train]),
              "train_examples": train_summary.get("examples"), "eval_frames": [s.name for s in scored],
              "eval_skipped_without_ground_truth": unscored,
              "overlap": sorted({s.name for s in scored} & {s.name for s in train})},
    )
    return report


def _differs(a: np.ndarray, b: np.ndarray) -> float:
    """Percentage of pixels where two disparity maps disagree by more than half a pixel (or in validity)."""
    fa, fb = np.isfinite(a), np.isfinite(b)
    with np.errstate(invalid="ignore"):
        diff = (fa != fb) | (fa & fb & (np.abs(a - b) > 0.5))
    return 100.0 * float(diff.mean())


def _build_report(*, out: Path, machine: dict[str, Any], summaries: dict[str, dict[str, Any]], histories: dict[str, list[dict[str, Any]]],
                  exported: dict[str, Any], results: dict[tuple[str, str], EvalResult],
                  evaluations: list[dict[str, Any]], captured: dict[tuple[str, str], np.ndarray], first: Any,
                  load: PhaseLoad, config: dict[str, Any],
                  data: dict[str, Any], bench: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tables, figures and files from the measurements; returns the report dictionary."""
    from stereodeploy.data.io import write_json, write_text
    from stereodeploy.study.report import markdown, plot_accuracy, plot_disparities, plot_errors, training_table

    kind = "noc" if first.disp_noc is not None else "occ"
    table2_rows, time_rows = [], []
    native_of = {fw: label for label, fw, backend, _ in RUNTIMES if backend == fw}
    for label, fw, backend, _ in RUNTIMES:
        for pp in POSTPROCESS:
            res = results[(label, pp)]
            avg, sec = res.averages(), res.mean_stage_seconds()
            single = next(i for i in res.images if i.name == first.name)
            native = captured.get((native_of[fw], pp))
            mine = captured.get((label, pp))
            table2_rows.append({
                "runtime": label, "framework": fw, "backend": backend, "postprocess": pp,
                "single_image_error": single.error_rate, "average_error_rate": res.average_error_rate,
                "kitti_average": avg.get(f"kitti_{kind}"), "d1_average": avg.get(f"d1_{kind}"),
                "density": avg.get("density"),
                "single_image_differs_from_native_percent": (
                    _differs(mine, native) if backend == "onnx" and mine is not None and native is not None else None),
            })
            time_rows.append({"runtime": label, "postprocess": pp,
                              "mean_seconds": res.mean_seconds, "features_seconds": sec.get("features"),
                              "matching_seconds": sec.get("matching"), "stage_seconds": sec})

    figures = {"accuracy": "accuracy.png", "disparity": "disparity.png", "error": "error.png"}
    plot_accuracy(histories, out / figures["accuracy"], overwrite=True)
    frame_disp = next(i.max_disp for i in results[next(iter(results))].images if i.name == first.name)
    rates = {key: next(i.error_rate for i in r.images if i.name == first.name) for key, r in results.items()}
    plot_disparities(first.disp, captured, frame_disp, out / figures["disparity"],
                     title=f"{first.name}: disparity per runtime", overwrite=True)
    plot_errors(first.disp, captured, out / figures["error"], THRESHOLD, rates,
                title=f"{first.name}: error ≥{THRESHOLD:g} px (orange, red), missing ground truth black",
                overwrite=True)

    report = {
        "title": f"MC-CNN fast: {labels(' vs ')}, native and ONNX",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "stereodeploy": __version__,
        "machine": {**machine, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]
                    if hasattr(os, "getloadavg") else None, "load_after_phase": load.phases},
        "warnings": load.warnings(config.get("threads", {}).get("text", ""), config.get("threads", {}).get("chosen")),
        "versions": versions(),
        "configuration": config,
        "data": data,
        "training": summaries,
        "epochs": histories,
        "table1": training_table(summaries),
        "interleaved_steps": bench,
        "export": exported,
        "table2": {"single_image": first.name, "images": len(data["eval_frames"]),
                   "ground_truth": ground_truth_kind(first), "kitti_kind": kind, "rows": table2_rows},
        "execution_time": {"images": len(data["eval_frames"]), "rows": time_rows},
        "evaluations": evaluations,
        "figures": figures,
    }
    write_json(out / "report.json", report, overwrite=True)
    write_text(out / "report.md", markdown(report), overwrite=True)
    return report
