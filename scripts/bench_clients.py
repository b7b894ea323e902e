"""The full-pipeline file on a KITTI frame in every client, beside the engine (issue 21): time and peak memory.

    python scripts/bench_clients.py                 # engine, Python, Node, C++, browser
    python scripts/bench_clients.py --only python,node

One ONNX file (``export-matcher``, shipped PyTorch model, ``--postprocess full --preset kitti2015 --max-disp 228``,
the default strips) runs on KITTI 2015 000005_10 (1242 x 375) in each client as a whole process, 2 threads, the
memory arena off as the examples run it; the engine row is ``stereodeploy infer --postprocess full`` on the same
pair with the same preset and range. Time is the whole process's wall time from this script (start-up, model
load, images and the match). Peak memory is the process's own maximum RSS (``wait4``); for the browser, the
largest peak (VmHWM) of any Chromium process, sampled every 0.2 s. Every client's disparity is scored against the
frame's ground truth (>= 3 px error, all pixels), so the rows are also a check that they compute the same thing.

Needs what ``examples/install.sh`` installs (npm packages, chromium, the C++ toolchain and onnxruntime headers);
a client whose parts are missing is skipped with a line saying what is missing. Run it on an otherwise quiet
machine: the rows run one after another, and the load average is printed with the table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CLIENTS = ("engine", "python", "node", "cpp", "browser")
MAX_DISP, PRESET, THREADS = 228, "kitti2015", 2

_PYTHON_ORT = """
import sys
import numpy as np
import onnxruntime as ort
from PIL import Image
from stereodeploy.data.io import write_pfm
model, left, right, out = sys.argv[1:5]
options = ort.SessionOptions()
options.intra_op_num_threads = {threads}
options.enable_cpu_mem_arena = False
session = ort.InferenceSession(model, options, providers=['CPUExecutionProvider'])
images = [np.asarray(Image.open(p).convert('RGB')) for p in (left, right)]
write_pfm(out, session.run(['disparity'], {{'left': images[0], 'right': images[1]}})[0])
"""


def run_measured(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``cmd`` to completion: (wall seconds, peak RSS in GiB of the process and the children it waited for)."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{log.read_text()[-2000:]}")
    return seconds, usage.ru_maxrss * 1024 / 2**30


class PeakSampler:
    """The largest VmHWM of any process whose command line contains ``needle``, sampled every ``period`` s."""

    def __init__(self, needle: str, period: float = 0.2):
        self.needle, self.period, self.peak = needle, period, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if self.needle not in (proc / "cmdline").read_bytes().decode(errors="replace"):
                        continue
                    for line in (proc / "status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
                except OSError:  # the process ended meanwhile
                    continue
            self._stop.wait(self.period)


def cpp_binary(work: Path) -> Path | str:
    """examples/cpp built with CMake into ``work``, or why it cannot be."""
    cmake = shutil.which("cmake")
    if cmake is None or shutil.which("g++") is None:
        return "cmake and g++"
    if not (EXAMPLES / "cpp" / "onnxruntime" / "include" / "onnxruntime_cxx_api.h").is_file():
        return "examples/cpp/onnxruntime (bash examples/install.sh)"
    build = work / "cpp"
    for step in ([cmake, "-S", str(EXAMPLES / "cpp"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                 [cmake, "--build", str(build)]):
        subprocess.run(step, check=True, capture_output=True)
    return build / "match"


def measure(client: str, model: Path, left: Path, right: Path, work: Path) -> tuple[float, float, Path] | str:
    """(seconds, peak GiB, disparity PFM) of ``client``, or what it is missing."""
    out = work / f"{client}.pfm"
    log = work / f"{client}.log"
    node = shutil.which("node")
    if client == "engine":
        folder = work / "engine"
        seconds, peak = run_measured(
            [sys.executable, "-m", "stereodeploy", "infer", str(left), str(right), "--postprocess", "full",
             "--preset", PRESET, "--max-disp", str(MAX_DISP), "--threads", str(THREADS), "--out", str(folder)], log)
        return seconds, peak, folder / f"{left.stem}_disp.pfm"
    if client == "python":
        code = _PYTHON_ORT.format(threads=THREADS)
        seconds, peak = run_measured([sys.executable, "-c", code, str(model), str(left), str(right), str(out)], log)
        return seconds, peak, out
    if client == "node":
        if node is None or not (EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir():
            return "node and examples/node/node_modules (bash examples/install.sh)"
        seconds, peak = run_measured([node, str(EXAMPLES / "node" / "match.mjs"), "--model", str(model), "--left",
                                      str(left), "--right", str(right), "--out", str(out), "--threads",
                                      str(THREADS)], log)
        return seconds, peak, out
    if client == "cpp":
        binary = cpp_binary(work)
        if isinstance(binary, str):
            return binary
        seconds, peak = run_measured([str(binary), "--model", str(model), "--left", str(left), "--right",
                                      str(right), "--out", str(out), "--threads", str(THREADS)], log)
        return seconds, peak, out
    chromium = shutil.which("chromium")
    if node is None or chromium is None or not (EXAMPLES / "web" / "node_modules" / "puppeteer-core").is_dir():
        return "node, chromium and examples/web/node_modules (bash examples/install.sh)"
    from stereodeploy.deploy.serve import make_server

    server = make_server(0, model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with PeakSampler("chromium") as sampler:
            seconds, _ = run_measured([node, str(EXAMPLES / "web" / "test" / "drive.mjs"), "--chromium", chromium,
                                       "--url", f"http://127.0.0.1:{server.server_address[1]}/", "--left",
                                       str(left), "--right", str(right), "--out", str(out), "--timeout", "1500"],
                                      log)
    finally:
        server.shutdown()
        server.server_close()
    return seconds, sampler.peak / 2**30, out


def runtime_version(client: str) -> str:
    """The onnxruntime each client runs."""
    import onnxruntime

    if client == "python":
        return f"{onnxruntime.__version__} (PyPI)"
    if client == "engine":
        return f"{onnxruntime.__version__} + numba"
    package = {"node": "onnxruntime-node", "cpp": "onnxruntime-node", "browser": "onnxruntime-web"}[client]
    folder = "web" if client == "browser" else "node"
    try:
        meta = json.loads((EXAMPLES / folder / "node_modules" / package / "package.json").read_text())
        return f"{meta['version']} ({package}{chr(39) + 's library' if client == 'cpp' else ''})"
    except OSError:
        return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--only", default=",".join(CLIENTS), help=f"comma-separated subset of {', '.join(CLIENTS)}")
    args = parser.parse_args()
    clients = [c for c in args.only.split(",") if c]
    if unknown := set(clients) - set(CLIENTS):
        parser.error(f"unknown clients {sorted(unknown)}: use {', '.join(CLIENTS)}")

    from stereodeploy.data.datasets import list_frames, load_frame
    from stereodeploy.data.io import read_pfm
    from stereodeploy.deploy.export_matcher import export_matcher
    from stereodeploy.study.evaluate import error_rate

    frames = [f for f in list_frames(args.data / "kitti2015") if f.name == "000005_10"]
    if not frames:
        sys.exit(f"error: {args.data / 'kitti2015'} has no frame 000005_10: give --data with KITTI 2015")
    frame = frames[0]
    truth = load_frame(frame).disp
    load = [os.getloadavg()[0]]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-clients-") as tmp:
        work = Path(tmp)
        model = export_matcher(None, work / "kitti.onnx", max_disp=MAX_DISP, postprocess="full",
                               preset=PRESET).path
        for client in clients:
            got = measure(client, model, frame.left, frame.right, work)
            load.append(os.getloadavg()[0])
            if isinstance(got, str):
                print(f"# {client}: skipped, needs {got}", file=sys.stderr)
                continue
            seconds, peak, disp = got
            rows.append((client, runtime_version(client), seconds, peak, error_rate(read_pfm(disp), truth)))
    print(f"# full pipeline, KITTI 2015 000005_10 (1242x375), max disparity {MAX_DISP}, {PRESET} preset, "
          f"{THREADS} threads; whole processes one after another; load average (1 min) "
          f"{' -> '.join(f'{x:.1f}' for x in load)}")
    print("| client | onnxruntime | time (s) | peak memory (GiB) | >= 3 px error (%) |")
    print("|---|---|---|---|---|")
    for client, version, seconds, peak, err in rows:
        print(f"| {client} | {version} | {seconds:.1f} | {peak:.2f} | {err:.2f} |")


if __name__ == "__main__":
    main()
