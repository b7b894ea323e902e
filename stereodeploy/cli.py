"""The `stereodeploy` command line. Each command parses options, builds a config and calls one library function.

User mistakes (:class:`~stereodeploy.errors.UserError`) end with one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from stereodeploy.errors import UsageError, UserError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="Train, export and deploy the MC-CNN fast stereo matcher in PyTorch, TensorFlow and ONNX.",
)
train_app = typer.Typer(no_args_is_help=True, help="Train MC-CNN fast with PyTorch or TensorFlow.")
app.add_typer(train_app, name="train")


def _user_errors(func: Callable) -> Callable:
    """Turn a UserError into one line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


class Framework(str, Enum):
    torch = "torch"
    tf = "tf"


class Postprocess(str, Enum):
    none = "none"
    full = "full"


class BackendName(str, Enum):
    onnx = "onnx"
    torch = "torch"
    tf = "tf"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class DataFormat(str, Enum):
    kitti2012 = "kitti2012"
    kitti2015 = "kitti2015"
    middlebury = "middlebury"


def default_model() -> Path:
    from stereodeploy.models_dir import default_model_path

    return default_model_path()


# ------------------------------------------------------------------------------------------------ train
def _train(framework: Framework, data: list[Path], out: Path, fmt: Optional[DataFormat], exclude: list[str],
           val: list[Path], epochs: int, batch_size: int, lr: float, momentum: float, lr_drop: list[int],
           max_examples: Optional[int], seed: int, device: Device, layers: int, maps: int, kernel: int,
           augment: bool, checkpoint_every: int, max_disp: int, resume: bool, overwrite: bool, progress: bool) -> None:
    from stereodeploy.config import NetworkConfig, SamplerConfig, TrainConfig
    from stereodeploy.train.api import load_samples, train_run

    saved_data: dict = {}
    if resume:
        import json

        config_path = out / "config.json"
        saved_data = json.loads(config_path.read_text()).get("data", {}) if config_path.is_file() else {}
        data = data or [Path(p) for p in saved_data.get("sources", [])]
        exclude = exclude or list(saved_data.get("exclude", []))
        if fmt is None and saved_data.get("format"):
            fmt = DataFormat(saved_data["format"])
        if not data:
            raise UsageError(f"cannot resume {out}: no config.json with the data sources there; give --data again")
    elif not data:
        raise UsageError("give at least one --data folder (KITTI 2012/2015 or Middlebury layout)")
    if max_examples is not None and max_examples < 1 or checkpoint_every < 0:
        raise UsageError("--max-examples must be at least 1 and --checkpoint-every at least 0")
    try:
        network = NetworkConfig(layers=layers, maps=maps, kernel=kernel)
        cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, lr_drops=tuple(lr_drop),
                          max_examples=max_examples, seed=seed, checkpoint_every=checkpoint_every, device=device.value)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if epochs < 1:
        raise UsageError("--epochs must be at least 1")
    samples = load_samples(data, fmt.value if fmt else None, exclude)
    from stereodeploy.datasets import list_frames

    unknown = sorted(set(exclude) - {f.name for p in data for f in list_frames(p, fmt.value if fmt else None)})
    if unknown:
        raise UsageError(f"--exclude names no frame of the data: {', '.join(unknown)} (names are scene folders or "
                         "KITTI frame names such as 000005_10)")
    validation = [s for p in val for s in load_samples([p], None) if s.disp is not None]
    summary = train_run(framework.value, samples, out, network=network, sampler=SamplerConfig(seed=seed, augment=augment),
                        cfg=cfg, validation=validation, max_disp=max_disp, data_sources=[str(p) for p in data],
                        progress=progress, resume=resume, overwrite=overwrite, device=device.value,
                        data_options={"exclude": list(exclude), "format": fmt.value if fmt else None})
    if not summary["epochs"]:
        raise UserError(f"{out}: nothing was trained (no epoch completed)")
    typer.echo(
        f"{framework.value}: {summary['epochs']} epochs in {summary['total_seconds']:.1f} s "
        f"(epoch {summary['mean_epoch_seconds']:.2f} s, step {1000 * summary['mean_step_seconds']:.2f} ms, "
        f"{summary['examples_per_second']:.0f} examples/s), patch accuracy {100 * summary['final_accuracy']:.1f}% -> {out}"
    )


