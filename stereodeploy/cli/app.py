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
    network_or_usage_error,
    value,
)
from stereodeploy.cli.options import user_errors as _user_errors
from stereodeploy.cli.study import register as register_eval
from stereodeploy.errors import UsageError, UserError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Train, export and deploy the MC-CNN fast stereo matcher in PyTorch, TensorFlow and ONNX.",
)
train_app = typer.Typer(no_args_is_help=True, help="Train MC-CNN fast with PyTorch or TensorFlow.")
app.add_typer(train_app, name="train")


@app.callback()
def _root(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Show the frameworks' own start-up logs (TensorFlow's absl and oneDNN lines).")] = False,
          ) -> None:
    from stereodeploy.util.quiet import quiet_tensorflow

    quiet_tensorflow(verbose)


def model_path(model: Path | None) -> Path:
    """The model a --model option names (a path or a shipped model's name), or the default model."""
    from stereodeploy.engine.shipped import default_model_path, resolve_model

    return default_model_path() if model is None else resolve_model(model)


# ------------------------------------------------------------------------------------------------ train
def _train(framework: Framework, data: list[Path], out: Path, fmt: DataFormat | None, exclude: list[str],
           val: list[Path], epochs: int, batch_size: int, lr: float, momentum: float, lr_drop: list[int],
           max_examples: int | None, seed: int, device: Device, layers: int, maps: int, kernel: int,
           augment: bool, checkpoint_every: int, checkpoint_minutes: float, max_disp: int, resume: bool,
           overwrite: bool, progress: bool, threads: int | None, nproc_per_node: int | None = None) -> None:
    from stereodeploy.config import SamplerConfig, TrainConfig
    from stereodeploy.train.api import train_from_paths
    from stereodeploy.train.distributed import process_for
    from stereodeploy.train.loop import TrainingInterrupted

    proc = process_for(framework.value)
    if nproc_per_node is not None:
        _relaunch_under_torchrun(framework, nproc_per_node, proc.distributed)
    network = network_or_usage_error(layers, maps, kernel)
    try:
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, lr_drops=tuple(lr_drop),
                          max_examples=max_examples, seed=seed, checkpoint_every=checkpoint_every,
                          checkpoint_minutes=checkpoint_minutes, device=device.value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        summary = train_from_paths(framework.value, data, out, fmt.value if fmt else None, exclude, val,
                                   network=network, sampler=SamplerConfig(seed=seed, augment=augment), cfg=cfg,
                                   max_disp=max_disp, resume=resume, overwrite=overwrite,
                                   progress=progress, device=device.value, threads=threads)
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
    if not summary["epochs"]:
        raise UserError(f"{out}: nothing was trained (no epoch completed)")
    typer.echo(
        f"{framework.value}: {summary['epochs']} epochs in {summary['total_seconds']:.1f} s "
        f"(epoch {summary['mean_epoch_seconds']:.2f} s, step {1000 * summary['mean_step_seconds']:.2f} ms, "
        f"{summary['examples_per_second']:.0f} examples/s), patch accuracy {100 * summary['final_accuracy']:.1f}% -> {out}"
    )


def _relaunch_under_torchrun(framework: Framework, nproc: int, distributed: bool) -> None:
    """``--nproc-per-node N``: replace this process by ``torchrun --standalone --nproc-per-node N`` running the same
    command without the flag (signals then reach torchrun, which forwards them to its processes)."""
    import os

    if framework is not Framework.torch:
        raise UsageError("--nproc-per-node starts PyTorch processes: for TensorFlow start one process per TF_CONFIG task")
    if nproc < 1:
        raise UsageError(f"--nproc-per-node must be at least 1, got {nproc}")
    if distributed:
        raise UsageError("--nproc-per-node is given, but this process already runs under torchrun: drop the option")
    args = sys.argv[1:]
    if args[:2] != ["train", framework.value]:
        raise UsageError("--nproc-per-node works from the command line only: launch with torchrun instead")
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            kept.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "stereodeploy", *kept]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def _make_train_command(framework: Framework):
    @_user_errors
    def command(
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
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")] = False,
        overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
        progress: Progress = True,
        threads: Threads = None,
        nproc_per_node: Annotated[int | None, typer.Option(
            help="PyTorch: run as N processes on this machine (torchrun --standalone); several nodes: use "
                 "torchrun (docs/training.md).")] = None,
    ) -> None:
        _train(framework, data, out, fmt, exclude, val, epochs, batch_size, lr, momentum, lr_drop, max_examples, seed,
               device, layers, maps, kernel, augment, checkpoint_every, checkpoint_minutes, max_disp, resume,
               overwrite, progress, threads, nproc_per_node)

    command.__doc__ = (f"Train MC-CNN fast with {'PyTorch' if framework is Framework.torch else 'TensorFlow'}. "
                       f"Several processes: {'torchrun --nproc-per-node N -m stereodeploy train torch' if framework is Framework.torch else 'one process per TF_CONFIG task'} "
                       "(see docs/training.md).")
    return command


