"""The whole pipeline on a KITTI pair (1242x375, 228 disparities): in-process stage times, whole-process time and
peak memory, a stream of pairs; optionally two source trees side by side (issues 15 and 14 item 8).

    python scripts/bench_pipeline.py                                  # this tree, 3 rounds
    python scripts/bench_pipeline.py --tree old=/tmp/base --tree new=. # before / after, interleaved

Every measurement runs in a fresh Python process with the tree's code first on PYTHONPATH (after one untimed
whole-process run per tree, which fills numba's cache); a round runs every measurement once for every tree, so the
trees see the same load. Rows are medians over the rounds; ratios are
taken per round (numerator and denominator seconds apart) and then the median.

Measurements (``--only`` picks a subset):

- ``fp32`` / ``int8``: one :class:`StereoMatcher` with the full post-processing (``kitti2015`` preset) over the pair:
  one untimed call, then ``--calls`` timed ones (median per stage); the process's peak RSS.
- ``stream``: ``--stream`` pairs through ``StereoMatcher.match_many`` (trees that have it): pairs per second, after
  one untimed pair.
- ``cli-full`` / ``cli-wta``: a whole ``python -m stereodeploy infer LEFT RIGHT --postprocess full|none`` process:
  wall time from the parent, peak RSS (VmHWM) from the child.
- ``bare-ort``: a whole Python process that reads the two PNGs, converts them to grey and computes the same two
  feature maps with plain onnxruntime (2 threads): the yardstick of the whole-process rows (issue 20: ``cli-wta``
  within 1.3x of it, ``cli-full`` within 2.0x, peak RSS of ``cli-full`` at most 1.5 GB). The CLI rows run with
  ``--threads 2`` too.
- ``start-up``: what a fresh process spends before it can match, measured alone (in the whole-process rows it runs
  in a thread beside the features): numba's import, the winner-take-all kernel, and the full pipeline's kernels, each
  loaded from numba's cache (wall and CPU seconds).
- ``wta-engines``: winner-take-all of one pair's features (after one untimed call) by the numba kernel and by the
  band graph of the one-file matcher (:func:`stereodeploy.deploy.onnx_pipeline.wta_nodes`) in onnxruntime with 2
  threads, wall and CPU seconds: the two ways issue 20 weighs.

After the rounds, ``--profile`` (on by default) runs ``python -X importtime -m stereodeploy infer`` (WTA) once per
tree and prints the cumulative import time of the packages that matter for start-up.

The pair is KITTI 2015 000005_10 from ../shared/data when present, else a synthetic textured pair.
"""

from __future__ import annotations

import argparse
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

ROOT = Path(__file__).resolve().parents[1]
KITTI = ROOT.parent / "shared" / "data" / "kitti2015" / "training"
MEASUREMENTS = ("fp32", "int8", "stream", "cli-full", "cli-wta", "bare-ort", "start-up", "wta-engines")
# cumulative import times printed by --profile (those a tree does not import are left blank)
PROFILED = ("numpy", "PIL.Image", "typer", "onnxruntime", "onnx", "ml_dtypes", "scipy", "scipy.linalg", "numba",
            "numba.np.arraymath", "stereodeploy.cli.app", "stereodeploy.engine.inference", "torch", "tensorflow")

# Run a module or a code string in this process, then write the peak RSS (VmHWM) to $BENCH_PEAK_FILE at exit.
_PEAK_HOOK = """
import atexit, os
def _peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            open(os.environ['BENCH_PEAK_FILE'], 'w').write(line.split()[1])
atexit.register(_peak)
"""
_RUN_CLI = _PEAK_HOOK + "import runpy, sys\nsys.argv[0] = 'stereodeploy'\nrunpy.run_module('stereodeploy', run_name='__main__', alter_sys=True)\n"
_BARE_ORT = _PEAK_HOOK + """
import sys
import numpy as np
import onnxruntime as ort
from PIL import Image
model, left, right = sys.argv[1:4]
gray = [np.asarray(Image.open(p).convert('RGB'), dtype=np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        for p in (left, right)]
options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(model, options, providers=['CPUExecutionProvider'])
feats = session.run(None, {session.get_inputs()[0].name: np.stack(gray)[:, None]})[0]
"""


