"""Accuracy and speed of a matcher on a dataset: pure metric functions written from the formulas, and the loop.

Error rules (``d`` the prediction, ``g`` the ground truth, counted over the pixels where ``g`` is known):

- ``study``: the published comparison's equations 1 and 2, ``E = 1`` where ``|d - g| >= 3``; the error rate is
  ``100 * sum(E) / #known`` percent;
- ``kitti``: the KITTI benchmark's bad-pixel rule ``|d - g| > 3`` (KITTI 2012 "Out");
- ``d1``: KITTI 2015's D1 rule, ``|d - g| > 3`` **and** ``|d - g| > 0.05 * |g|``.

Evaluation is dense: a prediction that is NaN or infinite where ground truth is known counts as an error under
every rule (the benchmarks' devkits interpolate such holes instead; we do not, so a sparse matcher cannot look
better by answering less). :func:`density` reports how much of the image was answered. The average over a dataset
is the mean of the per-image rates (the study's equation 3), not the rate over all pixels pooled.

As KITTI reports a method that leaves holes, every rate is also given on the *valid* pixels alone (those the
matcher answered itself, :attr:`stereodeploy.engine.matcher.MatchResult.valid`: not filled after a failed
left-right check), beside the density, the percentage of valid pixels. The full pipeline's valid pixels are its
better ones (KITTI 000005_10: 5.2 % against 7.4 % on all pixels, at 88 % density).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stereodeploy.errors import UsageError, UserError
from stereodeploy.util.progress import progress_bar

if TYPE_CHECKING:
    from stereodeploy.data.datasets import StereoSample
    from stereodeploy.engine.matcher import MatchResult, StereoMatcher

THRESHOLD = 3.0  # pixels
D1_RELATIVE = 0.05  # KITTI 2015: also more than 5% of the true disparity
RULES = ("study", "kitti", "d1")


# --------------------------------------------------------------------------------------------------------------
# Pure metrics


def _shape(a: np.ndarray) -> str:
    return "x".join(map(str, a.shape))


def _prepare(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float arrays and the mask of pixels to score (ground truth finite and ``valid``), after shape checks."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise UserError(f"prediction is {_shape(pred)} but ground truth is {_shape(gt)}: "
                        "compare maps of the same frame")
    known = np.isfinite(gt)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != gt.shape:
            raise UserError(f"valid mask is {_shape(valid)} but ground truth is {_shape(gt)}: "
                            "give a mask of the same size")
        if valid.dtype != np.bool_:
            raise UserError(f"valid mask must be boolean, got {valid.dtype}: pass e.g. `mask > 0`")
        known &= valid
    return pred, gt, known


def _bad_and_known(pred: np.ndarray, gt: np.ndarray, rule: str, threshold: float,
                   valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if rule not in RULES:
        raise UsageError(f"unknown error rule {rule!r}: use one of {', '.join(RULES)}")
    if not threshold > 0:
        raise UsageError(f"error threshold must be positive, got {threshold}")
    pred, gt, known = _prepare(pred, gt, valid)
    with np.errstate(invalid="ignore"):  # inf - inf and comparisons with NaN: handled by the ~good below
        err = np.abs(pred - gt)  # NaN where the prediction is NaN or inf
        if rule == "study":
            good = err < threshold
        elif rule == "kitti":
            good = err <= threshold
        else:
            good = (err <= threshold) | (err <= D1_RELATIVE * np.abs(gt))
    return known & ~good, known


def bad_pixels(pred: np.ndarray, gt: np.ndarray, rule: str = "study", threshold: float = THRESHOLD,
               valid: np.ndarray | None = None) -> np.ndarray:
    """Boolean map, True where ground truth is known (and ``valid``) and ``pred`` is wrong under ``rule``.

    ``rule`` is ``study`` (``|d - g| >= threshold``), ``kitti`` (``> threshold``) or ``d1`` (``> threshold`` and
    ``> 5%`` of ``|g|``). Non-finite predictions are wrong.
    """
    return _bad_and_known(pred, gt, rule, threshold, valid)[0]


def error_rate(pred: np.ndarray, gt: np.ndarray, rule: str = "study", threshold: float = THRESHOLD,
               valid: np.ndarray | None = None) -> float:
    """Percentage of the known (and ``valid``) ground-truth pixels that are wrong under ``rule``.

    NaN when no pixel has ground truth (the rate is undefined, not 0).
    """
    bad, known = _bad_and_known(pred, gt, rule, threshold, valid)
    n = int(known.sum())
    return 100.0 * float(bad.sum()) / n if n else math.nan


def density(pred: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Percentage of pixels (of ``valid`` ones, if given) where the prediction is finite; NaN for no pixel."""
    pred = np.asarray(pred)
    finite = np.isfinite(pred)
    if valid is not None:
        valid = np.asarray(valid)
        if valid.shape != pred.shape:
            raise UserError(f"valid mask is {_shape(valid)} but prediction is {_shape(pred)}: "
                            "give a mask of the same size")
        finite = finite[valid.astype(bool)]
    return 100.0 * float(finite.mean()) if finite.size else math.nan


