"""The `stereodeploy` command line. Each command parses its options and calls one library function.

User mistakes (:class:`~stereodeploy.errors.UserError`) end with one line on stderr and a non-zero exit code.
Options and choices shared by several commands live in :mod:`stereodeploy.cli.options`; `evaluate` and
`compare` are defined in :mod:`stereodeploy.cli.study` and registered here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from stereodeploy.cli.options import (
    BackendName,
    BackendOption,
    DataFormat,
    Device,
    DeviceOption,
    Epochs,
    FormatOption,
    Framework,
    Kernel,
    Layers,
    LearningRate,
    LrDrops,
    Maps,
    MaxExamples,
    ModelOption,
    Momentum,
    Overwrite,
    Postprocess,
    PostprocessOption,
    Progress,
    ProviderOption,
    Quantization,
    Seed,
    Threads,
    value,
)
from stereodeploy.cli.options import user_errors as _user_errors
from stereodeploy.cli.study import register as register_eval
from stereodeploy.errors import UsageError, UserError
from stereodeploy.frameworks import DEFAULT, FRAMEWORKS, labels

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help=f"Train, export and deploy the MC-CNN fast stereo matcher in {labels(', ')} and ONNX.",
)
train_app = typer.Typer(no_args_is_help=True, help=f"Train MC-CNN fast with {labels()}.")
app.add_typer(train_app, name="train")


@app.callback()
def _root(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show the frameworks' own start-up logs (e.g. absl and oneDNN lines).")] = False,
          ) -> None:
    for fw in FRAMEWORKS.values():
        if fw.quiet:
            fw.load("quiet")(verbose)


def model_path(model: Path | None) -> Path:
    """The model a --model option names (a path or a shipped model's name), or the default model."""
    from stereodeploy.engine.shipped import default_model_path, resolve_model

    return default_model_path() if model is None else resolve_model(model)


# ------------------------------------------------------------------------------------------------ train
def _train(ctx: typer.Context, framework: Framework, data: list[Path], out: Path, fmt: DataFormat | None,
           exclude: list[str], val: list[Path], epochs: int, batch_size: int, lr: float, momentum: float,
           lr_drop: list[int], max_examples: int | None, seed: int, device: Device, layers: int, maps: int,
           kernel: int, augment: bool, checkpoint_every: int, checkpoint_minutes: float, max_disp: int, resume: bool,
           overwrite: bool, progress: bool, threads: int | None, nproc_per_node: int | None = None) -> None:
    from stereodeploy.config import DataSpec, NetworkConfig, RunSpec, SamplerConfig, TrainConfig
    from stereodeploy.train.api import train_run
    from stereodeploy.train.distributed import process_for
    from stereodeploy.train.loop import TrainingInterrupted

    proc = process_for(framework.value)
    if nproc_per_node is not None:
        _relaunch_locally(framework, nproc_per_node, proc.distributed)
    spec = RunSpec(  # validates every value once (a usage error naming the option)
        framework=framework.value, data=DataSpec(sources=tuple(data), exclude=tuple(exclude), format=value(fmt)),
        network=NetworkConfig(layers=layers, maps=maps, kernel=kernel),
        sampler=SamplerConfig(seed=seed, augment=augment),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, lr_drops=tuple(lr_drop),
                          max_examples=max_examples, seed=seed, checkpoint_every=checkpoint_every,
                          checkpoint_minutes=checkpoint_minutes, device=device.value),
        validation=tuple(val), max_disp=max_disp, threads=threads)
    given = {p.opts[0] for p in ctx.command.params  # what the user typed: a resume honours or refuses it
             if p.name and getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}
    try:
        summary = train_run(spec, out, resume=resume, options=given, overwrite=overwrite, progress=progress)
    except TrainingInterrupted as exc:
        if proc.rank != 0:  # process 0 says it
            raise typer.Exit(exc.exit_code) from None
        raise
    except UserError as exc:
        if proc.distributed:  # say which process of the job stopped
            raise type(exc)(f"process {proc.rank} of {proc.world}: {exc}", exit_code=exc.exit_code) from None
        raise
    if proc.rank != 0:
        return
    if not summary.epochs:
        raise UserError(f"{out}: nothing was trained (no epoch completed)")
    typer.echo(
        f"{framework.value}: {summary.epochs} epoch{'' if summary.epochs == 1 else 's'} in {summary.total_seconds:.1f} s "
        f"(epoch {summary.mean_epoch_seconds:.2f} s, step {1000 * summary.mean_step_seconds:.2f} ms, "
        f"{summary.examples_per_second:.0f} examples/s), patch accuracy {100 * summary.final_accuracy:.1f}% -> {out}"
    )