def pair_files(folder: Path) -> tuple[Path, Path]:
    """The left and right PNG of the benchmark pair."""
    left, right = KITTI / "image_2" / "000005_10.png", KITTI / "image_3" / "000005_10.png"
    if left.is_file() and right.is_file():
        return left, right
    from stereodeploy.data.datasets import synthetic_pair
    from stereodeploy.data.io import write_png

    s = synthetic_pair(height=375, width=1242, max_disp=200, seed=0)
    write_png(folder / "left.png", s.left)
    write_png(folder / "right.png", s.right)
    return folder / "left.png", folder / "right.png"


# --------------------------------------------------------------------------------------------------- children
def child(kind: str, model: Path, left: Path, right: Path, calls: int, stream: int) -> dict[str, float]:
    """Runs in the measured process (the tree's code on PYTHONPATH)."""
    if kind == "start-up":
        return start_up()
    from stereodeploy.config import MatchConfig
    from stereodeploy.data.io import read_image
    from stereodeploy.engine.backends import open_backend
    from stereodeploy.engine.matcher import StereoMatcher

    if kind == "wta-engines":
        return wta_engines(model, left, right, calls)
    images = read_image(left), read_image(right)
    matcher = StereoMatcher(open_backend(model, "onnx"), MatchConfig.preset("full", 228), sgm_preset="kitti2015")
    out: dict[str, float] = {}
    if kind == "stream":
        if not hasattr(matcher, "match_many"):
            return {}
        matcher.match(*images)
        t = time.perf_counter()
        n = sum(1 for _ in matcher.match_many([images] * stream))
        out["pairs/s"] = n / (time.perf_counter() - t)
        return out
    matcher.match(*images)
    runs = [matcher.match(*images).timings for _ in range(calls)]
    for key in runs[0]:
        out[key] = statistics.median(r[key] for r in runs)
    out["post-processing"] = out["total"] - out["features"]
    status = Path("/proc/self/status").read_text()
    out["peak RSS (MB)"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
    return out


def _clock(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of ``fn()``; CPU counts every thread of the process."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def start_up() -> dict[str, float]:
    """numba's import and the kernels from its cache, in a fresh process, each step alone."""
    import importlib.util

    import numpy as np  # noqa: F401 - not part of what is measured

    from stereodeploy.config import MatchConfig

    out: dict[str, float] = {}
    # the way the matcher's loader imports numba; trees before issue 20 import it plainly (and their matcher module
    # imports numba itself, so it is not imported before the clock starts)
    matcher_src = Path(importlib.util.find_spec("stereodeploy.engine.matcher").origin).read_text()
    if "_import_numba_without_scipy" in matcher_src:
        from stereodeploy.engine.matcher import _import_numba_without_scipy as import_numba
    else:
        def import_numba() -> None:
            import numba  # noqa: F401
    out["numba import s"], out["numba import CPU s"] = _clock(import_numba)

    def wta() -> None:
        from stereodeploy.engine import matching

        try:
            matching.load_kernels(volume=False)
        except TypeError:  # trees before issue 20 load every matching kernel
            matching.load_kernels()
    out["WTA kernel s"], out["WTA kernel CPU s"] = _clock(wta)

    def full() -> None:
        from stereodeploy.engine import matching, postprocess

        matching.load_kernels()
        try:
            postprocess.load_kernels(MatchConfig.preset("full", 228, sgm_preset="kitti2015"))
        except TypeError:  # trees before issue 18 pass the preset beside the config
            postprocess.load_kernels(MatchConfig.preset("full", 228), "kitti2015")
    out["full kernels s"], out["full kernels CPU s"] = _clock(full)
    out["scipy imported"] = float("scipy" in sys.modules)
    return out


def wta_engines(model: Path, left: Path, right: Path, calls: int) -> dict[str, float]:
    """Winner-take-all of one pair's features: the numba kernel against the one-file matcher's band graph."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from stereodeploy.data.io import read_image
    from stereodeploy.data.preprocess import to_gray
    from stereodeploy.deploy.onnx_pipeline import Graph, wta_nodes
    from stereodeploy.engine.backends import open_backend
    from stereodeploy.engine.matching import wta_from_features

    backend = open_backend(model, "onnx", threads=2)
    fl, fr = backend.features_pair(to_gray(read_image(left)), to_gray(read_image(right)))
    g = Graph("wta", 17)
    g.op("Identity", wta_nodes(g, "features", 228, 128), name="disparity")
    graph = helper.make_graph(g.nodes, "wta", [helper.make_tensor_value_info("features", TensorProto.FLOAT,
                                                                              [2, None, None, None])],
                              [helper.make_tensor_value_info("disparity", TensorProto.FLOAT, None)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                                   .SerializeToString(), options, providers=["CPUExecutionProvider"])
    feats = np.stack([fl, fr])
    results: dict[str, list[float]] = {}
    same = True
    got: dict[str, np.ndarray] = {}
    engines = (("numba", lambda: wta_from_features(fl, fr, 228)),
               ("onnx band graph", lambda: session.run(None, {"features": feats})[0]))
    for i in range(calls + 1):
        for name, fn in engines:
            wall, cpu = _clock(lambda fn=fn, name=name: got.__setitem__(name, fn()))
            if i:  # the first call of each is untimed
                results.setdefault(f"{name} s", []).append(wall)
                results.setdefault(f"{name} CPU s", []).append(cpu)
        same = same and bool(np.array_equal(got["numba"], got["onnx band graph"]))
    out = {k: statistics.median(v) for k, v in results.items()}
    out["equal disparities"] = float(same)
    return out


def import_profile(tree: Path, cli_args: list[str]) -> dict[str, float]:
    """Cumulative import seconds of :data:`PROFILED` in one ``python -X importtime -m stereodeploy infer``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "stereodeploy", *cli_args], env=env, cwd=tree,
                         capture_output=True, text=True, timeout=600, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"importtime run failed:\n{run.stderr[-3000:]}")
    out: dict[str, float] = {}
    for line in run.stderr.splitlines():
        parts = line.split("|")
        if line.startswith("import time:") and len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].strip()
            if name in PROFILED and int(parts[1]) > 0:  # a refused import shows with 0
                out[name] = out.get(name, 0.0) + int(parts[1]) / 1e6
    return out


