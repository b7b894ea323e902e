"""Static int8 quantisation of an exported feature model with onnxruntime, calibrated on real images.

    report = quantize_model("model.onnx", "model_int8.onnx", calibration=["../shared/data/middlebury"])

What is quantised, and why (measured on the 2-core CPU this project is developed on, see docs/benchmarks.md):

- every convolution but the first runs in int8 (QDQ format, weights per output channel, activations uint8): the
  Quantize/Conv/Dequantize groups become onnxruntime's ``QLinearConv`` (u8 x s8, VNNI where the CPU has it),
  ReLUs are folded into them. The features are about 2.5x faster than float32.
- the first convolution stays float32: its input is the normalised image, and 8 bits over its range are coarser
  than the 8-bit image itself (the >=3 px error rose by 2-4 points when it was quantised); it does 1/64 of the
  work of the others. The per-image normalisation and the final L2 normalisation stay float32 too.
- activation ranges come from histograms at the 99.9th percentile of ``|x|`` (onnxruntime's percentile
  calibrator), which clips rare outliers; plain min/max ranges cost 0.7-0.9 points of >=3 px error.

Calibration images are cut into seeded square crops and fed one at a time, so memory stays near one crop's
activations (onnxruntime's own loop keeps every calibration output in memory). With no calibration data given,
scikit-image's Motorcycle pair (Middlebury 2014) is used. The written file keeps the stereodeploy contract (input
``image``, output ``features``) and metadata, plus ``stereodeploy.quantization`` describing what was done.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stereodeploy.contract import INPUT_NAME, OUTPUT_NAME, ModelMeta, read_meta
from stereodeploy.data.io import atomic_write, ensure_writable, read_image
from stereodeploy.data.preprocess import to_gray
from stereodeploy.deploy.export import ExportReport, export
from stereodeploy.deploy.sidecar import write_sidecar
from stereodeploy.errors import UsageError, UserError

QUANT_KEY = "stereodeploy.quantization"
ProgressCallback = Callable[[int, int], None]  # (steps done, steps in all): the calibration crops, quantise, check
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".tif", ".tiff")
PERCENTILE = 99.9


@dataclass
class QuantizeReport:
    """What :func:`quantize_model` wrote and how close its features are to the float32 model's."""

    path: Path
    meta: ModelMeta
    images: int  # calibration images (a stereo pair counts 2)
    crops: int
    crop_size: int
    sources: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)  # convolutions left in float32
    cosine_mean: float = float("nan")  # mean cosine of int8 vs float32 feature vectors on calibration crops
    cosine_p01: float = float("nan")  # its 1st percentile


# ---------------------------------------------------------------------------------------------- calibration data
_NO_SKIMAGE = ("no calibration images given and scikit-image (which ships the Motorcycle pair used by default) is "
               "not installed: pass --calibration IMAGE_OR_DATASET, or pip install scikit-image")


def check_calibration(sources: Sequence[Path | str] = ()) -> None:
    """Raise the UserError :func:`calibration_images` would, without reading anything (for early checks)."""
    import importlib.util

    for src in sources:
        if not Path(src).exists():
            raise UserError(f"calibration source {src} does not exist: give image files or dataset folders")
    if not sources and importlib.util.find_spec("skimage") is None:
        raise UserError(_NO_SKIMAGE)


def _default_images() -> tuple[list[np.ndarray], list[str]]:
    try:
        from skimage import data
    except ImportError:
        raise UserError(_NO_SKIMAGE) from None
    left, right, _ = data.stereo_motorcycle()
    return [to_gray(left), to_gray(right)], ["skimage.data.stereo_motorcycle (Middlebury 2014 Motorcycle)"]


def _folder_images(folder: Path) -> list[Path]:
    """The left and right images of a dataset folder (KITTI / Middlebury layout), else its image files."""
    from stereodeploy.data.datasets import list_frames

    try:
        frames = list_frames(folder)
    except UserError:
        frames = []
    if frames:
        return [p for f in frames for p in (f.left, f.right)]
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"calibration folder {folder} holds no stereo dataset and no images "
                        f"({', '.join(IMAGE_SUFFIXES)}): give image files or a KITTI / Middlebury folder")
    return files


def calibration_images(sources: Sequence[Path | str] = ()) -> tuple[list[np.ndarray], list[str]]:
    """Grayscale float32 images (0..255) from image files and dataset folders; the Motorcycle pair if none."""
    if not sources:
        return _default_images()
    images, names = [], []
    for src in sources:
        path = Path(src)
        if not path.exists():
            raise UserError(f"calibration source {path} does not exist: give image files or dataset folders")
        files = _folder_images(path) if path.is_dir() else [path]
        images.extend(to_gray(read_image(f)) for f in files)
        names.append(str(path))
    return images, names