def _make_train_command(framework: Framework):
    @_user_errors
    def command(
        data: Annotated[list[Path], typer.Option("--data", help="Dataset folder (repeatable).")] = [],  # noqa: B006
        out: Annotated[Path, typer.Option("--out", help="Run directory to create (or resume).")] = Path("runs/run"),
        fmt: Annotated[Optional[DataFormat], typer.Option("--format", help="Dataset layout; detected if omitted.")] = None,
        exclude: Annotated[list[str], typer.Option("--exclude", help="Frame/scene name to leave out (repeatable).")] = [],  # noqa: B006
        val: Annotated[list[Path], typer.Option("--val", help="Validation dataset: >=3 px error after each epoch.")] = [],  # noqa: B006
        epochs: Annotated[int, typer.Option(help="Epochs.")] = 14,
        batch_size: Annotated[int, typer.Option(help="Pairs per batch (128 = 64 positive + 64 negative).")] = 128,
        lr: Annotated[float, typer.Option(help="Learning rate.")] = 0.002,
        momentum: Annotated[float, typer.Option(help="SGD momentum.")] = 0.9,
        lr_drop: Annotated[list[int], typer.Option("--lr-drop", help="Epoch at which lr is multiplied by 0.1 (repeatable).")] = [12],  # noqa: B006
        max_examples: Annotated[Optional[int], typer.Option(help="Examples per epoch (default: all).")] = None,
        seed: Annotated[int, typer.Option(help="Seed of initial weights and sampler.")] = 0,
        device: Annotated[Device, typer.Option(help="cpu or cuda.")] = Device.cpu,
        layers: Annotated[int, typer.Option(help="Convolution layers.")] = 4,
        maps: Annotated[int, typer.Option(help="Feature maps per layer.")] = 64,
        kernel: Annotated[int, typer.Option(help="Kernel size.")] = 3,
        augment: Annotated[bool, typer.Option(help="MC-CNN data augmentation.")] = False,
        checkpoint_every: Annotated[int, typer.Option(help="Also checkpoint every N steps (0: epoch ends only).")] = 0,
        max_disp: Annotated[int, typer.Option(help="Max disparity for --val.")] = 64,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out where it stopped.")] = False,
        overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
        progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    ) -> None:
        _train(framework, data, out, fmt, exclude, val, epochs, batch_size, lr, momentum, lr_drop, max_examples, seed,
               device, layers, maps, kernel, augment, checkpoint_every, max_disp, resume, overwrite, progress)

    command.__doc__ = f"Train MC-CNN fast with {'PyTorch' if framework is Framework.torch else 'TensorFlow'}."
    return command


train_app.command("torch")(_make_train_command(Framework.torch))
train_app.command("tf")(_make_train_command(Framework.tf))


# ------------------------------------------------------------------------------------------------ export
class Quantization(str, Enum):
    int8 = "int8"


@app.command()
@_user_errors
def export(
    source: Annotated[Path, typer.Argument(help="Run directory or checkpoint.npz (PyTorch or TensorFlow).")],
    out: Annotated[Path, typer.Option("--out", help="ONNX file to write.")] = Path("model.onnx"),
    max_disp: Annotated[int, typer.Option(help="Default max disparity stored in the model.")] = 128,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
    quantize: Annotated[Optional[Quantization], typer.Option(
        help="Also write <out stem>_int8.onnx next to --out: onnxruntime static int8, calibrated on --calibration.")] = None,
    calibration: Annotated[list[Path], typer.Option(
        "--calibration", help="Image or dataset folder to calibrate --quantize on (repeatable; default: "
                              "scikit-image's Motorcycle pair).")] = [],  # noqa: B006
) -> None:
    """Export a trained network to ONNX (features model) and check it against the native network."""
    from stereodeploy.export import export as do_export
    from stereodeploy.io import ensure_writable

    if calibration and quantize is None:
        raise UsageError("--calibration is only used with --quantize int8")
    int8_out = None
    if quantize is not None:
        from stereodeploy.quantize import check_calibration, int8_path

        int8_out = ensure_writable(int8_path(out), overwrite)  # refuse before the export, not after
        check_calibration(calibration)
    report = do_export(source, out, max_disp=max_disp, overwrite=overwrite)
    typer.echo(f"wrote {report.path} from {report.meta.source_framework}; largest difference against native "
               f"{report.meta.source_framework} on a {report.input_shape[-1]}x{report.input_shape[-2]} image: "
               f"{report.max_abs_diff:.2e}")
    if int8_out is not None:
        from stereodeploy.quantize import quantize_model

        q = quantize_model(report.path, int8_out, calibration, overwrite=overwrite)
        typer.echo(f"wrote {q.path}: int8 (float32: {', '.join(q.excluded)}), calibrated on {q.crops} crops of "
                   f"{q.images} images; cosine of its features to float32: mean {q.cosine_mean:.4f}, "
                   f"1st percentile {q.cosine_p01:.4f}")


