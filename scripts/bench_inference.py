"""Inference speed and memory on a KITTI-sized pair (1242x375, max disparity 228), per backend, one table.

    python scripts/bench_inference.py                        # the shipped model, every backend installed
    python scripts/bench_inference.py --model m.onnx --repeats 5 --backends onnx,onnx-int8

Rows: the seconds of each stage, the median over ``--repeats`` rounds. In every round the backends run one after
the other, with the yardstick (onnxruntime float32 on the same model: ``session.run`` on the ready (2, 1, H, W)
input, nothing else) before and after each, so ratios compare times taken seconds apart under the same load; the
first ratio row is the median of the per-call ratios, each WTA call against the mean of the yardstick runs just
before and just after it; the second divides the fastest WTA call by the fastest yardstick run (the minima are
the best estimate of an idle machine). ``wta total`` is the whole winner-take-all call of the engine
(grayscale, features, fused cost volume + winner-take-all). Post-processing stages (SGM, left-right check,
subpixel, median, bilateral) work on the volume whatever made it, so they run once per round, on onnx float32.
Peak memory: a fresh subprocess per backend runs one pair (full pipeline where post-processing exists) and
reports its peak resident set size and the tracemalloc peak of numpy arrays during the call.

The model: ``--model``, else models/mccnn_fast_torch.onnx, else a randomly initialised network exported into a
temporary folder (speed does not depend on the weights). The int8 model is quantised from it on the fly
(``--calibration``, else scikit-image's Motorcycle pair, else synthetic images).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
H, W = 375, 1242
BACKENDS = ("onnx", "onnx-int8", "torch", "tf")


def random_model(folder: Path, max_disp: int) -> Path:
    """A randomly initialised MC-CNN fast exported with the real export path."""
    from stereodeploy.config import NetworkConfig
    from stereodeploy.deploy.export import export
    from stereodeploy.nets.weights import init_weights
    from stereodeploy.train.checkpoint import Checkpoint, save_checkpoint

    net = NetworkConfig()
    save_checkpoint(folder / "checkpoint.npz", Checkpoint(framework="torch", network=net, weights=init_weights(net, 0)))
    return export(folder / "checkpoint.npz", folder / "random.onnx", max_disp=max_disp).path


def int8_model(fp32: Path, folder: Path, calibration: list[str]) -> Path:
    from stereodeploy.deploy.quantize import quantize_model

    if not calibration and importlib.util.find_spec("skimage") is None:
        from stereodeploy.data.datasets import synthetic_pair
        from stereodeploy.data.io import write_png

        for seed in range(2):
            s = synthetic_pair(height=H, width=W, max_disp=200, seed=100 + seed)
            write_png(folder / f"calib{seed}.png", s.left)
        calibration = [str(folder / f"calib{seed}.png") for seed in range(2)]
    return quantize_model(fp32, folder / "model_int8.onnx", calibration).path


def available(name: str) -> bool:
    module = {"torch": "torch", "tf": "tensorflow"}.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def open_backend(name: str, fp32: Path, int8: Path | None):
    from stereodeploy.engine.backends import open_backend as _open

    if name == "onnx-int8":
        return _open(int8, "onnx")
    return _open(fp32, name)


def kitti_pair() -> tuple[np.ndarray, np.ndarray]:
    from stereodeploy.data.datasets import synthetic_pair

    s = synthetic_pair(height=H, width=W, max_disp=200, seed=0)
    return s.left, s.right


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB.

    From /proc/self/status where it exists: ``getrusage``'s ``ru_maxrss`` would also count the parent's memory
    at the time it forked this process (Linux keeps it across exec).
    """
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak


def memory_child(name: str, fp32: Path, int8: Path | None, max_disp: int) -> dict[str, float]:
    """Run one pair in this (fresh) process; peak RSS and array peak in MB."""
    import tracemalloc

    from stereodeploy.config import MatchConfig
    from stereodeploy.engine.matcher import StereoMatcher

    full = importlib.util.find_spec("stereodeploy.engine.postprocess") is not None
    left, right = kitti_pair()
    matcher = StereoMatcher(open_backend(name, fp32, int8), MatchConfig.preset("full" if full else "none", max_disp),
                            sgm_preset="kitti2015")
    small = matcher.with_max_disp(8)
    small.match(left[:32, :64], right[:32, :64])  # compile / load kernels outside the measurement
    before = rss_mb()[0]
    tracemalloc.start()
    matcher.match(left, right)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"pipeline": "full" if full else "wta", "rss_before_mb": before, "peak_rss_mb": rss_mb()[1],
            "array_peak_mb": peak / 2**20}


