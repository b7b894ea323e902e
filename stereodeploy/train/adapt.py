"""Adapt a model to a user's own unlabelled pairs: fine-tune on the pixels its full pipeline is confident about.

No ground truth is read. For every pair the model is run twice on the same cost volume: MC-CNN's full
post-processing (SGM, left-right check, sub-pixel, filters) gives the candidate labels, and the raw volume tells
which of them to trust (:func:`confident_disparity`):

- **left-right consistent**: the left winner-take-all disparity ``d`` and the right image's at ``x - d`` agree
  within ``lr_tolerance`` pixels;
- **a clear cost margin**: the best cost is lower than the best cost outside ``d +- 1`` by at least ``margin``
  (cost = 1 - cosine similarity);
- **agreement**: the full pipeline's disparity is within ``agree_tolerance`` of winner-take-all;
- **away from occlusions**: no left-right inconsistent pixel within ``occlusion_radius`` pixels.

Only those pixels get a label (the full pipeline's sub-pixel disparity); the others are unknown, exactly as
pixels without ground truth in a real dataset. Training then runs through the one trainer
(:func:`stereodeploy.train.api.train_run`) from the model's weights, so it works for both frameworks and the run
exports like any other. Synthetic pairs made from the user's own left images (:mod:`stereodeploy.data.synth`) can
be mixed in: they carry exact labels everywhere, including the low-texture areas that pseudo-labels skip.

When too few pixels qualify, the pseudo-labels would teach the model mostly its own mistakes on the easy parts:
below ``min_fraction`` of all pixels adaptation refuses, below ``warn_fraction`` it warns.

The confidence here is computed by this module; when the engine's post-processing reports validity/confidence
itself, :func:`confident_disparity` is the one place to point at it.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stereodeploy.config import DataSpec, RunSpec, SamplerConfig, TrainConfig
from stereodeploy.errors import UsageError, UserError
from stereodeploy.frameworks import DEFAULT

log = logging.getLogger("stereodeploy")

MIN_FRACTION = 0.05  # refuse below this share of confident pixels (all pairs together)
WARN_FRACTION = 0.20  # warn below this
# Fine-tuning schedule: short, at a tenth of the training learning rate in the last epoch.
ADAPT_TRAIN = TrainConfig(epochs=3, batch_size=128, lr=0.001, momentum=0.9, lr_drops=(2,), max_examples=100_000,
                          seed=0, checkpoint_minutes=10.0)


@dataclass(frozen=True)
class Confidence:
    """Thresholds of :func:`confident_disparity` (pixels, and cost units for ``margin``)."""

    lr_tolerance: float = 1.0
    margin: float = 0.05
    agree_tolerance: float = 1.0
    occlusion_radius: int = 2


@dataclass
class PseudoLabels:
    """One pair's labels: ``disp`` (H, W) float32, NaN where not confident, and how many pixels passed each test."""

    disp: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return float(np.isfinite(self.disp).mean())


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1) square, with shifts (no scipy on this path)."""
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            src = mask[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
            out[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)] |= src
    return out


def confidence_tests(cost: np.ndarray, full: np.ndarray, conf: Confidence = Confidence()) -> dict[str, np.ndarray]:
    """The per-pixel tests of the module docstring on a (D, H, W) cost volume (left reference, costs of
    ``x - d < 0`` at the invalid cost) and the full pipeline's disparity ``full``; ``confident`` is their AND."""
    from stereodeploy.engine.matching import winner_take_all

    nd, h, w = cost.shape
    left = winner_take_all(cost).astype(np.intp)
    right = winner_take_all(cost, derived_right=True).astype(np.intp)
    xs = np.arange(w)[None, :]
    rows = np.arange(h)[:, None]
    xr = xs - left
    inside = xr >= 0
    consistent = inside & (np.abs(right[rows, np.clip(xr, 0, w - 1)] - left) <= conf.lr_tolerance)
    best = np.take_along_axis(cost, left[None], axis=0)[0]
    others = cost.copy()
    for k in (-1, 0, 1):
        d = np.clip(left + k, 0, nd - 1)
        np.put_along_axis(others, d[None], np.inf, axis=0)
    margin = others.min(axis=0) - best
    clear = margin >= conf.margin
    agree = np.isfinite(full) & (np.abs(full - left) <= conf.agree_tolerance)
    away = ~_dilate(~consistent, conf.occlusion_radius)
    confident = consistent & clear & agree & away
    return {"consistent": consistent, "clear_margin": clear, "agrees_with_full": agree, "away_from_occlusion": away,
            "confident": confident}


def confident_disparity(left: np.ndarray, right: np.ndarray, matcher: Any, conf: Confidence = Confidence()
                        ) -> PseudoLabels:
    """Pseudo-labels for one pair: the full pipeline's disparity where :func:`confidence_tests` pass, NaN elsewhere.

    ``matcher`` is a :class:`~stereodeploy.engine.matcher.StereoMatcher` with ``postprocess='full'``; its backend
    gives the cost volume the tests read, its ``max_disp`` the range.
    """
    from stereodeploy.data.preprocess import to_gray

    full = matcher(left, right)
    cost = matcher.backend.cost_volume(to_gray(left).astype(np.float32), to_gray(right).astype(np.float32),
                                       matcher.max_disp, {})
    tests = confidence_tests(np.asarray(cost, np.float32), full, conf)
    disp = np.where(tests["confident"], full, np.float32(np.nan)).astype(np.float32)
    return PseudoLabels(disp=disp, counts={k: int(v.sum()) for k, v in tests.items()} | {"pixels": int(full.size)})


