"""Accuracy of the full pipeline on the real pairs in ../shared/data, per SGM preset: the yardstick that speed work
on the post-processing must not move (issue 15: within 0.1 point of the >= 3 px error).

    python scripts/bench_accuracy.py                      # shipped fp32 model, ../shared/data
    python scripts/bench_accuracy.py --model m.onnx --data /path/to/data --json out.json

Rows: dataset, SGM preset, frames, mean >= 3 px error (%) of the full pipeline and of winner-take-all. KITTI frames
run at 228 disparities with the kitti2015 and kitti2012 presets, Middlebury scenes at their
``ndisp`` with the middlebury preset.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (dataset folder, SGM preset) pairs scored
RUNS = (("kitti2015", "kitti2015"), ("kitti2015", "kitti2012"), ("middlebury", "middlebury"))
KITTI_MAX_DISP = 228  # the paper's KITTI range; Middlebury scenes use their calib.txt ndisp


def accuracy(model: Path, data: Path, runs=RUNS) -> list[dict[str, object]]:
    from stereodeploy.config import MatchConfig
    from stereodeploy.data.datasets import load_dataset
    from stereodeploy.engine.backends import open_backend
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.study.evaluate import evaluate

    backend = open_backend(model, "onnx")
    rows = []
    cache = {}
    for folder, preset in runs:
        samples = cache.setdefault(folder, load_dataset(data / folder))
        row: dict[str, object] = {"dataset": folder, "preset": preset, "frames": len(samples)}
        for post in ("full", "none"):
            matcher = StereoMatcher(backend, MatchConfig.preset(post, backend.meta.max_disp), sgm_preset=preset)
            t = time.perf_counter()
            max_disp = KITTI_MAX_DISP if folder.startswith("kitti") else None
            res = evaluate(samples, matcher, max_disp=max_disp, warmup=False, progress=False)
            row[post] = res.average_error_rate
            row[f"{post}_per_frame"] = {i.name: i.error_rate for i in res.images}
            row[f"{post}_seconds"] = time.perf_counter() - t
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "mccnn_fast_torch.onnx")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--json", type=Path, default=None, help="also write every number, per frame, as JSON")
    args = ap.parse_args()
    rows = accuracy(args.model, args.data)
    print(f"# >= 3 px error (%), model {args.model.name}, data {args.data}")
    print("| dataset | SGM preset | frames | full pipeline | winner-take-all |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['preset']} | {r['frames']} | {r['full']:.3f} | {r['none']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