def _relaunch_locally(framework: Framework, nproc: int, distributed: bool) -> None:
    """``--nproc-per-node N``: replace this process by the framework's local launcher (its record's
    ``local_launch``, e.g. ``torchrun --standalone --nproc-per-node N``) running the same command without the flag
    (signals then reach the launcher, which forwards them to its processes)."""
    import os

    fw = FRAMEWORKS[framework.value]
    if not fw.local_launch:
        able = " or ".join(f.label for f in FRAMEWORKS.values() if f.local_launch) or "no framework"
        raise UsageError(f"--nproc-per-node starts {able} processes: for {fw.label} start {fw.distributed_hint}")
    if nproc < 1:
        raise UsageError(f"--nproc-per-node must be at least 1, got {nproc}")
    if distributed:
        raise UsageError("--nproc-per-node is given, but this process already runs distributed: drop the option")
    args = sys.argv[1:]
    if args[:2] != ["train", framework.value]:
        raise UsageError(f"--nproc-per-node works from the command line only: start {fw.distributed_hint} instead")
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            kept.append(arg)
    command = [sys.executable, *(a.replace("{n}", str(nproc)) for a in fw.local_launch), "-m", "stereodeploy", *kept]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def _make_train_command(framework: Framework):
    @_user_errors
    def command(
        ctx: typer.Context,
        data: Annotated[list[Path], typer.Option("--data", help="Dataset folder (repeatable).")] = [],  # noqa: B006
        out: Annotated[Path, typer.Option("--out", help="Run directory to create (or resume).")] = Path("runs/run"),
        fmt: FormatOption = None,
        exclude: Annotated[list[str], typer.Option("--exclude", help="Frame/scene name to leave out (repeatable).")] = [],  # noqa: B006
        val: Annotated[list[Path], typer.Option("--val", help="Validation dataset: >=3 px error after each epoch.")] = [],  # noqa: B006
        epochs: Epochs = 14,
        batch_size: Annotated[int, typer.Option(help="Pairs per batch (128 = 64 positive + 64 negative), for the "
                                                     "whole job: several processes share each batch.")] = 128,
        lr: LearningRate = 0.002,
        momentum: Momentum = 0.9,
        lr_drop: LrDrops = [12],  # noqa: B006 - typer reads the default, never mutates it
        max_examples: MaxExamples = None,
        seed: Seed = 0,
        device: DeviceOption = Device.cpu,
        layers: Layers = 4,
        maps: Maps = 64,
        kernel: Kernel = 3,
        augment: Annotated[bool, typer.Option(help="MC-CNN data augmentation.")] = False,
        checkpoint_every: Annotated[int, typer.Option(help="Also checkpoint every N steps (0: off).")] = 0,
        checkpoint_minutes: Annotated[float, typer.Option(
            help="Checkpoint when this many minutes passed since the last one (0: off). Epoch ends and "
                 "Ctrl-C / SIGTERM always checkpoint.")] = 10.0,
        max_disp: Annotated[int, typer.Option(help="Max disparity for --val.")] = 64,
        resume: Annotated[bool, typer.Option("--resume", help=(
            "Continue the run in --out where it stopped, with its recorded options. Given with it, --epochs (e.g. "
            "to extend a finished run), --device, --threads, --checkpoint-*, --val, --max-disp and --data (moved) "
            "are honoured; any other option that differs from the run's is refused."))] = False,
        overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
        progress: Progress = True,
        threads: Threads = None,
        nproc_per_node: Annotated[int | None, typer.Option(
            help="Run as N processes on this machine (frameworks with a local launcher: "
                 f"{', '.join(f.key for f in FRAMEWORKS.values() if f.local_launch)}); several nodes: "
                 "docs/training.md.")] = None,
    ) -> None:
        _train(ctx, framework, data, out, fmt, exclude, val, epochs, batch_size, lr, momentum, lr_drop, max_examples, seed,
               device, layers, maps, kernel, augment, checkpoint_every, checkpoint_minutes, max_disp, resume,
               overwrite, progress, threads, nproc_per_node)

    fw = FRAMEWORKS[framework.value]
    command.__doc__ = (f"Train MC-CNN fast with {fw.label}. Several processes: {fw.distributed_hint} "
                       "(see docs/training.md).")
    return command


