"""Training step speed of PyTorch against TensorFlow: same network, same initial weights, same batches, one process.

    python scripts/bench_train.py                                  # batches of 128 and 1024 pairs, one table
    python scripts/bench_train.py --steps 100 --batch-sizes 128 [--device cuda] [--threads 2] [--json]

Each framework runs ``--warmup`` steps (tracing, allocator warm-up; not timed), then ``--steps`` timed steps, each
timed the way the training loop times it (the step returns after the device finished). Both frameworks get the
very same batches, gathered once beforehand by the patch sampler; the time of each gather is measured too, and
``sampler share`` is gather / (gather + step): the part of a training step the sampler would add if it ran in the
same thread. Prints one table, or with ``--json`` one JSON object per batch size (mean step seconds and examples
per second for each framework, the TF / torch ratios, the gather time).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from stereodeploy.config import NetworkConfig, SamplerConfig, TrainConfig
from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.data.patches import PatchIndex
from stereodeploy.data.preprocess import to_gray
from stereodeploy.nets.weights import init_weights
from stereodeploy.train.api import make_stepper


def time_steps(stepper, batches, warmup: int, lr: float) -> list[float]:
    for b in batches[:warmup]:
        stepper.step(b, lr)
    times = []
    for b in batches[warmup:]:
        t0 = time.perf_counter()
        stepper.step(b, lr)
        times.append(time.perf_counter() - t0)
    return times


def bench(args: argparse.Namespace, network: NetworkConfig, index: PatchIndex, batch_size: int) -> dict:
    """Time gathering and stepping ``args.warmup + args.steps`` batches of ``batch_size`` pairs, both frameworks."""
    cfg = TrainConfig(batch_size=batch_size, device=args.device)
    per = cfg.examples_per_batch
    available = index.num_batches(per)
    batches, gathers = [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        batches.append(index.batch(0, i % available, per))
        gathers.append(time.perf_counter() - t0)
    gather = float(np.median(gathers[args.warmup:]))
    weights = init_weights(network, cfg.seed)
    result: dict = {"network": f"{args.layers}x{args.maps}", "batch_size": batch_size, "examples_per_batch": per,
                    "steps": args.steps, "device": args.device, "threads": args.threads or "default",
                    "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
                    "gather_seconds_per_batch": gather}
    for fw in args.frameworks.split(","):
        stepper = make_stepper(fw, network, cfg, weights)
        times = np.array(time_steps(stepper, batches, args.warmup, cfg.lr))
        result[fw] = {"version": stepper.framework_version, "device": stepper.device,
                      "mean_step_seconds": float(times.mean()), "median_step_seconds": float(np.median(times)),
                      "examples_per_second": float(per / times.mean()),
                      "sampler_share": gather / (gather + float(np.median(times)))}
    if "torch" in result and "tf" in result:
        tf_r, torch_r = result["tf"], result["torch"]
        result["tf_over_torch_examples_per_second"] = tf_r["examples_per_second"] / torch_r["examples_per_second"]
        result["tf_over_torch_mean_step"] = tf_r["mean_step_seconds"] / torch_r["mean_step_seconds"]
    result["load_average_1min_after"] = os.getloadavg()[0]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=None, help="pairs per batch (examples = half); one size")
    ap.add_argument("--batch-sizes", default="128,1024", help="comma-separated pairs per batch (default 128,1024)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--maps", type=int, default=64)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0,
                    help="threads of both frameworks (0: stereodeploy.util.threads' default, as `train` picks it)")
    ap.add_argument("--frameworks", default="torch,tf")
    ap.add_argument("--json", action="store_true", help="print JSON objects instead of the table")
    args = ap.parse_args()

    from stereodeploy.util.threads import configure_threads

    settings = configure_threads(args.threads or None, frameworks=args.frameworks.split(","))
    args.threads = settings["threads"]
    sizes = [args.batch_size] if args.batch_size else [int(b) for b in args.batch_sizes.split(",")]
    network = NetworkConfig(layers=args.layers, maps=args.maps)
    index = PatchIndex(network.patch_size, SamplerConfig(seed=0))
    for seed in range(2):
        s = synthetic_pair(375, 1242, max_disp=64, seed=seed)
        index.add(to_gray(s.left), to_gray(s.right), s.disp, f"synthetic{seed}")
    results = [bench(args, network, index, size) for size in sizes]
    if args.json:
        for r in results:
            print(json.dumps(r, indent=2))
        return
    frameworks = args.frameworks.split(",")
    first = results[0]
    print(f"# training step, MC-CNN fast {first['network']}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"same batches for every framework; device {args.device}, threads {first['threads']}, "
          f"{first['cpu_count']} CPUs, load average {first['load_average_1min']:.1f} -> "
          f"{results[-1]['load_average_1min_after']:.1f}; "
          + ", ".join(f"{fw} {first[fw]['version']}" for fw in frameworks))
    print("| framework | batch (pairs) | examples/batch | step ms (mean) | examples/s | gather ms/batch | sampler share |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for fw in frameworks:
            f = r[fw]
            print(f"| {fw} | {r['batch_size']} | {r['examples_per_batch']} | {1000 * f['mean_step_seconds']:.1f} | "
                  f"{f['examples_per_second']:.0f} | {1000 * r['gather_seconds_per_batch']:.2f} | "
                  f"{100 * f['sampler_share']:.1f} % |")
        if "tf_over_torch_examples_per_second" in r:
            print(f"| tf / torch | {r['batch_size']} | | {r['tf_over_torch_mean_step']:.2f}x | "
                  f"{r['tf_over_torch_examples_per_second']:.2f}x | | |")


if __name__ == "__main__":
    main()
