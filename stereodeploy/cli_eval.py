"""`stereodeploy evaluate` and `stereodeploy compare` (registered on the main app by :func:`register`).

Each command parses its options and calls one library function: :func:`stereodeploy.evaluate.evaluate` per model,
or :func:`stereodeploy.compare.compare`; tables and files come from :mod:`stereodeploy.report`.
"""

import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from stereodeploy.errors import UsageError, UserError


def _select_frames(samples: list[Any], frames: list[str], where: Path) -> list[Any]:
    if not frames:
        return samples
    names = {s.name for s in samples}
    missing = [f for f in frames if f not in names]
    if missing:
        raise UserError(f"frame(s) {', '.join(missing)} not found in {where}: check the names "
                        f"(found {', '.join(sorted(names)[:8])}{', ...' if len(names) > 8 else ''})")
    return [s for s in samples if s.name in set(frames)]


def _error_map_dirs(root: Path | None, models: list[Path]) -> list[Path | None]:
    """One folder per model: ``root`` itself for one model, ``root/<model stem>`` (made unique) for several."""
    if root is None:
        return [None] * len(models)
    if len(models) == 1:
        return [root]
    dirs, seen = [], set()
    for i, m in enumerate(models):
        name = m.stem or m.name or f"model{i}"
        if name in seen:
            name = f"{name}-{i}"
        seen.add(name)
        dirs.append(root / name)
    return dirs


def run_evaluate(data: Path, models: list[Path], fmt: str | None, backend: str, postprocess: str,
                 max_disp: int | None, json_out: Path | None, error_maps: Path | None, frames: list[str],
                 provider: str, overwrite: bool, progress: bool) -> list[Any]:
    """What `stereodeploy evaluate` does, returning the :class:`~stereodeploy.evaluate.EvalResult` per model."""
    from rich.console import Console

    from stereodeploy.datasets import detect_format, load_dataset
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.evaluate import evaluate
    from stereodeploy.io import ensure_writable
    from stereodeploy.report import eval_table, fmt as fmt_num, write_json

    if json_out is not None:
        ensure_writable(json_out, overwrite)
    if not models:
        from stereodeploy.models_dir import default_model_path

        models = [default_model_path()]
    fmt = fmt or detect_format(data)
    samples = _select_frames(load_dataset(data, fmt), frames, data)
    console = Console()
    results = []
    for model, maps in zip(models, _error_map_dirs(error_maps, models)):
        matcher = StereoMatcher.from_file(model, max_disp=max_disp, postprocess=postprocess, backend=backend,
                                          provider=provider, sgm_preset=fmt)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = evaluate(samples, matcher, model=str(model), max_disp=max_disp, error_maps=maps,
                              overwrite=overwrite, progress=progress)
        if not results:
            for w in caught:
                typer.echo(f"warning: {w.message}", err=True)
        results.append(result)
        console.print(eval_table(result))
        typer.echo(f"{model}: average error {fmt_num(result.average_error_rate)}% over {len(result.images)} frames, "
                   f"{fmt_num(result.mean_seconds, 3)} s per depth map ({result.backend}, post-processing "
                   f"{result.postprocess})")
    if json_out is not None:
        dicts = [{"dataset": str(data), "format": fmt, **r.to_dict()} for r in results]
        write_json(json_out, dicts[0] if len(dicts) == 1 else {"dataset": str(data), "format": fmt, "results": dicts},
                   overwrite=overwrite)
        typer.echo(f"wrote {json_out}")
    return results