for _framework in Framework:
    train_app.command(_framework.value)(_make_train_command(_framework))


# ------------------------------------------------------------------------------------------------ export
@app.command()
@_user_errors
def export(
    source: Annotated[Path, typer.Argument(help=f"Run directory or checkpoint.npz ({labels()}).",
                                           metavar="RUN", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")] = Path("model.onnx"),
    max_disp: Annotated[int, typer.Option(help="Default max disparity stored in the model.")] = 128,
    overwrite: Overwrite = False,
    quantize: Annotated[Quantization | None, typer.Option(
        help="Also write <out stem>_int8.onnx next to --out: onnxruntime static int8, calibrated on --calibration.")] = None,
    calibration: Annotated[list[Path] | None, typer.Option(
        "--calibration", help="Image or dataset folder to calibrate --quantize on (repeatable; default: "
                              "scikit-image's Motorcycle pair).")] = None,
) -> None:
    """Export a trained network to ONNX (features model) and check it against the native network."""
    from stereodeploy.deploy.quantize import export_with_quantized

    report, q = export_with_quantized(source, out, max_disp=max_disp, overwrite=overwrite, quantize=value(quantize),
                                      calibration=calibration or [])
    fw = report.meta.source_framework
    typer.echo(f"wrote {report.path} from {fw}; largest difference against native {fw} on a "
               f"{report.input_shape[-1]}x{report.input_shape[-2]} image: {report.max_abs_diff:.2e}")
    if q is not None:
        from stereodeploy.deploy.quantize import summary

        typer.echo(summary(q))


# ------------------------------------------------------------------------------------------------ infer
def preset_line(applied: str, given: bool, detected: str | None, from_format: bool) -> str:
    """Which SGM preset infer applies, and why."""
    if given:
        return f"SGM preset {applied} (--preset)"
    why = ("from --format" if from_format else "detected from the data's folders") if detected else \
        "the default: the data's folders name no dataset"
    return f"SGM preset {applied} ({why}; --preset chooses another)"


@app.command()
@_user_errors
def infer(
    inputs: Annotated[list[Path] | None, typer.Argument(
        help="LEFT RIGHT images, or one dataset folder (KITTI 2012/2015 or Middlebury layout).",
        metavar="LEFT RIGHT | DATASET", show_default=False)] = None,
    pairs: Annotated[Path | None, typer.Option(
        "--pairs", help="Text file, one 'LEFT RIGHT [NAME]' line per pair (paths relative to the file's folder; "
                        "NAME names the outputs, default the left image's stem).")] = None,
    fmt: FormatOption = None,
    model: ModelOption = None,
    max_disp: Annotated[int | None, typer.Option(
        help="Max disparity, exclusive (default: ndisp of a Middlebury calib.txt beside the left image, else the "
             "model's).")] = None,
    min_disp: Annotated[int, typer.Option(help="Min disparity: search [min, max) only.")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("."),
    postprocess: PostprocessOption = Postprocess.none,
    fill: Annotated[bool, typer.Option(
        help="Keep the values --postprocess full fills in where the left-right check fails (--no-fill: no answer "
             "there; <name>_valid.png marks those pixels either way).")] = True,
    confidence: Annotated[bool, typer.Option(
        help="Write <name>_confidence.pfm.")] = True,
    calib: Annotated[Path | None, typer.Option(
        help="Calibration for <name>_depth.pfm and <name>.ply: KITTI calib_cam_to_cam (P_rect_02/03) or "
             "Middlebury calib.txt with cam0 and baseline (default: the pair's own, where its dataset has one).")] = None,
    focal: Annotated[float | None, typer.Option(help="Focal length in pixels, with --baseline, instead of --calib.")] = None,
    baseline: Annotated[float | None, typer.Option(help="Baseline in metres, with --focal.")] = None,
    preset: Annotated[DataFormat | None, typer.Option(
        help="SGM parameters of --postprocess full, by the data they were tuned on (default: a dataset folder's "
             "layout, else middlebury).")] = None,
    backend: BackendOption = BackendName.onnx,
    provider: ProviderOption = Device.cpu,
    overwrite: Overwrite = False,
    threads: Threads = None,
) -> None:
    """Disparity maps of one pair, a dataset folder or a list of pairs, with one model load for all.

    Writes per pair, into --out: <name>_disp.pfm (float32, inf = no answer), <name>_disp.png (KITTI uint16, 0 = no
    answer), <name>_disp_color.png, <name>_valid.png (255 = matched, 0 = filled or none), <name>_confidence.pfm
    (0..1) and <name>_disp.json (model, settings, timings); with a calibration also <name>_depth.pfm (metres) and
    <name>.ply (coloured points of the valid pixels). <name> is the left image's stem, or the frame name for a
    dataset folder.

    Every output path is checked before any work starts; an image that cannot be matched stops the run there.
    """
    from stereodeploy.engine.inference import detected_preset, infer_pairs, resolve_pairs
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.engine.spec import DEFAULT_PRESET

    if threads is not None:
        from stereodeploy.util.threads import configure_threads

        configure_threads(threads)  # before the engine's kernels load
    inputs = list(inputs or [])
    todo = resolve_pairs(inputs, pairs, value(fmt))
    calibration = _calibration_options(calib, focal, baseline)
    detected = detected_preset(todo, inputs, value(fmt))
    sgm_preset = value(preset) or detected or DEFAULT_PRESET
    matcher = StereoMatcher.from_file(model_path(model), max_disp=max_disp, postprocess=postprocess.value,
                                      backend=value(backend), provider=provider.value, sgm_preset=sgm_preset,
                                      threads=threads, fill=fill, confidence=confidence, min_disp=min_disp)
    if postprocess is Postprocess.full:
        typer.echo(preset_line(sgm_preset, preset is not None, detected, fmt is not None))

    def report(done) -> None:
        t = done.result.timings
        typer.echo(f"{done.pair.name}: {t['total']:.3f} s (features {t['features']:.3f} s, matching "
                   f"{t['matching']:.3f} s) -> {', '.join(map(str, done.files))}")

    infer_pairs(todo, matcher, out, overwrite=overwrite, on_pair=report, max_disp=max_disp, calib=calibration)


def _calibration_options(calib: Path | None, focal: float | None, baseline: float | None):
    """The calibration `infer` was given: a file, or focal and baseline; None for neither."""
    from stereodeploy.data.calib import Calibration, read_calibration

    if calib is not None and (focal is not None or baseline is not None):
        raise UsageError("give either --calib or --focal and --baseline, not both")
    if (focal is None) != (baseline is None):
        raise UsageError("--focal and --baseline go together: give both (pixels, metres), or --calib FILE")
    if calib is not None:
        return read_calibration(calib)
    return None if focal is None else Calibration(focal=focal, baseline=baseline, source="--focal/--baseline")


def check_line(r) -> str:
    """What the export check found, in words: all the same, or how many pixels are ties / differ."""
    same = r.checked_pixels - r.differing_pixels
    if not r.differing_pixels:
        return f"the same disparity at all {r.checked_pixels} pixels"
    rest = "ties between two disparities" if r.postprocess == "none" else "off by more than 0.5 px"
    return f"the same disparity at {same} of {r.checked_pixels} pixels; {r.differing_pixels} are {rest}"


@app.command("export-matcher")
@_user_errors
def export_matcher(
    features: Annotated[Path | None, typer.Argument(
        help="Feature model written by `stereodeploy export`, or a shipped model's name (default: the shipped model).",
        metavar="[MODEL]", show_default=False)] = None,
    model: Annotated[Path | None, typer.Option(
        "--model", help="The same as MODEL, as infer and evaluate take it (give one of the two).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Matcher ONNX file to write (and OUT.json beside it).")] = Path("matcher.onnx"),
    max_disp: Annotated[int | None, typer.Option(help="Max disparity, fixed in the file (default: the model's).")] = None,
    postprocess: PostprocessOption = Postprocess.full,
    preset: Annotated[DataFormat, typer.Option(
        help="SGM and bilateral settings of the full pipeline, by the data they were tuned on.")] = DataFormat.middlebury,
    check: Annotated[bool, typer.Option(help="Compare the file with the engine on a synthetic pair before writing it.")] = True,
    overwrite: Overwrite = False,
) -> None:
    """Write a self-contained ONNX matcher (left, right uint8 images -> disparity) for any onnxruntime binding."""
    from stereodeploy.deploy.export_matcher import export_matcher as do_export_matcher

    if features is not None and model is not None and features != model:
        raise UsageError(f"the model is given twice ({features} and --model {model}): give it once")
    r = do_export_matcher(model_path(model or features), out, max_disp=max_disp, overwrite=overwrite,
                          postprocess=postprocess.value, preset=preset.value, check=check)
    what = "winner-take-all" if r.postprocess == "none" else f"full pipeline, preset {r.preset}"
    typer.echo(f"wrote {r.path} ({what}, max disparity {r.max_disp}) and {r.sidecar}: inputs left, right uint8 "
               "(H, W, C) gray/RGB/RGBA -> disparity float32 (H, W)"
               + ("" if r.postprocess == "none" else ", valid uint8 (H, W), confidence float32 (H, W)"))
    if check:
        typer.echo(f"checked against the engine on a synthetic pair: {check_line(r)}")


# ------------------------------------------------------------------------------------------------ quantize, models
@app.command()
@_user_errors
def quantize(
    model: Annotated[Path, typer.Argument(help="Float32 feature model written by `stereodeploy export`.",
                                          metavar="MODEL", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="int8 ONNX file (default: <MODEL stem>_int8.onnx).")] = None,
    calibration: Annotated[list[Path] | None, typer.Option(
        "--calibration", metavar="PATH", help="Image or dataset folder to calibrate on (repeatable; default: "
                                              "scikit-image's Motorcycle pair).")] = None,
    overwrite: Overwrite = False,
    progress: Progress = True,
) -> None:
    """Quantise an exported feature model to int8 (onnxruntime static QDQ), calibrated on real images."""
    from stereodeploy.deploy.quantize import quantize_file, summary

    typer.echo(summary(quantize_file(model_path(model), out, calibration or [], overwrite=overwrite,
                                     progress=progress)))


@app.command()
@_user_errors
def models() -> None:
    """The shipped models: names for --model, source framework, precision, max disparity, training data, path."""
    import shutil

    from stereodeploy.engine.shipped import list_models
    from stereodeploy.study.report import models_table

    width = shutil.get_terminal_size((80, 24)).columns if sys.stdout.isatty() else 80  # 80 in a pipe or file
    typer.echo(models_table(list_models(), width=width), nl=False)


# ------------------------------------------------------------------------------------------------ demo
@app.command()
@_user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the picture.")] = Path("demo"),
    model: Annotated[Path | None, typer.Option(help="ONNX model (default: the shipped model).")] = None,
    postprocess: PostprocessOption = Postprocess.full,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing picture.")] = False,
) -> None:
    """Run the shipped model on the Middlebury Motorcycle pair bundled with scikit-image and score it."""
    from stereodeploy.cli.demo import run_demo

    r = run_demo(model_path(model), out, postprocess=postprocess.value, overwrite=overwrite)
    stages = ", ".join(f"{k} {v:.3f} s" for k, v in r.timings.items() if k != "total")
    typer.echo(f"Motorcycle (741x500, max disparity 70), postprocess {postprocess.value}: "
               f">=3 px error {r.error_rate:.1f}% in {r.seconds:.2f} s ({stages})")
    typer.echo(f"left | disparity | error map (blue exact ... yellow < 3 px off, orange 3-6 px, red >= 6 px or "
               f"none, black no ground truth): {r.image}")


@app.command("serve-demo")
@_user_errors
def serve_demo(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8000,
    model: Annotated[Path | None, typer.Option(help="Matcher ONNX file to offer (default: the page's own).")] = None,
) -> None:
    """Serve the browser demo (examples/web) on localhost with the headers that wasm threads need."""
    from stereodeploy.deploy.serve import serve_demo as do_serve

    do_serve(port=port, model=model, announce=typer.echo)


# ------------------------------------------------------------------------------------------------ synth, adapt
@app.command()
@_user_errors
def synth(
    images: Annotated[list[Path], typer.Argument(help="Photos, or folders of photos (searched recursively).",
                                                 metavar="IMAGES...", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Folder for the pairs (one MiddEval3 scene folder each).",
                                      show_default=False)],
    count: Annotated[int, typer.Option(help="Number of pairs.")] = 10,
    size: Annotated[str, typer.Option(help="WIDTHxHEIGHT of each pair.")] = "384x288",
    max_disp: Annotated[int, typer.Option("--max-disp", help="Largest disparity of any pair.")] = 64,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed and images give the same pairs.")] = 0,
    realism: Annotated[bool, typer.Option(help="Camera differences between views: gain, gamma, white balance, "
                                               "blur, noise, JPEG.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace existing pairs.")] = False,
) -> None:
    """Make rectified stereo pairs with exact disparity from single photos (MiddEval3 layout, trainable as is)."""
    from stereodeploy.data.synth import SynthConfig, make_dataset

    width, sep, height = size.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise UsageError(f"--size {size!r}: give WIDTHxHEIGHT, e.g. --size 384x288")
    cfg = SynthConfig(width=int(width), height=int(height), max_disp=max_disp, realism=realism)
    written = make_dataset(images, out, count, cfg, seed=seed, overwrite=overwrite)
    typer.echo(f"wrote {len(written)} pairs to {out} (im0.png, im1.png, disp0GT.pfm, mask0nocc.png, calib.txt); "
               f"train on them with `stereodeploy train {DEFAULT} --data {out} --out RUN`")


@app.command()
@_user_errors
def adapt(
    model: Annotated[Path, typer.Argument(help="Model to adapt: an exported .onnx file or a run directory.",
                                          metavar="RUN_OR_MODEL", show_default=False)],
    data: Annotated[list[Path], typer.Option("--data", help="Folder of your unlabelled pairs (KITTI or Middlebury "
                                                            "layout; repeatable). Ground truth, if any, is not read.",
                                             show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Run directory to create; export it like any run.",
                                      show_default=False)],
    framework: Annotated[Framework, typer.Option(help="Trainer to fine-tune with.")] = Framework[DEFAULT],
    fmt: FormatOption = None,
    max_disp: Annotated[int | None, typer.Option("--max-disp", help="Disparity range (default: the data's ndisp, "
                                                                    "else the model's).")] = None,
    synth: Annotated[int, typer.Option(help="Synthetic pairs from your left images to mix in (0: none).")] = 0,
    epochs: Epochs = 3,
    max_examples: Annotated[int, typer.Option(help="Examples per epoch.")] = 100_000,
    lr: LearningRate = 0.001,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    progress: Progress = True,
    threads: Threads = None,
) -> None:
    """Fine-tune a model on your own unlabelled pairs, learning only from the pixels it is confident about."""
    from dataclasses import replace

    from stereodeploy.train.adapt import ADAPT_TRAIN
    from stereodeploy.train.adapt import adapt as do_adapt

    if epochs < 1 or max_examples < 1:
        raise UsageError("--epochs and --max-examples must be at least 1")
    cfg = replace(ADAPT_TRAIN, epochs=epochs, max_examples=max_examples, lr=lr,
                  lr_drops=(epochs - 1,) if epochs > 1 else ())
    s = do_adapt(model, data, out, framework=framework.value, fmt=fmt.value if fmt else None, max_disp=max_disp,
                 synth=synth, cfg=cfg, overwrite=overwrite, progress=progress, threads=threads)
    typer.echo(f"adapted on {100 * s['pseudo_labels']['fraction']:.1f} % confident pixels of "
               f"{len(s['pseudo_labels']['pairs'])} pairs into {out}; export it with "
               f"`stereodeploy export {out} --out MODEL.onnx`")


register_eval(app)


def main() -> None:
    import logging

    from stereodeploy.util.memory import skip_huge_page_advice

    skip_huge_page_advice()  # seconds of page-fault compaction per large volume otherwise (see there)
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    logging.getLogger("stereodeploy").setLevel(logging.INFO)
    app()


if __name__ == "__main__":
    sys.exit(main())