train_app.command("torch")(_make_train_command(Framework.torch))
train_app.command("tf")(_make_train_command(Framework.tf))


# ------------------------------------------------------------------------------------------------ export
@app.command()
@_user_errors
def export(
    source: Annotated[Path, typer.Argument(help="Run directory or checkpoint.npz (PyTorch or TensorFlow).",
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
        typer.echo(f"wrote {q.path}: int8 (float32: {', '.join(q.excluded)}), calibrated on {q.crops} crops of "
                   f"{q.images} images; cosine of its features to float32: mean {q.cosine_mean:.4f}, "
                   f"1st percentile {q.cosine_p01:.4f}")


# ------------------------------------------------------------------------------------------------ infer
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
    max_disp: Annotated[int | None, typer.Option(help="Max disparity (default: the model's).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("."),
    postprocess: PostprocessOption = Postprocess.none,
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
    answer), <name>_disp_color.png and <name>_disp.json (model, settings, timings). <name> is the left image's
    stem, or the frame name for a dataset folder.

    Every output path is checked before any work starts; an image that cannot be matched stops the run there.
    """
    from stereodeploy.data.datasets import DEFAULT_PRESET
    from stereodeploy.engine.inference import detected_preset, infer_pairs, resolve_pairs
    from stereodeploy.engine.matcher import StereoMatcher

    if threads is not None:
        from stereodeploy.util.threads import configure_threads

        configure_threads(threads)  # before the engine's kernels load
    inputs = list(inputs or [])
    todo = resolve_pairs(inputs, pairs, value(fmt))
    sgm_preset = value(preset) or detected_preset(todo, inputs, value(fmt)) or DEFAULT_PRESET
    matcher = StereoMatcher.from_file(model_path(model), max_disp=max_disp, postprocess=postprocess.value,
                                      backend=value(backend), provider=provider.value, sgm_preset=sgm_preset,
                                      threads=threads)
    if postprocess is Postprocess.full:
        typer.echo(f"SGM preset {sgm_preset}" + ("" if preset else " (from the data, else the default; --preset "
                                                                    "chooses another)"))

    def report(done) -> None:
        t = done.result.timings
        typer.echo(f"{done.pair.name}: {t['total']:.3f} s (features {t['features']:.3f} s, matching "
                   f"{t['matching']:.3f} s) -> {', '.join(map(str, done.files))}")

    infer_pairs(todo, matcher, out, overwrite=overwrite, on_pair=report)


@app.command("export-matcher")
@_user_errors
def export_matcher(
    features: Annotated[Path | None, typer.Argument(
        help="Feature model written by `stereodeploy export`, or a shipped model's name (default: the shipped model).",
        metavar="[MODEL]", show_default=False)] = None,
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

    r = do_export_matcher(model_path(features), out, max_disp=max_disp, overwrite=overwrite,
                          postprocess=postprocess.value, preset=preset.value, check=check)
    what = "winner-take-all" if r.postprocess == "none" else f"full pipeline, preset {r.preset}"
    typer.echo(f"wrote {r.path} ({what}, max disparity {r.max_disp}) and {r.sidecar}: inputs left, right uint8 "
               "(H, W, C) gray/RGB/RGBA -> disparity float32 (H, W)")
    if check:
        typer.echo(f"same as the engine on {r.checked_pixels - r.differing_pixels} of {r.checked_pixels} check "
                   f"pixels ({'the rest are ties' if r.postprocess == 'none' else 'the rest differ by more than 0.5 px'})")


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
    from stereodeploy.engine.shipped import list_models
    from stereodeploy.study.report import models_table

    typer.echo(models_table(list_models()), nl=False)


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
    typer.echo(f"left | disparity | error map (blue good ... red >= 3 px off): {r.image}")


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
               f"train on them with `stereodeploy train torch --data {out} --out RUN`")


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
    framework: Annotated[Framework, typer.Option(help="Trainer to fine-tune with.")] = Framework.torch,
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

    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    logging.getLogger("stereodeploy").setLevel(logging.INFO)
    app()


if __name__ == "__main__":
    sys.exit(main())