# ------------------------------------------------------------------------------------------------ infer
def _read_pairs_file(path: Path) -> list[tuple[str, Path, Path]]:
    """(name, left, right) from a text file of 'left right' lines; relative paths are taken from its folder."""
    if not path.is_file():
        raise UserError(f"pairs file {path} not found: give a text file with one 'left right' pair per line")
    pairs = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 2:
            raise UsageError(f"{path}:{number}: expected 'left right' (two paths without spaces), got {line[:60]!r}")
        left, right = (p if p.is_absolute() else path.parent / p for p in map(Path, fields))
        pairs.append((left.stem, left, right))
    if not pairs:
        raise UsageError(f"{path} lists no pairs: write one 'left right' pair per line")
    return pairs


def _pairs_to_infer(inputs: list[Path], pairs_file: Optional[Path]) -> list[tuple[str, Path, Path]]:
    """(output name, left, right) for `infer LEFT RIGHT`, `infer DATASET_DIR` or `infer --pairs FILE`."""
    from stereodeploy.datasets import list_frames

    if pairs_file is not None:
        if inputs:
            raise UsageError("give either images / a dataset folder or --pairs, not both")
        pairs = _read_pairs_file(pairs_file)
    elif len(inputs) == 1 and inputs[0].is_dir():
        pairs = [(f.name, f.left, f.right) for f in list_frames(inputs[0])]
    elif len(inputs) == 2:
        pairs = [(inputs[0].stem, inputs[0], inputs[1])]
    elif len(inputs) == 1:
        raise UsageError(f"{inputs[0]} is not a folder: give LEFT RIGHT images, a dataset folder, or --pairs FILE")
    else:
        raise UsageError("give LEFT RIGHT images, one dataset folder (KITTI or Middlebury layout), or --pairs FILE")
    for _, left, right in pairs:
        for image in (left, right):
            if not image.is_file():
                raise UserError(f"image {image} not found: check the path")
    names = [name for name, _, _ in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"several pairs would write {twice[0]}_disp.png: give left images distinct names, "
                         "or run them into different --out folders")
    return pairs