# --------------------------------------------------------------------------------------------------------------
# The command


def unlabelled_pairs(data: Sequence[Path], fmt: str | None = None) -> list[Any]:
    """The pairs of the datasets at ``data`` as StereoSamples *without* ground truth (the files are not opened;
    Middlebury's ``ndisp`` from calib.txt is kept as the range hint)."""
    from stereodeploy.data.datasets import StereoSample, list_frames, parse_calib
    from stereodeploy.data.io import read_image

    out = []
    for root in data:
        for frame in list_frames(root, fmt):
            ndisp = parse_calib(frame.calib).get("ndisp") if frame.calib is not None else None
            out.append(StereoSample(name=frame.name, left=read_image(frame.left), right=read_image(frame.right),
                                    max_disp=int(ndisp) if ndisp and ndisp.isdigit() else None))
    return out


def _model_file(model: Path, tmp: Path) -> Path:
    """An ONNX file of ``model`` (an ONNX file, or a run directory / checkpoint exported into ``tmp``)."""
    if model.suffix == ".onnx":
        if not model.is_file():
            raise UserError(f"{model}: model file not found; give an exported .onnx or a run directory")
        return model
    from stereodeploy.deploy.export import export

    return export(model, tmp / "start.onnx", check=False).path


def adapt(model: Path, data: Sequence[Path], out: Path, framework: str = DEFAULT, fmt: str | None = None,
          max_disp: int | None = None, synth: int = 0, cfg: TrainConfig = ADAPT_TRAIN, conf: Confidence = Confidence(),
          min_fraction: float = MIN_FRACTION, warn_fraction: float = WARN_FRACTION, sgm_preset: str | None = None,
          overwrite: bool = False, progress: bool = True, threads: int | None = None) -> dict[str, Any]:
    """`stereodeploy adapt`: fine-tune ``model`` (ONNX or run directory) on the unlabelled pairs at ``data``
    into run ``out`` with ``framework``; ``synth`` synthetic pairs from the pairs' left images are mixed in.
    Returns the training summary with the pseudo-label statistics under ``pseudo_labels``."""
    from stereodeploy import frameworks
    from stereodeploy.data.datasets import detect_preset
    from stereodeploy.data.io import write_json
    from stereodeploy.engine.backends import load_weights
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.engine.spec import DEFAULT_PRESET
    from stereodeploy.train.api import train_run

    frameworks.get(framework).require("train")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"{out} exists and is not empty: choose another --out or pass --overwrite")
    if not data:
        raise UsageError("give at least one --data folder of unlabelled pairs (KITTI or Middlebury layout)")
    pairs = unlabelled_pairs([Path(p) for p in data], fmt)
    preset = sgm_preset or detect_preset(Path(data[0])) or DEFAULT_PRESET
    with tempfile.TemporaryDirectory() as tmp:
        path = _model_file(Path(model), Path(tmp))
        meta, weights = load_weights(path)
        matcher = StereoMatcher.from_file(path, postprocess="full", sgm_preset=preset)
        samples, stats = [], {}
        for p in pairs:
            m = matcher.with_max_disp(max_disp or p.max_disp or meta.max_disp)
            labels = confident_disparity(p.left, p.right, m, conf)
            stats[p.name] = {"fraction": round(labels.fraction, 4), **labels.counts}
            log.info("%s: %.1f %% of pixels confident", p.name, 100 * labels.fraction)
            p.disp = p.disp_noc = labels.disp
            samples.append(p)
    total = sum(s["confident"] for s in stats.values()) / max(1, sum(s["pixels"] for s in stats.values()))
    if total < min_fraction:
        raise UserError(f"only {100 * total:.1f} % of the pixels of {', '.join(map(str, data))} are confident "
                        f"(at least {100 * min_fraction:.0f} % needed): the model does not match these pairs well "
                        "enough to teach itself; check that they are rectified left/right pairs and that "
                        "--max-disp covers their range")
    if total < warn_fraction:
        warnings.warn(f"only {100 * total:.1f} % of the pixels are confident: adaptation learns from few, easy "
                      "pixels; mix in synthetic pairs with --synth", UserWarning, stacklevel=2)
    if synth:
        from stereodeploy.data.synth import SynthConfig, synth_samples

        w = min(p.left.shape[1] for p in pairs)
        h = min(p.left.shape[0] for p in pairs)
        scfg = SynthConfig(width=min(w, 384), height=min(h, 288),
                           max_disp=min(max(4, max_disp or meta.max_disp), min(w, 384) // 2 - 1))
        samples += synth_samples([p.left for p in pairs], synth, scfg, seed=cfg.seed, prefix="adapt_synth")
    spec = RunSpec(framework=framework, data=DataSpec(sources=tuple(str(Path(p).resolve()) for p in data),
                                                      format=fmt),
                   network=meta.network, sampler=SamplerConfig(seed=cfg.seed), train=cfg, threads=threads)
    summary = train_run(spec, out, samples=samples, weights=weights, progress=progress, overwrite=overwrite).to_dict()
    summary["pseudo_labels"] = {"fraction": round(total, 4), "pairs": stats}
    write_json(out / "adapt.json", {"adapted_from": str(Path(model).resolve()), "pseudo_labels": summary["pseudo_labels"],
                                    "confidence": conf.__dict__, "synthetic_pairs": synth}, overwrite=True)
    return summary

