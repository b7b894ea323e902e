"""Reproduce the shipped models: train PyTorch and TensorFlow on the same data, export both, score them.

    python scripts/train_shipped.py --data ../shared/data --out runs/shipped [--framework torch|tf|both]

``--stage base`` (the default) makes the shipped models: both frameworks from one seeded initialisation on the
labelled real frames (every Middlebury scene of DATA/middlebury except HELD_OUT, the KITTI 2015 frames),
2.5 M examples, the same batches.

``--stage mixed`` is issue 22's experiment (not shipped: it did not beat the base models, see models/README.md):
both frameworks start from the base PyTorch weights (``--init MODEL``, an ONNX file or run directory; default:
train the base PyTorch run first) and see the same batches of ``--mix`` data: ``real`` (the base frames plus
DATA/extra/middlebury2014), ``synth`` (pairs made from single images by :mod:`stereodeploy.data.synth`: every
left/right image of DATA's real frames except the held-out scenes, and scikit-image's photos; never Motorcycle)
and ``rendered`` (DATA/extra/flyingthings3d and DATA/extra/tartanair). The ablation rows of the model card are
``--mix real``, ``--mix synth,rendered`` and ``--mix real,synth,rendered``, each with ``--framework torch``.

``--sampler middlebury`` trains with MC-CNN fast's Middlebury patch offsets instead of its KITTI ones (the
shipped models): also an ablation row of the model card, worse on every held-out scene.

The ONNX files go to OUT/models/ (copy them to models/ to ship them), with an int8 variant of the PyTorch model
calibrated on training scenes; OUT/scores.json holds the >=3 px errors for the model card.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from dataclasses import replace
from pathlib import Path

from stereodeploy.config import DataSpec, NetworkConfig, RunSpec, SamplerConfig, TrainConfig

# The last scene of every Middlebury family with two or more scenes: chosen by that rule, not by their results.
HELD_OUT = ("Baby3", "Bowling2", "Cloth4", "Lampshade2", "Midd2", "Wood2")
NETWORK = NetworkConfig(layers=4, maps=64, kernel=3)
# Stage 1, the base models: 10 epochs of 250,000 examples from a seeded initialisation.
TRAIN = TrainConfig(epochs=10, batch_size=128, lr=0.002, momentum=0.9, lr_drops=(8,), max_examples=250_000, seed=0,
                    checkpoint_every=1000)
# Stage 2, from the stage-1 weights: 6 epochs of 250,000 examples (1.5 M), lr x 0.1 for the last, another sampling
# seed (other batches). Sized to what the shared 2-core machine allowed for four such runs side by side.
TRAIN_MIXED = TrainConfig(epochs=6, batch_size=128, lr=0.002, momentum=0.9, lr_drops=(5,), max_examples=250_000,
                          seed=1, checkpoint_every=500)
MAX_DISP = 128  # default stored in the models; evaluation uses each scene's ndisp
MIXES = ("real", "synth", "rendered")
# Patch sampling (positive offset, negative range): MC-CNN fast's KITTI setting (the first shipped models) and its
# Middlebury setting (Zbontar & LeCun 2016, Table 3: positive within 0.5 px, negatives 1.5 to 6 px away, here rounded
# to whole columns), which teaches the network to tell apart disparities 2 to 3 px from the true one.
SAMPLERS = {"kitti": SamplerConfig(pos_offset=1, neg_low=4, neg_high=10),
            "middlebury": SamplerConfig(pos_offset=0, neg_low=2, neg_high=6)}
SYNTH_COUNT = 48  # pairs made from single images
SYNTH_SEED = 22
# scikit-image's bundled photos and textures used as synthetic sources (stereo_motorcycle is evaluation data).
SKIMAGE_IMAGES = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "grass", "gravel",
                  "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket", "text")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("runs/shipped"))
    parser.add_argument("--framework", choices=("torch", "tf", "both"), default="both")
    parser.add_argument("--stage", choices=("base", "mixed"), default="base", help="base: the shipped models")
    parser.add_argument("--mix", default="real,synth,rendered", help=f"stage-2 data, comma-separated of {MIXES}")
    parser.add_argument("--init", type=Path, help="start stage 2 from this model (ONNX or run) instead of stage 1")
    parser.add_argument("--synth-count", type=int, default=SYNTH_COUNT)
    parser.add_argument("--mixed-epochs", type=int, default=TRAIN_MIXED.epochs,
                        help="stage-2 epochs of 250,000 examples (lr x 0.1 for the last)")
    parser.add_argument("--augment", action="store_true", help="MC-CNN data augmentation (base stage)")
    parser.add_argument("--sampler", choices=tuple(SAMPLERS), default="kitti", help="patch offsets (see SAMPLERS)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 variant")
    parser.add_argument("--score-only", action="store_true", help="only score the models already in OUT/models")
    args = parser.parse_args()
    mix = tuple(m.strip() for m in args.mix.split(",") if m.strip())
    if args.mixed_epochs < 2:
        parser.error("--mixed-epochs needs at least 2 (the last runs at a tenth of the learning rate)")
    if not mix or set(mix) - set(MIXES):
        parser.error(f"--mix takes a comma-separated subset of {', '.join(MIXES)}")
    frameworks = ("torch", "tf") if args.framework == "both" else (args.framework,)
    int8 = "torch" in frameworks and not args.no_int8
    if not args.score_only:
        train_and_export(args, frameworks, mix, int8)
    names = [f"mccnn_fast_{fw}" for fw in frameworks] + (["mccnn_fast_torch_int8"] if int8 else [])
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


# ---------------------------------------------------------------------------------------------------- data


def real_sources(data: Path) -> list[Path]:
    return [data / "middlebury", data / "kitti2015", data / "extra" / "middlebury2014"]


def rendered_sources(data: Path) -> list[Path]:
    return [data / "extra" / "flyingthings3d", data / "extra" / "tartanair"]


def synth_images(data: Path) -> list:
    """The single images synthetic pairs are made from: left and right images of DATA's real frames (not the
    held-out scenes) and scikit-image's photos, as uint8 arrays."""
    import skimage.data

    from stereodeploy.data.datasets import list_frames

    images = []
    for source in real_sources(data):
        for frame in list_frames(source):
            if frame.name not in HELD_OUT:
                images += [frame.left, frame.right]
    from stereodeploy.data.synth import load_rgb

    arrays = [load_rgb(p) for p in images]
    return arrays + [getattr(skimage.data, name)() for name in SKIMAGE_IMAGES]


