"""`stereodeploy evaluate` and `stereodeploy compare`, added to the main app by :func:`register`.

Each command parses its options and calls one library function, :func:`stereodeploy.study.evaluate.evaluate_models` or
:func:`stereodeploy.study.compare.compare`; the tables come from :mod:`stereodeploy.study.report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stereodeploy.cli.options import (
    BackendName,
    BackendOption,
    BatchSize,
    DataFormat,
    Device,
    DeviceOption,
    Epochs,
    FormatOption,
    Kernel,
    Layers,
    LearningRate,
    LrDrops,
    Maps,
    MaxExamples,
    Momentum,
    Overwrite,
    Postprocess,
    PostprocessOption,
    Progress,
    ProviderOption,
    Seed,
    Threads,
    network_or_usage_error,
    user_errors,
    value,
)
from stereodeploy.errors import UsageError


def evaluate_command(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (KITTI 2012/2015 or Middlebury layout).")],
    model: Annotated[list[Path] | None, typer.Option(
        "--model", metavar="MODEL", help="ONNX file, shipped model name, or run directory / checkpoint with a native "
                                         "--backend; repeatable. Default: the shipped model.")] = None,
    fmt: FormatOption = None,
    backend: BackendOption = BackendName.onnx,
    postprocess: PostprocessOption = Postprocess.none,
    max_disp: Annotated[int | None, typer.Option(help="Max disparity (default: the frame's ndisp, else the model's).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON.")] = None,
    error_maps: Annotated[Path | None, typer.Option(help="Folder for an error-map PNG per frame.")] = None,
    frame: Annotated[list[str] | None, typer.Option("--frame", metavar="NAME", help="Evaluate only this frame / scene (repeatable).")] = None,
    provider: ProviderOption = Device.cpu,
    overwrite: Overwrite = False,
    progress: Progress = True,
    threads: Threads = None,
) -> None:
    """Error rates (>=3 px as the study, KITTI >3 px and D1 on noc/occ), density and time per frame and on average."""
    from stereodeploy.engine.shipped import resolve_model
    from stereodeploy.study.evaluate import evaluate_models
    from stereodeploy.study.report import fmt as fmt_num
    from stereodeploy.study.report import render_eval_table

    def show(result) -> None:
        typer.echo(render_eval_table(result), nl=False)
        typer.echo(f"{result.model}: average error {fmt_num(result.average_error_rate)}% over {len(result.images)} "
                   f"frames, {fmt_num(result.mean_seconds, 3)} s per depth map ({result.backend}, post-processing "
                   f"{result.postprocess})")

    evaluate_models(data, [resolve_model(m) for m in model or []], fmt=value(fmt), backend=value(backend), postprocess=value(postprocess),
                    max_disp=max_disp, json_out=json_out, error_maps=error_maps, frames=frame or [],
                    provider=value(provider), overwrite=overwrite, progress=progress, on_result=show, threads=threads)
    if json_out is not None:
        typer.echo(f"wrote {json_out}")


def compare_command(
    train_data: Annotated[list[Path] | None, typer.Option("--train-data", metavar="PATH", help="Training dataset folder (repeatable).")] = None,
    eval_data: Annotated[Path | None, typer.Option("--eval-data", help="Evaluation dataset folder.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Report folder to create.")] = Path("report"),
    epochs: Epochs = 14,
    max_examples: MaxExamples = None,
    device: DeviceOption = Device.cpu,
    hold_out: Annotated[list[str] | None, typer.Option(
        "--hold-out", metavar="NAME", help="Frame / scene left out of training and evaluated (repeatable; default: evaluate all "
                           "of --eval-data).")] = None,
    train_format: Annotated[DataFormat | None, typer.Option(help="Layout of --train-data; detected if omitted.")] = None,
    eval_format: Annotated[DataFormat | None, typer.Option(help="Layout of --eval-data; detected if omitted.")] = None,
    batch_size: BatchSize = 128,
    lr: LearningRate = 0.002,
    momentum: Momentum = 0.9,
    lr_drop: LrDrops = [12],  # noqa: B006 - typer reads the default, never mutates it
    seed: Seed = 0,
    layers: Layers = 4,
    maps: Maps = 64,
    kernel: Kernel = 3,
    max_disp: Annotated[int | None, typer.Option(help="Max disparity (default: each frame's ndisp, else 128).")] = None,
    validate: Annotated[bool, typer.Option(help="Log the evaluation error after every epoch (untimed).")] = True,
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty --out.")] = False,
    progress: Progress = True,
    threads: Threads = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the comparison in --out that stopped (Ctrl-C, a kill), with the settings it started with: "
             "finished trainings are kept, a stopped one continues from its checkpoint.")] = False,
) -> None:
    """Train PyTorch and TensorFlow alike, export both to ONNX, evaluate all four runtimes, write a report.

    Before training it measures both frameworks' steps interleaved and estimates the whole run."""
    from stereodeploy.study.compare import compare, resume_compare
    from stereodeploy.study.report import comparison_text

    if resume:
        report = resume_compare(out, progress=progress)
        typer.echo(comparison_text(report), nl=False)
        typer.echo(f"wrote {out / 'report.md'} and {out / 'report.json'}")
        return
    if not train_data or eval_data is None:
        raise UsageError("give --train-data and --eval-data (or --resume --out FOLDER to continue a comparison)")
    report = compare(list(train_data), eval_data, out, epochs=epochs, max_examples=max_examples,
                     device=value(device), network=network_or_usage_error(layers, maps, kernel), batch_size=batch_size,
                     lr=lr, momentum=momentum, lr_drops=tuple(lr_drop), seed=seed, hold_out=hold_out or [],
                     train_format=value(train_format), eval_format=value(eval_format), max_disp=max_disp,
                     validate=validate, progress=progress, overwrite=overwrite, threads=threads)
    typer.echo(comparison_text(report), nl=False)
    typer.echo(f"wrote {out / 'report.md'} and {out / 'report.json'}")


def register(app: typer.Typer) -> None:
    """Add the evaluate and compare commands to ``app``."""
    app.command("evaluate")(user_errors(evaluate_command))
    app.command("compare")(user_errors(compare_command))