def average_rate(rates: Iterable[float | None]) -> float:
    """The study's equation 3: the mean of per-image rates (each image weighs the same, whatever its size).

    Images where the rate is undefined (``None`` or NaN: no ground truth for that measure) are left out;
    NaN when none is left.
    """
    values = [float(r) for r in rates if r is not None and not math.isnan(float(r))]
    return float(np.mean(values)) if values else math.nan


def ground_truth_kind(sample: StereoSample) -> str:
    """Which map ``sample.disp`` is: ``noc`` (non-occluded), ``occ`` (all pixels) or ``disp`` (neither given)."""
    if sample.disp_noc is not None and sample.disp is sample.disp_noc:
        return "noc"
    if sample.disp_occ is not None and sample.disp is sample.disp_occ:
        return "occ"
    return "disp"


def image_metrics(pred: np.ndarray, sample: StereoSample, threshold: float = THRESHOLD,
                  valid: np.ndarray | None = None) -> dict[str, float]:
    """Every measure of one prediction against ``sample``'s ground truth, in percent.

    ``error_rate`` is the study's rule on ``sample.disp`` (non-occluded where known, else all); then for each of
    ``noc`` and ``occ`` that the sample has, ``study_<kind>``, ``kitti_<kind>`` and ``d1_<kind>``; and
    ``density``: the percentage of pixels the matcher answered, those of ``valid`` (the matcher's own answers, not
    filled ones) where given, else the finite ones. With ``valid``, every rate is also given on the valid pixels
    alone, under its name followed by ``_valid`` (``error_rate_valid``, ``d1_noc_valid``, ...).
    """
    if sample.disp is None:
        raise UserError(f"{sample.name} has no ground truth to evaluate against: leave it out")
    answered = None if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(pred)
    out = {"error_rate": error_rate(pred, sample.disp, "study", threshold),
           "density": density(pred) if answered is None else 100.0 * float(answered.mean())}
    for kind, gt in (("noc", sample.disp_noc), ("occ", sample.disp_occ)):
        if gt is not None:
            for rule in RULES:
                out[f"{rule}_{kind}"] = error_rate(pred, gt, rule, threshold)
    if answered is not None:
        out["error_rate_valid"] = error_rate(pred, sample.disp, "study", threshold, answered)
        for kind, gt in (("noc", sample.disp_noc), ("occ", sample.disp_occ)):
            if gt is not None:
                for rule in RULES:
                    out[f"{rule}_{kind}_valid"] = error_rate(pred, gt, rule, threshold, answered)
    return out


# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class ImageResult:
    """One frame: the headline numbers, every measure of :func:`image_metrics`, and the time of each stage."""

    name: str
    error_rate: float
    density: float
    seconds: dict[str, float]
    metrics: dict[str, float]
    ground_truth: str  # which map error_rate used: noc, occ (or disp)
    max_disp: int
    size: tuple[int, int]  # (width, height)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "error_rate": self.error_rate, "density": self.density,
                "seconds": dict(self.seconds), "metrics": dict(self.metrics), "ground_truth": self.ground_truth, "max_disp": self.max_disp,
                "width": self.size[0], "height": self.size[1]}