def mixed_samples(data: Path, mix: tuple[str, ...], synth_count: int) -> tuple[list, list[str]]:
    """The stage-2 training samples of ``mix`` and the names of their sources."""
    from stereodeploy.data.synth import SynthConfig, synth_samples
    from stereodeploy.train.api import load_samples

    samples, sources = [], []
    if "real" in mix:
        samples += load_samples(real_sources(data), exclude=HELD_OUT)
        sources += [str(s) for s in real_sources(data)]
    if "synth" in mix:
        cfg = SynthConfig(compactness=12.0, smooth=0)  # what the shipped models saw (defaults changed since)
        samples += synth_samples(synth_images(data), synth_count, cfg, seed=SYNTH_SEED)
        sources.append(f"stereodeploy.data.synth: {synth_count} pairs, seed {SYNTH_SEED}, {cfg}")
    if "rendered" in mix:
        samples += load_samples(rendered_sources(data))
        sources += [str(s) for s in rendered_sources(data)]
    return samples, sources


def init_weights_from(path: Path):
    from stereodeploy.engine.backends import load_weights

    return load_weights(Path(path))[1]


# ---------------------------------------------------------------------------------------------------- training


def train_base(args: argparse.Namespace, framework: str, run: Path) -> dict:
    """The base models: ``framework`` from the seeded initialisation on the labelled real frames into ``run``."""
    from stereodeploy.train.api import train_run

    spec = RunSpec(framework=framework, data=DataSpec(sources=(str(args.data / "middlebury"),
                                                               str(args.data / "kitti2015")), exclude=HELD_OUT),
                   network=NETWORK, sampler=replace(SAMPLERS[args.sampler], seed=TRAIN.seed, augment=args.augment), train=TRAIN,
                   threads=args.threads)
    return train_run(spec, run, resume=args.resume and (run / "checkpoint.npz").is_file(), progress=False).to_dict()


def train_mixed(args: argparse.Namespace, framework: str, run: Path, mix: tuple[str, ...]) -> dict:
    """Issue 22's stage 2: ``framework`` from the base PyTorch weights on the ``mix`` data into ``run``."""
    from stereodeploy.train.api import train_run

    init = args.init
    if init is None:
        init = args.out / "run_base_torch"
        if not (init / "summary.json").is_file():
            train_base(args, "torch", init)
    samples, sources = mixed_samples(args.data, mix, args.synth_count)
    train = replace(TRAIN_MIXED, epochs=args.mixed_epochs, lr_drops=(args.mixed_epochs - 1,))
    spec = RunSpec(framework=framework, data=DataSpec(sources=tuple(sources), exclude=HELD_OUT), network=NETWORK,
                   sampler=replace(SAMPLERS[args.sampler], seed=TRAIN_MIXED.seed), train=train, threads=args.threads)
    summary = train_run(spec, run, samples=samples, weights=init_weights_from(init),
                        resume=args.resume and (run / "checkpoint.npz").is_file(), progress=False).to_dict()
    return {**summary, "mix": list(mix), "init": str(init)}


def train_and_export(args: argparse.Namespace, frameworks: tuple[str, ...], mix: tuple[str, ...], int8: bool) -> None:
    from stereodeploy.deploy.export import export

    (args.out / "models").mkdir(parents=True, exist_ok=True)
    for fw in frameworks:
        run = args.out / f"run_{fw}"
        summary = train_base(args, fw, run) if args.stage == "base" else train_mixed(args, fw, run, mix)
        summary["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        (args.out / f"summary_{fw}.json").write_text(json.dumps(summary, indent=2))
        report = export(run, args.out / "models" / f"mccnn_fast_{fw}.onnx", max_disp=MAX_DISP, overwrite=True)
        print(f"{fw}: exported, parity {report.max_abs_diff:.2e}; {summary}", flush=True)
        if fw == "torch" and int8:  # the int8 variant, calibrated on training scenes only
            from stereodeploy.deploy.quantize import quantize_model

            calibration = [p for p in sorted((args.data / "middlebury").iterdir())
                           if p.is_dir() and p.name not in HELD_OUT]
            quantize_model(report.path, args.out / "models" / "mccnn_fast_torch_int8.onnx",
                           calibration + [args.data / "kitti2015"], overwrite=True)


if __name__ == "__main__":
    main()