@app.command()
@_user_errors
def infer(
    inputs: Annotated[Optional[list[Path]], typer.Argument(
        help="LEFT RIGHT images, or one dataset folder (KITTI 2012/2015 or Middlebury layout).",
        metavar="LEFT RIGHT | DATASET", show_default=False)] = None,
    pairs: Annotated[Optional[Path], typer.Option(
        "--pairs", help="Text file, one 'left right' pair per line (relative to the file's folder).")] = None,
    model: Annotated[Optional[Path], typer.Option(help="Model: ONNX file, or a run directory / checkpoint for "
                                                       "--backend torch (default: the shipped model).")] = None,
    max_disp: Annotated[Optional[int], typer.Option(help="Max disparity (default: the model's).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("."),
    postprocess: Annotated[Postprocess, typer.Option(help="none: winner-take-all; full: MC-CNN post-processing.")] = Postprocess.none,
    backend: Annotated[BackendName, typer.Option(help="Feature backend.")] = BackendName.onnx,
    provider: Annotated[Device, typer.Option(help="cpu or cuda (checked as active; no silent fallback).")] = Device.cpu,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
) -> None:
    """Disparity maps of one pair, a dataset folder or a list of pairs, with one model load for all.

    Writes <out>/<name>_disp.png (KITTI uint16) and <name>_disp_color.png per pair; <name> is the left image's stem.

    For a dataset folder <name> is the frame name. Every output path is checked before any work starts; an image that cannot be matched stops the run there.
    """
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.io import colorize, ensure_writable, read_image, write_kitti_disp, write_png

    todo = _pairs_to_infer(list(inputs or []), pairs)
    paths = {name: (out / f"{name}_disp.png", out / f"{name}_disp_color.png") for name, _, _ in todo}
    for disp_path, color_path in paths.values():
        ensure_writable(disp_path, overwrite)
        ensure_writable(color_path, overwrite)
    matcher = StereoMatcher.from_file(model or default_model(), max_disp=max_disp, postprocess=postprocess.value,
                                      backend=backend.value, provider=provider.value)
    for name, left, right in todo:
        result = matcher.match(read_image(left), read_image(right))
        disp_path, color_path = paths[name]
        write_kitti_disp(disp_path, result.disparity, overwrite=overwrite)
        write_png(color_path, colorize(result.disparity, matcher.config.max_disp), overwrite=overwrite)
        t = result.timings
        typer.echo(f"{name}: {t['total']:.3f} s (features {t['features']:.3f} s, matching {t['matching']:.3f} s) "
                   f"-> {disp_path}, {color_path}")


@app.command("export-matcher")
@_user_errors
def export_matcher(
    features: Annotated[Optional[Path], typer.Argument(help="Feature model written by `stereodeploy export` "
                                                             "(default: the shipped model).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Matcher ONNX file to write (and OUT.json beside it).")] = Path("matcher.onnx"),
    max_disp: Annotated[Optional[int], typer.Option(help="Max disparity, fixed in the file (default: the model's).")] = None,
    postprocess: Annotated[Postprocess, typer.Option(help="none: winner-take-all; full: MC-CNN post-processing.")] = Postprocess.full,
    preset: Annotated[str, typer.Option(help="SGM and bilateral settings of the full pipeline: kitti2012, kitti2015 or middlebury.")] = "middlebury",
    check: Annotated[bool, typer.Option(help="Compare the file with the engine on a synthetic pair before writing it.")] = True,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """Write a self-contained ONNX matcher (left, right uint8 images -> disparity) for any onnxruntime binding."""
    from stereodeploy.export_matcher import export_matcher as do_export_matcher

    r = do_export_matcher(features, out, max_disp=max_disp, overwrite=overwrite, postprocess=postprocess.value,
                          preset=preset, check=check)
    what = "winner-take-all" if r.postprocess == "none" else f"full pipeline, preset {r.preset}"
    typer.echo(f"wrote {r.path} ({what}, max disparity {r.max_disp}) and {r.sidecar}: inputs left, right uint8 "
               "(H, W, C) gray/RGB/RGBA -> disparity float32 (H, W)")
    if check:
        typer.echo(f"same as the engine on {r.checked_pixels - r.differing_pixels} of {r.checked_pixels} check "
                   f"pixels ({'the rest are ties' if r.postprocess == 'none' else 'the rest differ by more than 0.5 px'})")


# ------------------------------------------------------------------------------------------------ demo
@app.command()
@_user_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the picture.")] = Path("demo"),
    model: Annotated[Optional[Path], typer.Option(help="ONNX model (default: the shipped model).")] = None,
    postprocess: Annotated[Postprocess, typer.Option(help="none: winner-take-all; full: MC-CNN post-processing.")] = Postprocess.full,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing picture.")] = True,
) -> None:
    """Run the shipped model on the Middlebury Motorcycle pair bundled with scikit-image and score it."""
    from stereodeploy.demo import run_demo

    r = run_demo(model or default_model(), out, postprocess=postprocess.value, overwrite=overwrite)
    stages = ", ".join(f"{k} {v:.3f} s" for k, v in r.timings.items() if k != "total")
    typer.echo(f"Motorcycle (741x500, max disparity 70), postprocess {postprocess.value}: "
               f">=3 px error {r.error_rate:.1f}% in {r.seconds:.2f} s ({stages})")
    typer.echo(f"left | disparity | error map (blue good ... red >= 3 px off): {r.image}")


@app.command("serve-demo")
@_user_errors
def serve_demo(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8000,
    model: Annotated[Optional[Path], typer.Option(help="Matcher ONNX file to offer (default: the page's own).")] = None,
) -> None:
    """Serve the browser demo (examples/web) on localhost with the headers that wasm threads need."""
    from stereodeploy.serve import serve_demo as do_serve

    do_serve(port=port, model=model, announce=typer.echo)


# evaluate and compare live in their own module
from stereodeploy.cli_eval import register as _register_eval  # noqa: E402

_register_eval(app)


def main() -> None:
    import logging

    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    logging.getLogger("stereodeploy").setLevel(logging.INFO)
    app()


if __name__ == "__main__":
    sys.exit(main())
