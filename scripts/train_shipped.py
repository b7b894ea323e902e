"""Reproduce the shipped models: train PyTorch and TensorFlow on the same data, export both, score them.

    python scripts/train_shipped.py --data ../shared/data --out runs/shipped [--framework torch|tf|both]

Training data: every Middlebury scene of DATA/middlebury except HELD_OUT, plus the KITTI 2015 frames of
DATA/kitti2015. Both frameworks start from the same seeded weights and see the same batches. The ONNX files go to
OUT/models/ (copy them to models/ to ship them), with an int8 variant of the PyTorch model calibrated on the
training scenes; OUT/scores.json holds the >=3 px errors for the model card.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from stereodeploy.config import DataSpec, NetworkConfig, RunSpec, SamplerConfig, TrainConfig

# The last scene of every Middlebury family with two or more scenes: chosen by that rule, not by their results.
HELD_OUT = ("Baby3", "Bowling2", "Cloth4", "Lampshade2", "Midd2", "Wood2")
NETWORK = NetworkConfig(layers=4, maps=64, kernel=3)
TRAIN = TrainConfig(epochs=10, batch_size=128, lr=0.002, momentum=0.9, lr_drops=(8,), max_examples=250_000, seed=0,
                    checkpoint_every=1000)
MAX_DISP = 128  # default stored in the models; evaluation uses each scene's ndisp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/shipped"))
    parser.add_argument("--framework", choices=("torch", "tf", "both"), default="both")
    parser.add_argument("--augment", action="store_true", help="MC-CNN data augmentation")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--score-only", action="store_true", help="only score the models already in OUT/models")
    args = parser.parse_args()
    frameworks = ("torch", "tf") if args.framework == "both" else (args.framework,)
    if not args.score_only:
        train_and_export(args, frameworks)
    names = [f"mccnn_fast_{fw}" for fw in frameworks] + (["mccnn_fast_torch_int8"] if "torch" in frameworks else [])
    scores = {name: score(args.out / "models" / f"{name}.onnx", args.data) for name in names}
    (args.out / "scores.json").write_text(json.dumps(scores, indent=2))
    for fw, s in scores.items():
        print(fw, json.dumps(s))


def score(model: Path, data: Path) -> dict[str, float]:
    """>=3 px error (%, dense) on the held-out scenes and on scikit-image's Motorcycle, both post-processings."""
    from stereodeploy.cli.demo import MOTORCYCLE_MAX_DISP, motorcycle
    from stereodeploy.data.datasets import load_dataset
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.study.evaluate import error_rate, evaluate

    held_out = [s for s in load_dataset(data / "middlebury") if s.name in HELD_OUT]
    left, right, gt = motorcycle()
    out: dict[str, float] = {}
    for pp in ("none", "full"):
        matcher = StereoMatcher.from_file(model, postprocess=pp)
        result = evaluate(held_out, matcher, model=str(model), progress=False)
        out[f"held_out_{pp}"] = result.average_error_rate
        out.update({f"{img.name}_{pp}": img.error_rate for img in result.images})
        disp = matcher.with_max_disp(MOTORCYCLE_MAX_DISP)(left, right)
        out[f"motorcycle_{pp}"] = error_rate(disp, gt)
    return out


def shipped_spec(framework: str, data: Path, augment: bool = False) -> RunSpec:
    """The run that made the shipped model of ``framework`` from the data folder ``data`` (../shared/data)."""
    return RunSpec(framework=framework, data=DataSpec(sources=(str(data / "middlebury"), str(data / "kitti2015")),
                                                      exclude=HELD_OUT),
                   network=NETWORK, sampler=SamplerConfig(seed=TRAIN.seed, augment=augment), train=TRAIN)


def train_and_export(args: argparse.Namespace, frameworks: tuple[str, ...]) -> None:
    from stereodeploy.data.datasets import list_frames
    from stereodeploy.deploy.export import export
    from stereodeploy.train.api import train_run

    (args.out / "models").mkdir(parents=True, exist_ok=True)
    for fw in frameworks:
        run = args.out / f"run_{fw}"
        summary = train_run(shipped_spec(fw, args.data, args.augment), run, resume=args.resume).to_dict()
        summary["machine"] = f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} CPUs"
        (args.out / f"summary_{fw}.json").write_text(json.dumps(summary, indent=2))
        report = export(run, args.out / "models" / f"mccnn_fast_{fw}.onnx", max_disp=MAX_DISP, overwrite=True)
        print(f"{fw}: exported, parity {report.max_abs_diff:.2e}; {summary}")
        if fw == "torch":  # the int8 variant, calibrated on training scenes only
            from stereodeploy.deploy.quantize import quantize_model

            middlebury = args.data / "middlebury"
            calibration = [middlebury / f.name for f in list_frames(middlebury, None)
                           if f.name not in HELD_OUT and (middlebury / f.name).is_dir()]
            quantize_model(report.path, args.out / "models" / "mccnn_fast_torch_int8.onnx",
                           calibration + [args.data / "kitti2015"], overwrite=True)


if __name__ == "__main__":
    main()
