"""The patch sampler at Scene Flow scale: memory, start-up and gather time as the number of frames grows.

    python scripts/bench_sampler.py                          # 2,000 frames of 960x540, dense ground truth
    python scripts/bench_sampler.py --frames 200 --marks 50,100,200 --step   # smaller, with a PyTorch step

Frames are synthetic (a random texture and its copy shifted by a smooth, dense disparity field, every pixel with
ground truth, as in Scene Flow); making them is not timed. The index is built frame by frame, and at each mark
(a number of frames so far) the script reports the process's memory from /proc/self/status: the peak resident set
size (VmHWM), the anonymous memory (RssAnon: what the process really holds) and the file-backed pages of the
memory-mapped cache that batches have touched (RssFile: page cache, which the kernel reclaims under pressure).
At each mark it also times the gathering of batches (median over ``--batches``) at 128 and 1,024 pairs, drawn
from the current epoch order. The growth of peak RSS per frame between the first and the last mark is projected
to 35,000 frames (Scene Flow's size). For comparison, the in-memory index this sampler replaced held 8 bytes per
example plus both normalised float32 images (8 bytes per pixel).

``--step`` also times a PyTorch training step on the same batches (4 x 64 network, threads as given by
``--threads``), for the sampler's share of gather + step.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from stereodeploy.config import NetworkConfig, SamplerConfig, TrainConfig
from stereodeploy.data.patches import PatchIndex

SCENE_FLOW_FRAMES = 35_000


def memory_mb() -> dict[str, float]:
    """VmHWM (peak RSS), VmRSS, RssAnon and RssFile of this process, in MB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) / 1024
    return out


def synthetic_frame(rng: np.random.Generator, height: int, width: int, max_disp: int):
    """(left, right, disparity) grey float32 0..255 with a dense, smooth disparity field in 1..max_disp."""
    right = rng.integers(0, 256, size=(height, width)).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    a, b, c = rng.uniform(0.2, 0.8, 3)
    disp = 1 + (max_disp - 2) * (a * xx / width + (1 - a) * yy / height) * (0.8 + 0.2 * np.sin(b * xx / 30 + c))
    cols = np.clip(np.rint(xx - disp).astype(np.int64), 0, width - 1)
    left = np.take_along_axis(right, cols, axis=1)
    return left, right, disp.astype(np.float32)


def time_gathers(index: PatchIndex, epoch: int, pairs: int, count: int) -> tuple[float, list]:
    per = pairs // 2
    total = index.num_batches(per)
    numbers = np.linspace(0, total - 1, count + 2).astype(int)  # spread over the epoch
    times, batches = [], []
    for b in numbers:
        t0 = time.perf_counter()
        batches.append(index.batch(epoch, int(b), per))
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:])), batches[2:]


