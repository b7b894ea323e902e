"""Speed and peak memory of the full pipeline in one ONNX file against the engine, on a KITTI-sized pair.

    PYTHONPATH=$PWD python scripts/bench_matcher.py [--max-disp 228] [--rounds 2] [--threads 2] [--profile]

Contenders, each in a fresh process per round (so each peak RSS is its own), rounds interleaved:

- ``engine``: ``StereoMatcher(postprocess='full')`` (onnxruntime features + numba post-processing);
- ``onnx-python``: the ``export-matcher --postprocess full`` file in onnxruntime's Python binding;
- ``onnx-node``: the same file in onnxruntime-node (``examples/node/match.mjs``; needs its npm packages).

Each process times one warm-up run and one measured run (the minimum over rounds is reported); peak memory is
the process's VmHWM (Python) or maxRSS (Node). ``--profile`` adds onnxruntime's per-operator profile of the file:
which operators take the time. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KITTI = ROOT.parent / "shared" / "data" / "kitti2015" / "training"
FRAME = "000005_10"

ENGINE = """
import json, sys, time
from stereodeploy.engine.matcher import StereoMatcher
from stereodeploy.data.io import read_image
left, right, model, max_disp, preset = sys.argv[1:6]
l, r = read_image(left), read_image(right)
m = StereoMatcher.from_file(model, max_disp=int(max_disp), postprocess="full", sgm_preset=preset)
m(l, r)
t = time.perf_counter(); m(l, r); seconds = time.perf_counter() - t
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak}))
"""

ONNX_PYTHON = """
import json, sys, time
import onnxruntime as ort
from stereodeploy.data.io import read_image
left, right, model, threads = sys.argv[1:5]
l, r = read_image(left), read_image(right)
so = ort.SessionOptions()
so.intra_op_num_threads = int(threads)
so.enable_cpu_mem_arena = False  # onnxruntime's arena keeps every size it ever held: 2x the peak here
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
s.run(None, {"left": l, "right": r})
t = time.perf_counter(); s.run(None, {"left": l, "right": r}); seconds = time.perf_counter() - t
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
print(json.dumps({"seconds": seconds, "peak_mib": peak}))
"""


def run_json(cmd: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile(model: Path, left: Path, right: Path, threads: int, top: int = 15) -> list[tuple[str, float, int]]:
    """(operator type and stage, seconds, calls) of one profiled run, the largest first."""
    import collections

    import onnxruntime as ort

    from stereodeploy.data.io import read_image

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.gettempdir()) / "bench_matcher_profile")
    s = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    s.run(None, {"left": read_image(left), "right": read_image(right)})
    path = s.end_profiling()
    seconds: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    for event in json.loads(Path(path).read_text()):
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        parts = name.split("/")
        stage = parts[1] if parts[0] in ("matching", "matcher") and len(parts) > 1 else parts[0]
        if parts[0] in ("matching", "matcher"):
            stage = stage.rsplit("_", 1)[0]  # the node's running number
        key = f"{event['args']['op_name']} in {stage}"
        seconds[key] += event["dur"] / 1e6
        calls[key] += 1
    Path(path).unlink()
    return [(k, v, calls[k]) for k, v in seconds.most_common(top)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-disp", type=int, default=228)
    ap.add_argument("--preset", default="kitti2015")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    from stereodeploy.deploy.export_matcher import export_matcher
    from stereodeploy.engine.shipped import default_model_path

    left, right = KITTI / "image_2" / f"{FRAME}.png", KITTI / "image_3" / f"{FRAME}.png"
    if not left.is_file():
        sys.exit(f"{left} is missing: this benchmark needs ../shared/data")
    work = Path(tempfile.mkdtemp(prefix="bench_matcher_"))
    model = default_model_path()
    matcher = export_matcher(model, work / "matcher.onnx", max_disp=args.max_disp, postprocess="full",
                             preset=args.preset).path
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "NUMBA_NUM_THREADS": str(args.threads)}
    node = shutil.which("node")
    node_ready = node is not None and (ROOT / "examples" / "node" / "node_modules" / "onnxruntime-node").is_dir()
    contenders = {
        "engine (onnxruntime features + numba post-processing)":
            [sys.executable, "-c", ENGINE, str(left), str(right), str(model), str(args.max_disp), args.preset],
        "one ONNX file, onnxruntime Python":
            [sys.executable, "-c", ONNX_PYTHON, str(left), str(right), str(matcher), str(args.threads)],
    }
    if node_ready:
        contenders["one ONNX file, onnxruntime-node"] = [
            node, str(ROOT / "examples" / "node" / "match.mjs"), "--model", str(matcher), "--left", str(left),
            "--right", str(right), "--out", str(work / "d.pfm"), "--threads", str(args.threads), "--repeat", "2",
            "--json"]
    results: dict[str, list[dict]] = {k: [] for k in contenders}
    for _ in range(args.rounds):
        for name, cmd in contenders.items():
            r = run_json(cmd, env)
            if "peak_rss_mib" in r:  # node: the first run is the warm-up
                r = {"seconds": min(r["seconds"][1:] or r["seconds"]), "peak_mib": r["peak_rss_mib"]}
            results[name].append(r)
            print(f"  {name}: {r['seconds']:.2f} s, {r['peak_mib']:.0f} MiB", file=sys.stderr, flush=True)
    base = min(r["seconds"] for r in results[next(iter(results))])
    load = os.getloadavg()
    print(f"\n1242x375 KITTI 2015 pair {FRAME}, max disparity {args.max_disp}, preset {args.preset}, "
          f"{args.threads} threads, best of {args.rounds} rounds (load average at the end {load[0]:.1f})\n")
    print("| contender | seconds | vs engine | peak memory |")
    print("|---|---:|---:|---:|")
    for name, rs in results.items():
        best = min(r["seconds"] for r in rs)
        peak = max(r["peak_mib"] for r in rs)
        print(f"| {name} | {best:.2f} | {best / base:.2f}x | {peak / 1024:.2f} GiB |")
    if not node_ready:
        print("\n(onnxruntime-node not installed: run `bash examples/install.sh`)")
    if args.profile:
        print("\nWhere the file's time goes (onnxruntime profile of one run; a Scan or Loop row includes the "
              "operators of its body, which are also listed by type, summed over all steps):\n")
        print("| operator in stage | seconds | calls |")
        print("|---|---:|---:|")
        for key, sec, n in profile(matcher, left, right, args.threads):
            print(f"| {key} | {sec:.2f} | {n} |")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