@dataclass
class EvalResult:
    """A matcher on a dataset: per-image results and their averages (equation 3)."""

    model: str
    backend: str
    postprocess: str
    device: str = "cpu"
    images: list[ImageResult] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # frames without ground truth
    threshold: float = THRESHOLD
    trained_on: list[str] = field(default_factory=list)  # evaluated frames the model was trained on

    @property
    def average_error_rate(self) -> float:
        return average_rate(i.error_rate for i in self.images)

    @property
    def mean_seconds(self) -> float:
        """Mean total time per depth map (features + matching + post-processing)."""
        return float(np.mean([i.seconds["total"] for i in self.images])) if self.images else math.nan

    def averages(self) -> dict[str, float]:
        """Every measure of the images averaged over the images that have it."""
        keys = dict.fromkeys(k for i in self.images for k in i.metrics)
        return {k: average_rate(i.metrics.get(k) for i in self.images) for k in keys}

    def mean_stage_seconds(self) -> dict[str, float]:
        keys = dict.fromkeys(k for i in self.images for k in i.seconds)
        return {k: float(np.mean([i.seconds[k] for i in self.images if k in i.seconds])) for k in keys}

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "backend": self.backend, "postprocess": self.postprocess, "device": self.device,
            "threshold": self.threshold, "images": [i.to_dict() for i in self.images],
            "average_error_rate": self.average_error_rate, "mean_seconds": self.mean_seconds,
            "averages": self.averages(), "mean_stage_seconds": self.mean_stage_seconds(),
            "skipped_without_ground_truth": list(self.skipped), "trained_on": list(self.trained_on),
        }


# --------------------------------------------------------------------------------------------------------------
# Training data seen again


def training_overlap(training_data: Mapping[str, Any], frames: Iterable[str],
                     data_format: str | None = None) -> list[str]:
    """The names among ``frames`` that the model was trained on, in the order given.

    ``training_data`` is what the model records about its training set (``ModelMeta.training_data``, i.e.
    ``matcher.backend.meta.training_data`` for every backend; the run's ``config.json`` ``data``): its ``frames``
    are scene folders (Middlebury) or frame names (KITTI ``000005_10``). Names alone cannot tell KITTI 2012 from
    KITTI 2015, so when ``data_format`` (the evaluated layout) is given and the training layout is known (its
    recorded ``format``, else the layout of every recorded source folder that still exists) and differs, there
    is no overlap. A model without training records (e.g. exported by other tools) overlaps nothing.
    """
    trained = set(training_data.get("frames") or ())
    if not trained:
        return []
    if data_format is not None:
        layouts = _training_layouts(training_data)
        if layouts and data_format not in layouts:
            return []
    return [f for f in frames if f in trained]


def _training_layouts(training_data: Mapping[str, Any]) -> set[str]:
    """The dataset layouts the model was trained on, if known: the recorded format, else every source's (all must
    still exist, or nothing is concluded)."""
    from stereodeploy.data.datasets import detect_format

    if training_data.get("format"):
        return {str(training_data["format"])}
    sources = [Path(p) for p in training_data.get("sources") or ()]
    if not sources or not all(p.is_dir() for p in sources):
        return set()
    try:
        return {detect_format(p) for p in sources}
    except UserError:
        return set()


def training_overlap_warning(model: str, overlap: Sequence[str], evaluated: int) -> str:
    """One line for the frames of ``overlap`` (from :func:`training_overlap`) among ``evaluated`` frames."""
    names = ", ".join(overlap[:5]) + (", ..." if len(overlap) > 5 else "")
    return (f"{model} was trained on {len(overlap)} of the {evaluated} evaluated frames ({names}): its error there "
            "does not show how it does on new images; evaluate on frames it was not trained on")


# --------------------------------------------------------------------------------------------------------------
# The loop


def postprocess_name(matcher: StereoMatcher) -> str:
    """``none``, ``full`` or ``custom`` for the matcher's post-processing stages."""
    cfg = matcher.config
    stages = (cfg.sgm, cfg.lr_check, cfg.subpixel, cfg.median, cfg.bilateral)
    return "none" if not any(stages) else "full" if all(stages) else "custom"