def torch_step_seconds(batches: list, pairs: int, threads: int) -> float:
    from stereodeploy.nets.weights import init_weights
    from stereodeploy.train.torch_trainer import TorchStepper
    from stereodeploy.util.threads import configure_threads

    configure_threads(threads, frameworks=["torch"])
    network = NetworkConfig()
    cfg = TrainConfig(batch_size=pairs)
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
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--marks", default="250,500,1000,2000", help="frame counts at which to measure")
    ap.add_argument("--height", type=int, default=540)
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--max-disp", type=int, default=192)
    ap.add_argument("--batches", type=int, default=30, help="batches timed per size and mark")
    ap.add_argument("--cache-dir", default=None, help="folder of the memory-mapped cache (default: system temp)")
    ap.add_argument("--step", action="store_true", help="also time a PyTorch step on the same batches")
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads for --step")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    marks = sorted({int(m) for m in args.marks.split(",") if int(m) <= args.frames} | {args.frames})

    load_before = os.getloadavg()[0]
    rng = np.random.default_rng(args.seed)
    index = PatchIndex(NetworkConfig().patch_size, SamplerConfig(seed=args.seed), cache_dir=args.cache_dir)
    base = memory_mb()
    rows = []
    add_seconds = 0.0
    for i in range(args.frames):
        left, right, disp = synthetic_frame(rng, args.height, args.width, args.max_disp)
        t0 = time.perf_counter()
        index.add(left, right, disp, f"frame{i:05d}")
        add_seconds += time.perf_counter() - t0
        if i + 1 in marks:
            del left, right, disp
            t0 = time.perf_counter()
            index.batch(0, 0, 64)
            first = time.perf_counter() - t0
            g128, batches128 = time_gathers(index, 0, 128, args.batches)
            g1024, _ = time_gathers(index, 0, 1024, args.batches)
            rows.append({"frames": i + 1, "examples": len(index), "add_seconds": add_seconds, "first": first,
                         "gather128": g128, "gather1024": g1024, "cache_gb": index.cache_bytes / 2**30,
                         "ram_index_kb": index.nbytes / 1024, **memory_mb()})
    step = torch_step_seconds(batches128, 128, args.threads) if args.step else None

    print(f"# patch sampler: {args.frames} synthetic {args.width}x{args.height} frames, dense ground truth, max "
          f"disparity {args.max_disp}; {os.cpu_count()} CPUs, load average {load_before:.1f} -> "
          f"{os.getloadavg()[0]:.1f}; cache in {args.cache_dir or tempfile.gettempdir()}")
    print(f"# memory before indexing: VmRSS {base['VmRSS']:.0f} MB (Python, numpy)")
    print("| frames | examples | index build (s/frame) | first batch | gather 128 pairs | gather 1,024 pairs "
          "| peak RSS (VmHWM) | RssAnon | RssFile | cache on disk | index in RAM |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['frames']:,} | {r['examples']:,} | {1000 * r['add_seconds'] / r['frames']:.1f} ms "
              f"| {1000 * r['first']:.1f} ms | {1000 * r['gather128']:.2f} ms | {1000 * r['gather1024']:.2f} ms "
              f"| {r['VmHWM']:.0f} MB | {r['RssAnon']:.0f} MB | {r['RssFile']:.0f} MB | {r['cache_gb']:.2f} GB "
              f"| {r['ram_index_kb']:.0f} KB |")
    first, last = rows[0], rows[-1]
    prev = rows[-2] if len(rows) > 1 else first
    per_frame = (last["VmHWM"] - first["VmHWM"]) / max(1, last["frames"] - first["frames"])
    marginal = (last["VmHWM"] - prev["VmHWM"]) / max(1, last["frames"] - prev["frames"])
    projected = last["VmHWM"] + per_frame * (SCENE_FLOW_FRAMES - last["frames"])
    projected_marginal = last["VmHWM"] + marginal * (SCENE_FLOW_FRAMES - last["frames"])
    pixels = args.height * args.width
    old_per_frame = (8 * last["examples"] / last["frames"] + 8 * pixels) / 2**20
    print(f"\npeak RSS grows {1024 * per_frame:.1f} KB per frame from {first['frames']:,} to {last['frames']:,} "
          f"frames, {1024 * marginal:.1f} KB per frame from {prev['frames']:,} on; projected for "
          f"{SCENE_FLOW_FRAMES:,} frames: {projected:.0f} MB at the first rate, {projected_marginal:.0f} MB at the "
          f"last (cache on disk: {last['cache_gb'] / last['frames'] * SCENE_FLOW_FRAMES:.0f} GB)")
    print(f"the in-memory index it replaced: {old_per_frame:.1f} MB per frame, "
          f"{old_per_frame * last['frames'] / 1024:.1f} GB at {last['frames']:,} frames, "
          f"{old_per_frame * SCENE_FLOW_FRAMES / 1024:.0f} GB at {SCENE_FLOW_FRAMES:,}")
    print(f"index build: {last['add_seconds']:.1f} s for {last['frames']:,} frames (making the frames not counted)")
    if step is not None:
        g = last["gather128"]
        print(f"PyTorch step at 128 pairs ({args.threads} thread(s)): {1000 * step:.1f} ms; gather is "
              f"{100 * g / (g + step):.1f} % of gather + step")


if __name__ == "__main__":
    main()
