"""How well the swapped-pair check separates real pairs, and what it costs next to matching.

    python scripts/bench_sanity.py [--data ../shared/data] [--repeats 5]

For every frame of the KITTI 2015 and Middlebury folders under ``--data``: the score of the pair as given and
swapped, from the shipped model's features (:func:`swapped_score`) and from the images
(:func:`image_swapped_score`). Then, on the largest frame, the median time of each check against the median time
of winner-take-all from the same features, interleaved in one loop (run it on an idle machine for clean ratios).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from stereodeploy.data.datasets import load_dataset
from stereodeploy.data.preprocess import to_gray
from stereodeploy.engine.backends import open_backend
from stereodeploy.engine.matching import wta_from_features
from stereodeploy.engine.sanity import (
    SWAPPED_THRESHOLD,
    image_swapped_score,
    swapped_score,
)
from stereodeploy.engine.shipped import default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    backend = open_backend(default_model_path())
    scores: dict[str, list[float]] = {"features normal": [], "features swapped": [], "images normal": [],
                                      "images swapped": []}
    largest = None
    for folder, default_disp in (("kitti2015", 228), ("middlebury", 128)):
        for s in load_dataset(args.data / folder):
            gl, gr = to_gray(s.left), to_gray(s.right)
            d = s.max_disp or default_disp
            fl, fr = backend.features_pair(gl, gr)
            row = (swapped_score(fl, fr, d), swapped_score(fr, fl, d), image_swapped_score(gl, gr, d),
                   image_swapped_score(gr, gl, d))
            for key, value in zip(scores, row):
                scores[key].append(value)
            print(f"{s.name:12s} D={d:3d}  features {row[0]:.3f} / swapped {row[1]:.3f}   "
                  f"images {row[2]:.3f} / swapped {row[3]:.3f}")
            if largest is None or gl.size * d > largest[0]:
                largest = (gl.size * d, s.name, gl, gr, fl, fr, d)
    print(f"threshold {SWAPPED_THRESHOLD}; over {len(scores['features normal'])} frames:")
    for key, values in scores.items():
        print(f"  {key:17s} min {min(values):.3f}  mean {np.mean(values):.3f}  max {max(values):.3f}")
    _, name, gl, gr, fl, fr, d = largest
    wta_from_features(fl, fr, d)  # compile / warm up
    times: dict[str, list[float]] = {"wta": [], "features check": [], "images check": []}
    for _ in range(args.repeats):
        for key, run in (("wta", lambda: wta_from_features(fl, fr, d)),
                         ("features check", lambda: swapped_score(fl, fr, d)),
                         ("images check", lambda: image_swapped_score(gl, gr, d))):
            t0 = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - t0)
    wta = float(np.median(times["wta"]))
    print(f"{name} ({gl.shape[1]}x{gl.shape[0]}, D={d}), medians of {args.repeats}: wta {wta * 1e3:.1f} ms")
    for key in ("features check", "images check"):
        t = float(np.median(times[key]))
        print(f"  {key}: {t * 1e3:.1f} ms = {100 * t / wta:.1f}% of winner-take-all")


if __name__ == "__main__":
    main()