def measure_memory(name: str, fp32: Path, int8: Path | None, max_disp: int) -> dict[str, float] | None:
    cmd = [sys.executable, __file__, "--memory-child", name, "--model", str(fp32), "--max-disp", str(max_disp)]
    if int8 is not None:
        cmd += ["--int8", str(int8)]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900, check=False)
    if run.returncode != 0:
        print(f"memory run of {name} failed: {run.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="float32 feature model (default: the shipped one)")
    ap.add_argument("--max-disp", type=int, default=228)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated subset of {', '.join(BACKENDS)}")
    ap.add_argument("--calibration", action="append", default=[], help="calibration image/dataset for int8")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--int8", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.model, args.int8, args.max_disp)))
        return

    from stereodeploy.config import MatchConfig
    from stereodeploy.data.preprocess import to_gray
    from stereodeploy.engine.matcher import StereoMatcher

    names = [b for b in args.backends.split(",") if b]
    unknown = set(names) - set(BACKENDS)
    if unknown:
        sys.exit(f"unknown backends {sorted(unknown)}: use {', '.join(BACKENDS)}")
    skipped = [b for b in names if not available(b)]
    names = [b for b in names if available(b)]
    tmp = tempfile.TemporaryDirectory(prefix="bench-inference-")
    folder = Path(tmp.name)
    shipped = ROOT / "models" / "mccnn_fast_torch.onnx"
    fp32 = args.model or (shipped if shipped.is_file() else random_model(folder, args.max_disp))
    t0 = time.perf_counter()
    int8 = int8_model(fp32, folder, args.calibration) if "onnx-int8" in names else None
    quant_seconds = time.perf_counter() - t0
    full = importlib.util.find_spec("stereodeploy.engine.postprocess") is not None

    left, right = kitti_pair()
    ready = np.stack([to_gray(left), to_gray(right)])[:, None].astype(np.float32)
    backends = {n: open_backend(n, fp32, int8) for n in names}
    yard = backends["onnx"] if "onnx" in backends else open_backend("onnx", fp32, None)
    wta = {n: StereoMatcher(b, MatchConfig.preset("none", args.max_disp)) for n, b in backends.items()}
    post = StereoMatcher(yard, MatchConfig.preset("full", args.max_disp), sgm_preset="kitti2015") if full else None
    for n in names:  # warm-up: sessions, graph optimisation, numba kernels
        wta[n].match(left, right)
        backends[n].cost_volume(to_gray(left), to_gray(right), args.max_disp, {})
    if post is not None:
        post.match(left, right)

    rows: dict[str, dict[str, list[float]]] = {}

    def add(row: str, col: str, value: float) -> None:
        rows.setdefault(row, {}).setdefault(col, []).append(value)

    load_before = os.getloadavg()[0]
    def yardstick() -> float:
        t = time.perf_counter()
        yard.features_batch(ready)
        seconds = time.perf_counter() - t
        add("features only, onnxruntime fp32 (yardstick)", "onnx", seconds)
        return seconds

    for _ in range(args.repeats):
        before = yardstick()
        for n in names:
            r = wta[n].match(left, right).timings
            after = yardstick()  # each WTA call sits between two yardstick runs
            add("features", n, r["features"])
            add("cost volume + WTA, fused", n, r["matching"])
            add("wta total", n, r["total"])
            add("wta total / yardstick (median of per-call ratios)", n, 2 * r["total"] / (before + after))
            before = after
            timings: dict[str, float] = {}
            backends[n].cost_volume(to_gray(left), to_gray(right), args.max_disp, timings)
            add("cost volume (stored, for post-processing)", n, timings["cost_volume"])
        if post is not None:
            r = post.match(left, right).timings
            stages = [k for k in r if k not in ("features", "cost_volume", "matching", "total")]
            for k in stages:
                add(f"  post: {k}", "onnx", r[k])
            add("post-processing chain (all stages)", "onnx", sum(r[k] for k in stages))
            add("full pipeline total", "onnx", r["total"])
    load_after = os.getloadavg()[0]
    fastest = min(rows["features only, onnxruntime fp32 (yardstick)"]["onnx"])
    median_row, minima_row = "wta total / yardstick (median of per-call ratios)", "  (ratio of the minima)"
    for n in names:
        add(minima_row, n, min(rows["wta total"][n]) / fastest)
    order = [k for k in rows if k != minima_row]
    order.insert(order.index(median_row) + 1, minima_row)
    rows = {k: rows[k] for k in order}

    memory = {} if args.no_memory else {n: measure_memory(n, fp32, int8, args.max_disp) for n in names}
    for n, m in memory.items():
        if m:
            add(f"peak RSS, one {m['pipeline']} pair (MB)", n, m["peak_rss_mb"])
            add("  of which before the call (MB)", n, m["rss_before_mb"])
            add("  numpy arrays peak during the call (MB)", n, m["array_peak_mb"])

    versions = {"onnxruntime": _version("onnxruntime"), "numba": _version("numba"), "torch": _version("torch"),
                "tensorflow": _version("tensorflow")}
    print(f"# inference, {W}x{H} synthetic textured pair, max disparity {args.max_disp}, model {fp32.name}, "
          f"median of {args.repeats} rounds")
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}; "
          f"load average {load_before:.1f} -> {load_after:.1f}; "
          + ", ".join(f"{k} {v}" for k, v in versions.items() if v))
    if int8 is not None:
        print(f"# int8 model quantised in {quant_seconds:.1f} s")
    if skipped:
        print(f"# not installed, skipped: {', '.join(skipped)}")
    width = max(len(r) for r in rows) + 2
    print(f"| {'stage (seconds unless noted)':<{width}}|" + "|".join(f"{n:>11} " for n in names) + "|")
    print(f"|{'-' * (width + 1)}|" + "|".join("-" * 12 for _ in names) + "|")
    for row, cols in rows.items():
        cells = []
        for n in names:
            v = cols.get(n)
            cells.append(f"{statistics.median(v):>11.3f} " if v else f"{'':>12}")
        print(f"| {row:<{width}}|" + "|".join(cells) + "|")
    tmp.cleanup()


def _version(module: str) -> str:
    if importlib.util.find_spec(module) is None:
        return ""
    from importlib.metadata import PackageNotFoundError, version

    for dist in (module, {"tensorflow": "tensorflow-cpu"}.get(module, module)):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return ""


if __name__ == "__main__":
    main()