def register(app: typer.Typer) -> None:
    """Add the evaluate and compare commands to ``app``."""
    from stereodeploy.cli import BackendName, DataFormat, Device, Postprocess, _user_errors

    @app.command("evaluate")
    @_user_errors
    def evaluate_command(
        data: Annotated[Path, typer.Option("--data", help="Dataset folder (KITTI 2012/2015 or Middlebury layout).")],
        model: Annotated[list[Path], typer.Option(
            "--model", help="ONNX file (or run directory / checkpoint with --backend torch|tf); repeatable. "
                            "Default: the shipped model.")] = [],  # noqa: B006
        fmt: Annotated[Optional[DataFormat], typer.Option("--format", help="Dataset layout; detected if omitted.")] = None,
        backend: Annotated[BackendName, typer.Option(help="Feature backend.")] = BackendName.onnx,
        postprocess: Annotated[Postprocess, typer.Option(help="none: winner-take-all; full: MC-CNN post-processing.")] = Postprocess.none,
        max_disp: Annotated[Optional[int], typer.Option(help="Max disparity (default: the frame's ndisp, else the model's).")] = None,
        json_out: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON.")] = None,
        error_maps: Annotated[Optional[Path], typer.Option(help="Folder for an error-map PNG per frame.")] = None,
        frame: Annotated[list[str], typer.Option("--frame", help="Evaluate only this frame / scene (repeatable).")] = [],  # noqa: B006
        provider: Annotated[Device, typer.Option(help="cpu or cuda.")] = Device.cpu,
        overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    ) -> None:
        """Error rates (>=3 px as the study, KITTI >3 px and D1 on noc/occ), density and time per frame and on average."""
        run_evaluate(data, list(model), fmt.value if fmt else None, backend.value, postprocess.value, max_disp,
                     json_out, error_maps, list(frame), provider.value, overwrite, progress)

    @app.command("compare")
    @_user_errors
    def compare_command(
        train_data: Annotated[list[Path], typer.Option("--train-data", help="Training dataset folder (repeatable).")],
        eval_data: Annotated[Path, typer.Option("--eval-data", help="Evaluation dataset folder.")],
        out: Annotated[Path, typer.Option("--out", help="Report folder to create.")] = Path("report"),
        epochs: Annotated[int, typer.Option(help="Epochs (the study: 14).")] = 14,
        max_examples: Annotated[Optional[int], typer.Option(help="Examples per epoch (default: all).")] = None,
        device: Annotated[Device, typer.Option(help="cpu or cuda, for training and evaluation.")] = Device.cpu,
        hold_out: Annotated[list[str], typer.Option(
            "--hold-out", help="Frame / scene left out of training and evaluated (repeatable; default: evaluate all "
                               "of --eval-data).")] = [],  # noqa: B006
        train_format: Annotated[Optional[DataFormat], typer.Option(help="Layout of --train-data; detected if omitted.")] = None,
        eval_format: Annotated[Optional[DataFormat], typer.Option(help="Layout of --eval-data; detected if omitted.")] = None,
        batch_size: Annotated[int, typer.Option(help="Pairs per batch (128 = 64 positive + 64 negative).")] = 128,
        lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.002,
        momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.9,
        lr_drop: Annotated[list[int], typer.Option("--lr-drop", help="Epoch at which lr is multiplied by 0.1 (repeatable).")] = [12],  # noqa: B006
        seed: Annotated[int, typer.Option(help="Seed of the shared initial weights and of the sampler.")] = 0,
        layers: Annotated[int, typer.Option(help="Convolution layers.")] = 4,
        maps: Annotated[int, typer.Option(help="Feature maps per layer.")] = 64,
        kernel: Annotated[int, typer.Option(help="Kernel size.")] = 3,
        max_disp: Annotated[Optional[int], typer.Option(help="Max disparity (default: each frame's ndisp, else 128).")] = None,
        validate: Annotated[bool, typer.Option(help="Log the evaluation error after every epoch (untimed).")] = True,
        overwrite: Annotated[bool, typer.Option(help="Write into a non-empty --out.")] = False,
        progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    ) -> None:
        """Train PyTorch and TensorFlow alike, export both to ONNX, evaluate all four runtimes, write a report."""
        from rich.console import Console
        from rich.table import Table

        from stereodeploy.compare import compare
        from stereodeploy.config import NetworkConfig
        from stereodeploy.report import fmt as fmt_num, fmt_signed

        try:
            network = NetworkConfig(layers=layers, maps=maps, kernel=kernel)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        report = compare(list(train_data), eval_data, out, epochs=epochs, max_examples=max_examples,
                         device=device.value, network=network, batch_size=batch_size, lr=lr, momentum=momentum,
                         lr_drops=tuple(lr_drop), seed=seed, hold_out=list(hold_out),
                         train_format=train_format.value if train_format else None,
                         eval_format=eval_format.value if eval_format else None, max_disp=max_disp,
                         validate=validate, progress=progress, overwrite=overwrite)
        console = Console()
        t1 = Table(title="Table I: training time")
        for name in ("framework", "total (s)", "mean epoch (s)", "mean step (ms)"):
            t1.add_column(name, justify="left" if name == "framework" else "right")
        for r in report["table1"]["rows"]:
            t1.add_row(r["framework"], fmt_num(r["total_seconds"]), fmt_num(r["mean_epoch_seconds"], 3),
                       fmt_num(1000 * r["mean_step_seconds"], 3))
        diff = report["table1"]["difference_percent"]
        t1.add_row("difference (%)", *(fmt_signed(diff.get(k)) for k in ("total_seconds", "mean_epoch_seconds",
                                                                          "mean_step_seconds")))
        console.print(t1)
        t2 = Table(title=f"Table II: error rate (%) and time per depth map")
        for name in ("runtime", "post-processing", report["table2"]["single_image"], "whole set", "time (s)"):
            t2.add_column(name, justify="left" if name in ("runtime", "post-processing") else "right")
        times = {(r["runtime"], r["postprocess"]): r for r in report["execution_time"]["rows"]}
        for r in report["table2"]["rows"]:
            if not r["available"]:
                t2.add_row(r["runtime"], r["postprocess"], "unavailable", "unavailable", "unavailable")
                continue
            t2.add_row(r["runtime"], r["postprocess"], fmt_num(r["single_image_error"]),
                       fmt_num(r["average_error_rate"]),
                       fmt_num(times[(r["runtime"], r["postprocess"])]["mean_seconds"], 3))
        console.print(t2)
        typer.echo(f"wrote {out / 'report.md'} and {out / 'report.json'}")