def frame_max_disp(option: int | None, sample: StereoSample, model_default: int) -> int:
    """``option`` when given (checked later against the width), else the sample's hint (Middlebury ``ndisp``),
    else the model's; a hint or default is capped at ``width - 1``."""
    return choose_max_disp(option, sample.max_disp, sample.left.shape[1], model_default)


def choose_max_disp(option: int | None, hint: int | None, width: int, model_default: int) -> int:
    """The rule of :func:`frame_max_disp` for any pair: ``option``, else ``hint``, else ``model_default``; the
    last two capped at ``width - 1``. `stereodeploy infer` uses it with ``ndisp`` of a pair's calib.txt."""
    if option is not None:
        return option
    return max(1, min(hint or model_default, width - 1))


def evaluate(samples: Sequence[StereoSample], matcher: StereoMatcher, *, model: str | None = None,
             max_disp: int | None = None, error_maps: Path | None = None, overwrite: bool = False,
             threshold: float = THRESHOLD, warmup: bool = True, progress: bool = True,
             on_frame: Callable[[StereoSample, MatchResult], None] | None = None,
             data_format: str | None = None) -> EvalResult:
    """Run ``matcher`` on every sample with ground truth and score it; frames without are skipped with a warning.

    ``max_disp`` overrides the per-frame choice of :func:`frame_max_disp`. ``error_maps`` is a folder that gets
    ``<name>_error.png`` per frame (:func:`stereodeploy.data.io.error_map` against the same ground truth as the error
    rate, with its legend strip under the map: :func:`stereodeploy.data.io.error_map_with_legend`). ``warmup`` runs the first frame once untimed, so one-off costs (JIT compilation, graph tracing, memory
    pools) do not land in the first frame's time. ``on_frame`` sees every frame's sample and match result.

    Frames the model was trained on (its metadata's training frames, :func:`training_overlap`; ``data_format`` is
    the evaluated layout) are still scored, with a warning, and listed in ``EvalResult.trained_on``.
    """
    from stereodeploy.data.io import ensure_writable, error_map_with_legend, write_png

    if max_disp is not None and max_disp < 1:
        raise UsageError(f"--max-disp must be at least 1, got {max_disp}")
    scored = [s for s in samples if s.disp is not None]
    skipped = [s.name for s in samples if s.disp is None]
    if not scored:
        raise UserError(f"none of the {len(samples)} frames has ground truth disparity: evaluate on a dataset with "
                        "disp_noc/disp_occ (KITTI) or disp0GT.pfm (Middlebury)")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} of {len(samples)} frames without ground truth "
                      f"({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})", stacklevel=2)
    trained_on = training_overlap(getattr(matcher.backend.meta, "training_data", None) or {},
                                  [s.name for s in scored], data_format)
    map_paths = {}
    if error_maps is not None:
        map_paths = {s.name: ensure_writable(Path(error_maps) / f"{s.name}_error.png", overwrite) for s in scored}

    default = matcher.config.max_disp
    backend = matcher.backend
    result = EvalResult(model=model or str(getattr(backend, "path", "") or backend.meta.source_framework),
                        backend=backend.name, postprocess=postprocess_name(matcher), device=backend.device,
                        skipped=skipped, threshold=threshold, trained_on=trained_on)
    if trained_on:
        warnings.warn(training_overlap_warning(result.model, trained_on, len(scored)), stacklevel=2)

    def matcher_for(sample: StereoSample) -> tuple[StereoMatcher, int]:
        d = frame_max_disp(max_disp, sample, default)
        return (matcher if d == matcher.config.max_disp else matcher.with_max_disp(d)), d

    if warmup:
        m, _ = matcher_for(scored[0])
        m.match(scored[0].left, scored[0].right)
    with progress_bar(progress) as bar:
        task = bar.add_task(f"{result.backend} {result.postprocess}", total=len(scored))
        for sample in scored:
            m, d = matcher_for(sample)
            res = m.match(sample.left, sample.right)
            metrics = image_metrics(res.disparity, sample, threshold, res.valid)
            result.images.append(ImageResult(
                name=sample.name, error_rate=metrics["error_rate"], density=metrics["density"],
                seconds={k: float(v) for k, v in res.timings.items()}, metrics=metrics,
                ground_truth=ground_truth_kind(sample), max_disp=d, size=(sample.left.shape[1], sample.left.shape[0])))
            if sample.name in map_paths:
                write_png(map_paths[sample.name], error_map_with_legend(res.disparity, sample.disp, threshold),
                          overwrite=overwrite)
            if on_frame is not None:
                on_frame(sample, res)
            bar.update(task, advance=1, description=f"{result.backend} {result.postprocess} {sample.name}: "
                                                    f"{metrics['error_rate']:.1f}%")
    return result