def calibration_crops(images: Sequence[np.ndarray], size: int = 256, per_image: int = 4,
                      seed: int = 0) -> list[np.ndarray]:
    """``per_image`` seeded square crops of side ``min(size, H, W)`` from each image, each (1, 1, S, S) float32."""
    rng = np.random.default_rng(seed)
    crops = []
    for img in images:
        h, w = img.shape
        s = min(size, h, w)
        for _ in range(per_image):
            y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
            crops.append(np.ascontiguousarray(img[y:y + s, x:x + s], dtype=np.float32)[None, None])
    return crops


class _OneBatch:
    """A calibration data reader that yields one input and is done (onnxruntime's reader protocol)."""

    def __init__(self, batch: np.ndarray):
        self._items: Iterator[dict[str, np.ndarray]] = iter([{INPUT_NAME: batch}])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


# ---------------------------------------------------------------------------------------------- the model
def first_conv(model: Any) -> str:
    """Name of the convolution that reads the (normalised) image: its weight has one input channel."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if not convs:
        raise UserError("the model has no convolution to quantise: is it a stereodeploy feature model?")
    for node in convs:
        weight = inits.get(node.input[1])
        if weight is not None and numpy_helper.to_array(weight).shape[1] == 1:
            return node.name
    return convs[0].name


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence onnxruntime's calibration prints and its advice to pre-process (root-logger warnings)."""

    def drop(record: logging.LogRecord) -> bool:
        return "pre-process" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.removeFilter(drop)