def run_child(tree: Path, args: list[str], code: str | None = None) -> tuple[float, dict[str, float]]:
    """(wall seconds, result) of one fresh process with ``tree`` on PYTHONPATH; for ``code``, the result holds the
    process's peak RSS and CPU seconds (user + system, every thread: robust where the machine is busy)."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    with tempfile.NamedTemporaryFile("r", suffix=".peak") as peak:
        env["BENCH_PEAK_FILE"] = peak.name
        cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, __file__, *args]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        run = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True, timeout=600, check=False)
        wall = time.perf_counter() - t
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:6])} failed:\n{run.stderr[-3000:]}")
        if code:
            return wall, {"peak RSS (MB)": int(Path(peak.name).read_text() or 0) / 1024,
                          "CPU s": cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime}
        return wall, json.loads(run.stdout.strip().splitlines()[-1])


def cli_args(left: Path, right: Path, model: Path, postprocess: str, out: Path) -> list[str]:
    return ["infer", str(left), str(right), "--model", str(model), "--postprocess", postprocess, "--max-disp", "228",
            "--threads", "2", "--out", str(out), "--overwrite"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "mccnn_fast_torch.onnx")
    ap.add_argument("--int8-model", type=Path, default=ROOT / "models" / "mccnn_fast_torch_int8.onnx")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                    help="a source tree to measure (repeatable; default: this one)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3, help="timed calls per in-process measurement")
    ap.add_argument("--stream", type=int, default=6, help="pairs in the stream measurement")
    ap.add_argument("--only", default=",".join(MEASUREMENTS), help=f"subset of {','.join(MEASUREMENTS)}")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                    help="print the import-time profile of a WTA infer per tree")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--pair", nargs=2, type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.model, *args.pair, args.calls, args.stream)))
        return

    trees = {t.split("=", 1)[0]: Path(t.split("=", 1)[1]).resolve() for t in args.tree} or {"this": ROOT}
    only = [m for m in args.only.split(",") if m]
    tmp = tempfile.TemporaryDirectory(prefix="bench-pipeline-")
    left, right = pair_files(Path(tmp.name))
    results: dict[tuple[str, str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    loads = [os.getloadavg()[0]]
    for tree in trees.values():  # untimed: numba compiles or loads its cache, the OS caches the files
        for pp in ("full", "none"):
            run_child(tree, cli_args(left, right, args.model, pp, Path(tmp.name) / "warm"), code=_RUN_CLI)
    per_round = []
    for _ in range(args.rounds):
        round_loads = [os.getloadavg()[0]]
        for name, tree in trees.items():
            got: dict[str, tuple[float, dict[str, float]]] = {}
            for m in only:
                if m in ("fp32", "int8", "stream", "start-up", "wta-engines"):
                    model = args.int8_model if m == "int8" else args.model
                    got[m] = run_child(tree, ["--child", m, "--model", str(model), "--pair", str(left), str(right),
                                              "--calls", str(args.calls), "--stream", str(args.stream)])
                elif m.startswith("cli-"):
                    out = Path(tmp.name) / f"out-{name}"
                    got[m] = run_child(tree, cli_args(left, right, args.model, "full" if m == "cli-full" else "none",
                                                      out), code=_RUN_CLI)
                    got[m][1]["seconds"] = got[m][0]
                else:
                    got[m] = run_child(tree, [str(args.model), str(left), str(right)], code=_BARE_ORT)
                    got[m][1]["seconds"] = got[m][0]
                for key, value in got[m][1].items():
                    results.setdefault((m, key, name), []).append(value)
            if "bare-ort" in got:
                for m in ("cli-full", "cli-wta"):
                    if m in got:
                        ratios.setdefault((f"{m} / bare-ort (whole process)", name), []).append(
                            got[m][0] / got["bare-ort"][0])
                        ratios.setdefault((f"{m} / bare-ort (CPU seconds)", name), []).append(
                            got[m][1]["CPU s"] / got["bare-ort"][1]["CPU s"])
            if "fp32" in got and "stream" in got and got["stream"][1]:
                ratios.setdefault(("stream: pairs/s x fp32 total (gain over one at a time)", name), []).append(
                    got["stream"][1]["pairs/s"] * got["fp32"][1]["total"])
            round_loads.append(os.getloadavg()[0])
        per_round.append(f"{min(round_loads):.1f}-{max(round_loads):.1f}")
        loads += round_loads
    profiles = {}
    if args.profile:
        for name, tree in trees.items():
            profiles[name] = import_profile(tree, cli_args(left, right, args.model, "none", Path(tmp.name) / "prof"))
    loads.append(os.getloadavg()[0])
    tmp.cleanup()

    names = list(trees)
    print(f"# pipeline, {left.name} ({'KITTI 2015' if KITTI in left.parents else 'synthetic'}) 1242x375, max "
          f"disparity 228, kitti2015 SGM preset, model {args.model.name}; median of {args.rounds} rounds, "
          f"{args.calls} calls each in-process")
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}; load average "
          f"(1 min): {loads[0]:.1f} before the run, {loads[-1]:.1f} after it, per round "
          + ", ".join(per_round) + "; trees: " + ", ".join(f"{n}={p}" for n, p in trees.items()))
    print("| measurement | value | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    rows = dict.fromkeys((m, k) for m, k, _ in results)
    for m, k in rows:
        cells = [results.get((m, k, n)) for n in names]
        print(f"| {m} | {k} | " + " | ".join(f"{statistics.median(c):.3f}" if c else "" for c in cells) + " |")
    for label in dict.fromkeys(r for r, _ in ratios):
        cells = [ratios.get((label, n)) for n in names]
        print(f"| ratio | {label} | " + " | ".join(f"{statistics.median(c):.2f}" if c else "" for c in cells)
              + " |")
    if profiles:
        print("\n# import-time profile of one `python -X importtime -m stereodeploy infer` (WTA): cumulative seconds "
              "per package, blank = not imported")
        print("| package | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for module in PROFILED:
            print(f"| {module} | " + " | ".join(f"{profiles[n][module]:.3f}" if module in profiles[n] else ""
                                                 for n in names) + " |")


if __name__ == "__main__":
    main()