def select_frames(samples: Sequence[StereoSample], frames: Sequence[str], where: Path | str) -> list[StereoSample]:
    """The samples named in ``frames`` (all when empty); an unknown name is a one-line error listing some known."""
    if not frames:
        return list(samples)
    names = {s.name for s in samples}
    missing = [f for f in frames if f not in names]
    if missing:
        raise UserError(f"frame(s) {', '.join(missing)} not found in {where}: check the names "
                        f"(found {', '.join(sorted(names)[:8])}{', ...' if len(names) > 8 else ''})")
    return [s for s in samples if s.name in set(frames)]


def error_map_dirs(root: Path | None, models: Sequence[Path]) -> list[Path | None]:
    """One error-map folder per model: ``root`` itself for one model, ``root/<model stem>`` (made unique) for
    several; None everywhere without ``root``."""
    if root is None:
        return [None] * len(models)
    if len(models) == 1:
        return [Path(root)]
    dirs, seen = [], set()
    for i, m in enumerate(models):
        name = Path(m).stem or Path(m).name or f"model{i}"
        if name in seen:
            name = f"{name}-{i}"
        seen.add(name)
        dirs.append(Path(root) / name)
    return dirs


def evaluate_models(data: Path, models: Sequence[Path], *, fmt: str | None = None, backend: str = "onnx",
                    postprocess: str = "none", max_disp: int | None = None, json_out: Path | None = None,
                    error_maps: Path | None = None, frames: Sequence[str] = (), provider: str = "cpu",
                    overwrite: bool = False, progress: bool = True,
                    on_result: Callable[[EvalResult], None] | None = None,
                    threads: int | None = None) -> list[EvalResult]:
    """What `stereodeploy evaluate` does: every model in ``models`` on the dataset ``data`` (layout ``fmt``, or
    detected; its SGM preset follows the layout), optionally writing error maps and one JSON file of all results.

    ``on_result`` sees each model's result as soon as it is done. ``threads`` caps the CPU threads (see
    :func:`stereodeploy.util.threads.configure_threads`; recorded in the JSON). Output paths are checked before any
    work starts.
    """
    from stereodeploy.data.datasets import detect_format, load_dataset
    from stereodeploy.data.io import ensure_writable, write_json
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.engine.shipped import default_model_path
    from stereodeploy.util.threads import configure_threads, thread_report

    if json_out is not None:
        ensure_writable(json_out, overwrite)
    settings = configure_threads(threads) if threads is not None else {"threads": "runtime defaults"}
    models = list(models) or [default_model_path()]
    fmt = fmt or detect_format(data)
    samples = select_frames(load_dataset(data, fmt), frames, data)
    results = []
    for model, maps in zip(models, error_map_dirs(error_maps, models)):
        matcher = StereoMatcher.from_file(model, max_disp=max_disp, postprocess=postprocess, backend=backend,
                                          provider=provider, sgm_preset=fmt, threads=threads)
        results.append(evaluate(samples, matcher, model=str(model), max_disp=max_disp, error_maps=maps,
                                overwrite=overwrite, progress=progress, data_format=fmt))
        if on_result is not None:
            on_result(results[-1])
    if json_out is not None:
        settings = {**settings, **thread_report()}
        dicts = [{"dataset": str(data), "format": fmt, "threads": settings, **r.to_dict()} for r in results]
        write_json(json_out, dicts[0] if len(dicts) == 1 else {"dataset": str(data), "format": fmt, "results": dicts},
                   overwrite=overwrite)
    return results