def _load(path: Path) -> tuple[Any, ModelMeta]:
    import onnx

    if not path.is_file():
        raise UserError(f"model file {path} does not exist: give an ONNX file written by `stereodeploy export`")
    try:
        proto = onnx.load_model(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged file is the user's, in one line
        raise UserError(f"{path} is not a readable ONNX file ({type(exc).__name__}): export the model again") from None
    meta = read_meta(proto, str(path))
    if [i.name for i in proto.graph.input] != [INPUT_NAME] or [o.name for o in proto.graph.output] != [OUTPUT_NAME]:
        raise UserError(f"{path} does not have the stereodeploy contract (input '{INPUT_NAME}', output "
                        f"'{OUTPUT_NAME}'): export it with `stereodeploy export`")
    props = {p.key: p.value for p in proto.metadata_props}
    if QUANT_KEY in props:
        raise UserError(f"{path} is already quantised ({json.loads(props[QUANT_KEY]).get('scheme', 'int8')}): "
                        "quantise the float32 model it came from")
    return proto, meta


def _tensor_ranges(model_path: Path, crops: Sequence[np.ndarray], percentile: float, workdir: Path,
                   on_crop: Callable[[int], None] | None = None) -> Path:
    """Percentile activation ranges over ``crops``, fed one at a time; saved as an onnxruntime calibration cache.

    ``on_crop(done)`` is called after each crop."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        create_calibrator,
        save_tensors_data,
    )

    with _quiet():
        calibrator = create_calibrator(model_path, ["Conv", "Relu"],
                                       augmented_model_path=str(workdir / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Percentile,
                                       extra_options={"percentile": percentile})
    for i, crop in enumerate(crops, start=1):  # one collect per crop: histograms accumulate, activations dropped
        with _quiet():
            calibrator.collect_data(_OneBatch(crop))
        if on_crop is not None:  # outside _quiet: the caller's callback may print
            on_crop(i)
    cache = workdir / "ranges.json"
    with _quiet():
        save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _feature_agreement(fp32: bytes, int8: bytes, crops: Sequence[np.ndarray]) -> tuple[float, float]:
    """Mean and 1st percentile of the cosine between float32 and int8 feature vectors on up to 8 crops."""
    import onnxruntime as ort

    a = ort.InferenceSession(fp32, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(int8, providers=["CPUExecutionProvider"])
    cos = []
    for crop in crops[:8]:
        fa = a.run([OUTPUT_NAME], {INPUT_NAME: crop})[0]
        fb = b.run([OUTPUT_NAME], {INPUT_NAME: crop})[0]
        cos.append((fa * fb).sum(axis=1).ravel())  # both L2-normalised along C
    c = np.concatenate(cos)
    return float(c.mean()), float(np.percentile(c, 1))


def quantize_model(model: Path | str, out: Path | str, calibration: Sequence[Path | str] = (), *,
                   crop_size: int = 256, crops_per_image: int = 4, percentile: float = PERCENTILE,
                   per_channel: bool = True, seed: int = 0, overwrite: bool = False,
                   progress: bool | ProgressCallback = False) -> QuantizeReport:
    """Quantise the float32 feature model ``model`` to int8 into ``out`` (see the module docstring).

    Calibration takes most of the time (minutes for a few dozen images on 2 cores): ``progress`` ``True`` shows a
    rich progress bar on stderr, a callable is called as ``progress(done, total)`` after each step: every
    calibration crop, then the quantisation and the feature check (``total`` = crops + 2).

    ``calibration``: image files and KITTI / Middlebury dataset folders (their left and right images); empty
    means scikit-image's Motorcycle pair. Calibrate on images like the ones the model will see, and evaluate on
    others. Raises UserError for a missing or non-stereodeploy model, bad calibration sources, or an existing
    ``out`` without ``overwrite``; the file only appears once everything succeeded.
    """
    import onnx
    from onnxruntime.quantization import quantize_static

    model, out = Path(model), Path(out)
    ensure_writable(out, overwrite)
    if crop_size < 16 or crops_per_image < 1 or not 50.0 < percentile <= 100.0:
        raise UsageError("crop_size must be >= 16, crops_per_image >= 1 and percentile in (50, 100]")
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise UserError(f"onnxruntime {onnxruntime.__version__} cannot take precomputed calibration ranges: "
                        "upgrade onnxruntime to quantise")
    proto, meta = _load(model)
    images, sources = calibration_images(calibration)
    crops = calibration_crops(images, crop_size, crops_per_image, seed)
    excluded = [first_conv(proto)]
    with _progress_bar(progress, len(crops), len(images)) as report_step:
        qmodel, cos_mean, cos_p01 = _quantize(model, proto, crops, excluded, percentile, per_channel, report_step)
    del qmodel.metadata_props[:]
    for p in proto.metadata_props:
        qmodel.metadata_props.add(key=p.key, value=p.value)
    info = {
        "scheme": "int8 static QDQ, weights per-channel" if per_channel else "int8 static QDQ, weights per-tensor",
        "activations": "uint8", "weights": "int8", "float32_convolutions": excluded,
        "calibration": {"sources": sources, "images": len(images), "crops": len(crops),
                        "crop_size": int(crops[0].shape[-1]), "method": f"percentile {percentile}", "seed": seed},
        "from": model.name,
    }
    qmodel.metadata_props.add(key=QUANT_KEY, value=json.dumps(info))
    onnx.checker.check_model(qmodel)
    with atomic_write(out, overwrite=overwrite) as tmp_out:
        onnx.save_model(qmodel, str(tmp_out))
    write_sidecar(qmodel, out, overwrite=True)
    return QuantizeReport(path=out, meta=meta, images=len(images), crops=len(crops),
                          crop_size=int(crops[0].shape[-1]), sources=sources, excluded=excluded,
                          cosine_mean=cos_mean, cosine_p01=cos_p01)


def _quantize(model: Path, proto: Any, crops: Sequence[np.ndarray], excluded: list[str], percentile: float,
              per_channel: bool, report_step: ProgressCallback | None) -> tuple[Any, float, float]:
    """Calibrate, quantise and compare features: the slow part, in ``len(crops) + 2`` reported steps."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    total = len(crops) + 2  # every calibration crop, the quantisation, the feature check

    def step(done: int) -> None:
        if report_step is not None:
            report_step(done, total)

    with tempfile.TemporaryDirectory(prefix="stereodeploy-quant-") as tmp:
        work = Path(tmp)
        cache = _tensor_ranges(model, crops, percentile, work, step)
        with _quiet():
            quantize_static(str(model), str(work / "int8.onnx"), None, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["Conv", "Relu"], per_channel=per_channel,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=excluded, calibrate_method=CalibrationMethod.Percentile,
                            calibration_cache_path=str(cache))
        qmodel = onnx.load_model(str(work / "int8.onnx"))
    step(total - 1)
    cos_mean, cos_p01 = _feature_agreement(proto.SerializeToString(), qmodel.SerializeToString(), crops)
    step(total)
    return qmodel, cos_mean, cos_p01


def stage_logger(crops: int, images: int, log: logging.Logger | None = None) -> ProgressCallback:
    """A progress callback that logs a line per stage (INFO on the ``stereodeploy`` logger): the start, each
    quarter of the calibration crops, the quantisation and the feature check, with the time so far. Where no bar
    can show (``--no-progress``, or stderr not a terminal, e.g. a log file), a long calibration is not silent."""
    import time

    log = log or logging.getLogger("stereodeploy")
    start = time.perf_counter()
    quarters = {max(1, round(crops * q / 4)) for q in (1, 2, 3)}
    log.info("int8: calibrating on %s of %s", count(crops, "crop"), count(images, "image"))

    def report(done: int, total: int) -> None:
        took = time.perf_counter() - start
        if done < crops and done in quarters:
            log.info("int8: calibrated %d of %d crops (%.0f s)", done, crops, took)
        elif done == crops:
            log.info("int8: calibration done (%.0f s); quantising", took)
        elif done == total - 1:
            log.info("int8: quantised (%.0f s); checking the int8 features against float32", took)
        elif done == total:
            log.info("int8: done in %.0f s", took)

    return report


@contextlib.contextmanager
def _progress_bar(progress: bool | ProgressCallback, crops: int, images: int) -> Iterator[ProgressCallback]:
    """The per-step callback for ``progress``: the caller's own; a rich bar on stderr for ``True`` when stderr is a
    terminal; else :func:`stage_logger`'s lines."""
    if callable(progress):
        yield progress
        return
    if not progress or not sys.stderr.isatty():
        yield stage_logger(crops, images)
        return
    from stereodeploy.util.progress import progress_bar

    # stderr: a bar is not a result (and onnxruntime's prints to stdout are swallowed around each step)
    with progress_bar(label="int8: calibrating, quantising, checking", stderr=True) as bar:
        task = bar.add_task("calibration", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def quantize_file(model: Path | str, out: Path | str | None = None, calibration: Sequence[Path | str] = (), *,
                  overwrite: bool = False, progress: bool | ProgressCallback = False, **options: Any) -> QuantizeReport:
    """What ``stereodeploy quantize IN.onnx [--out OUT.onnx] [--calibration DIR ...]`` does.

    Quantises an existing float32 feature model (written by ``stereodeploy export``) into ``out``, by default
    ``<IN stem>_int8.onnx`` beside it (:func:`int8_path`). Before any work: refuses ``out`` equal to the input,
    an existing ``out`` without ``overwrite``, and missing calibration sources. ``options`` go to
    :func:`quantize_model` (``crop_size``, ``crops_per_image``, ``percentile``, ``per_channel``, ``seed``).
    """
    model = Path(model)
    out = int8_path(model) if out is None else Path(out)
    if out.resolve() == model.resolve():
        raise UsageError(f"--out {out} is the model being quantised: write the int8 model to another file")
    ensure_writable(out, overwrite)
    check_calibration(calibration)
    return quantize_model(model, out, calibration, overwrite=overwrite, progress=progress, **options)


def count(n: int, noun: str) -> str:
    """``n`` and ``noun``, plural unless ``n`` is 1: "1 image", "4 crops"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def summary(report: QuantizeReport) -> str:
    """One line for the terminal: what was written and how close its features are to the float32 model's."""
    return (f"wrote {report.path}: int8 (float32: {', '.join(report.excluded)}), calibrated on "
            f"{count(report.crops, 'crop')} of {count(report.images, 'image')}; cosine of its features to float32: mean {report.cosine_mean:.4f}, "
            f"1st percentile {report.cosine_p01:.4f}")


def int8_path(fp32_path: Path | str) -> Path:
    """Where ``stereodeploy export --quantize int8`` puts the int8 model: ``<stem>_int8.onnx`` next to it."""
    p = Path(fp32_path)
    return p.with_name(f"{p.stem}_int8{p.suffix or '.onnx'}")


def export_with_quantized(source: Path, out: Path, max_disp: int = 128, overwrite: bool = False,
                          quantize: str | None = None,
                          calibration: Sequence[Path] = ()) -> tuple[ExportReport, QuantizeReport | None]:
    """What `stereodeploy export` does: :func:`stereodeploy.deploy.export.export`, then with ``quantize="int8"`` an int8
    twin at :func:`int8_path` calibrated on ``calibration``. Every output path and the calibration data are checked
    before any work starts. Returns the export report and the quantisation report (None without ``quantize``)."""
    if calibration and quantize is None:
        raise UsageError("--calibration is only used with --quantize int8")
    if quantize not in (None, "int8"):
        raise UsageError(f"unknown quantisation {quantize!r}: use int8")
    int8_out = None
    if quantize is not None:
        int8_out = ensure_writable(int8_path(out), overwrite)  # refuse before the export, not after
        check_calibration(list(calibration))
    report = export(source, out, max_disp=max_disp, overwrite=overwrite)
    if int8_out is None:
        return report, None
    return report, quantize_model(report.path, int8_out, list(calibration), overwrite=overwrite)
