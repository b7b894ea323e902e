"""The patch sampler at KITTI scale: time and memory to index 200 frames of 1242x375, batch gather vs training step.

    python scripts/bench_sampler.py                   # 200 frames, batches of 128 and 1024 pairs
    python scripts/bench_sampler.py --frames 50 --no-step

Frames are synthetic textured pairs (``stereodeploy.datasets.synthetic_pair``) whose dense ground truth is thinned
at random to ``--density`` (0.2 by default, like KITTI's LiDAR maps: the two KITTI 2015 frames in ../shared/data
give 54k and 90k examples, so 200 frames give about 17 million). Generating the frames is not timed; ``index``
is the time spent in ``PatchIndex.add``, ``first batch`` the one-off work of the first gather (concatenating the
index and the images, drawing the epoch's permutation). Memory: the peak resident set size of this process, the
RSS before indexing, and ``PatchIndex.nbytes``
(the peak is taken before PyTorch is imported). Then, for each batch size, the median time of ``gather`` over
``--batches`` batches against the median PyTorch training step on those same batches (default threads), and the
sampler's share of gather + step.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import time

import numpy as np

from stereodeploy.config import NetworkConfig, SamplerConfig, TrainConfig
from stereodeploy.datasets import synthetic_pair
from stereodeploy.io import to_gray
from stereodeploy.patches import PatchIndex


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def build_index(frames: int, density: float, seed: int) -> tuple[PatchIndex, float]:
    """Index ``frames`` synthetic 1242x375 pairs; returns the index and the seconds spent in ``add``."""
    index = PatchIndex(NetworkConfig().patch_size, SamplerConfig(seed=seed))
    rng = np.random.default_rng(seed)
    spent = 0.0
    for i in range(frames):
        s = synthetic_pair(height=375, width=1242, max_disp=128, seed=seed + i)
        disp = np.where(rng.random(s.disp.shape) < density, s.disp, np.nan).astype(np.float32)
        left, right = to_gray(s.left), to_gray(s.right)
        t0 = time.perf_counter()
        index.add(left, right, disp, f"synthetic{i}")
        spent += time.perf_counter() - t0
    return index, spent


def torch_steps(batches: list, batch_size: int) -> float | None:
    """Median seconds of a PyTorch training step on ``batches`` (first two not timed), or None without torch."""
    if importlib.util.find_spec("torch") is None:
        return None
    from stereodeploy.nets.weights import init_weights
    from stereodeploy.train.torch_trainer import TorchStepper

    network = NetworkConfig()
    cfg = TrainConfig(batch_size=batch_size)
    stepper = TorchStepper(network, cfg, init_weights(network, 0))
    times = []
    for i, b in enumerate(batches):
        t0 = time.perf_counter()
        stepper.step(b, cfg.lr)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--density", type=float, default=0.2, help="fraction of ground-truth pixels kept")
    ap.add_argument("--batch-sizes", default="128,1024", help="pairs per batch (examples = half)")
    ap.add_argument("--batches", type=int, default=20, help="batches timed per size")
    ap.add_argument("--no-step", action="store_true", help="skip the PyTorch step timing")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    rss_start = current_rss_mb()
    t0 = time.perf_counter()
    index, add_seconds = build_index(args.frames, args.density, args.seed)
    wall = time.perf_counter() - t0
    rss_indexed = current_rss_mb()
    t0 = time.perf_counter()
    order = index.epoch_order(0)
    index.gather(order[:64], 0, 0)
    first = time.perf_counter() - t0
    peak_indexing = rss_mb()  # before torch is imported
    n = len(index)

    rows = []
    for size in (int(b) for b in args.batch_sizes.split(",")):
        per = size // 2
        batches, gathers = [], []
        for b in range(args.batches + 2):
            t = time.perf_counter()
            batches.append(index.gather(order[b * per:(b + 1) * per], 0, b))
            gathers.append(time.perf_counter() - t)
        gather = float(np.median(gathers[2:]))
        step = None if args.no_step else torch_steps(batches, size)
        rows.append((size, per, gather, step))

    print(f"# patch sampler, {args.frames} synthetic 1242x375 frames, ground-truth density {args.density}; "
          f"{os.cpu_count()} CPUs, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| measure | value |")
    print("|---|---|")
    print(f"| examples indexed | {n:,} ({n / args.frames:,.0f} per frame) |")
    print(f"| index: time in PatchIndex.add | {add_seconds:.2f} s ({1000 * add_seconds / args.frames:.1f} ms per frame; "
          f"generating the frames took {wall - add_seconds:.0f} s more) |")
    print(f"| first batch (concatenate, epoch permutation) | {first:.2f} s |")
    print(f"| PatchIndex.nbytes | {index.nbytes / 2**20:.0f} MB ({8 * n / 2**20:.0f} MB index, "
          f"{(index.nbytes - 8 * n) / 2**20:.0f} MB normalised images) |")
    print(f"| RSS before indexing / after indexing | {rss_start:.0f} MB / {rss_indexed:.0f} MB |")
    print(f"| peak RSS through indexing and the first batch | {peak_indexing:.0f} MB |")
    for size, per, gather, step in rows:
        share = f"{100 * gather / (gather + step):.1f} % of gather + step" if step else "no torch step timed"
        step_text = f"{1000 * step:.1f} ms torch step" if step else "-"
        print(f"| batch of {size} pairs ({per} examples): gather vs step | {1000 * gather:.2f} ms gather, "
              f"{step_text}; {share} |")


if __name__ == "__main__":
    main()
