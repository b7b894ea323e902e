"""PyTorch training step time against the number of threads, with and without another process loading a core.

    python scripts/bench_threads.py                 # 1 thread, all cores, and stereodeploy's default
    python scripts/bench_threads.py --steps 30 --rounds 3

The same 4 x 64 network and batches of 128 pairs for every setting; the settings are interleaved in ``--rounds``
rounds so that a change of the machine's load hits them alike. ``loaded`` starts one busy-looping process (a
competing job) for its part. ``default`` is what ``stereodeploy.util.threads.configure_threads(None)`` picks at that
moment (free cores from the load average, shared by this node's processes). Prints one table of median step times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from stereodeploy.config import NetworkConfig, SamplerConfig, TrainConfig
from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.data.patches import PatchIndex
from stereodeploy.data.preprocess import to_gray
from stereodeploy.nets.weights import init_weights
from stereodeploy.util.threads import configure_threads, default_threads, usable_cores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per setting and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    from stereodeploy.train.torch_trainer import TorchStepper

    network = NetworkConfig()
    cfg = TrainConfig(batch_size=128)
    index = PatchIndex(network.patch_size, SamplerConfig(seed=0))
    s = synthetic_pair(375, 1242, max_disp=64, seed=0)
    index.add(to_gray(s.left), to_gray(s.right), s.disp)
    batches = [index.batch(0, i, cfg.examples_per_batch) for i in range(args.steps + 2)]
    stepper = TorchStepper(network, cfg, init_weights(network, 0))
    cores = usable_cores()

    def time_setting(threads: int) -> list[float]:
        torch.set_num_threads(threads)
        times = []
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            stepper.step(b, cfg.lr)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        return times

    results: dict[tuple[str, str], list[float]] = {}
    defaults = {}
    for phase in ("as is", "loaded"):
        loader = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if phase == "loaded" else None
        try:
            time.sleep(1.0 if loader else 0.0)
            defaults[phase] = default_threads()
            settings = {"1": 1, str(cores): cores, f"default ({defaults[phase]})": defaults[phase]}
            for _ in range(args.rounds):
                for name, n in settings.items():
                    results.setdefault((phase, name), []).extend(time_setting(n))
        finally:
            if loader is not None:
                loader.kill()
                loader.wait()
    configure_threads(1)
    print(f"# PyTorch {torch.__version__} step, 4x64 network, 128 pairs; {cores} usable cores; load average "
          f"{os.getloadavg()[0]:.1f} at the end; {args.rounds} rounds x {args.steps} steps per setting")
    print("| machine | threads | median step | vs 1 thread |")
    print("|---|---|---|---|")
    for phase in ("as is", "loaded"):
        one = float(np.median(results[(phase, "1")]))
        for (p, name), times in results.items():
            if p == phase:
                med = float(np.median(times))
                label = "as is" if phase == "as is" else "+ 1 busy process"
                print(f"| {label} | {name} | {1000 * med:.1f} ms | {med / one:.2f}x |")


if __name__ == "__main__":
    main()
