"""Training step speed of PyTorch against TensorFlow: same network, same initial weights, same batches, one process.

    python scripts/bench_train.py --steps 100 --batch-size 128 [--device cuda] [--threads 2]

Each framework runs ``--warmup`` steps (tracing, allocator warm-up; not timed), then ``--steps`` timed steps, each
timed the way the training loop times it (the step returns after the device finished). Prints one JSON object:
mean step seconds and examples per second for each framework, and the TF / torch ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from stereodeploy.config import NetworkConfig, SamplerConfig, TrainConfig
from stereodeploy.datasets import synthetic_pair
from stereodeploy.io import to_gray
from stereodeploy.nets.weights import init_weights
from stereodeploy.patches import PatchIndex
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128, help="pairs per batch (examples = half)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--maps", type=int, default=64)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads of both frameworks (0: their default)")
    ap.add_argument("--frameworks", default="torch,tf")
    args = ap.parse_args()

    if args.threads:
        import tensorflow as tf
        import torch

        torch.set_num_threads(args.threads)
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    network = NetworkConfig(layers=args.layers, maps=args.maps)
    cfg = TrainConfig(batch_size=args.batch_size, device=args.device)
    index = PatchIndex(network.patch_size, SamplerConfig(seed=0))
    for seed in range(2):
        s = synthetic_pair(375, 1242, max_disp=64, seed=seed)
        index.add(to_gray(s.left), to_gray(s.right), s.disp, f"synthetic{seed}")
    order = index.epoch_order(0)
    per = cfg.examples_per_batch
    batches = [index.gather(order[i * per:(i + 1) * per], 0, i) for i in range(args.warmup + args.steps)]
    weights = init_weights(network, cfg.seed)
    result: dict = {"network": f"{args.layers}x{args.maps}", "batch_size": args.batch_size, "examples_per_batch": per,
                    "steps": args.steps, "device": args.device, "threads": args.threads or "default",
                    "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}
    for fw in args.frameworks.split(","):
        stepper = make_stepper(fw, network, cfg, weights)
        times = np.array(time_steps(stepper, batches, args.warmup, cfg.lr))
        result[fw] = {"version": stepper.framework_version, "device": stepper.device,
                      "mean_step_seconds": float(times.mean()), "median_step_seconds": float(np.median(times)),
                      "examples_per_second": float(per / times.mean())}
    if "torch" in result and "tf" in result:
        tf_r, torch_r = result["tf"], result["torch"]
        result["tf_over_torch_examples_per_second"] = tf_r["examples_per_second"] / torch_r["examples_per_second"]
        result["tf_over_torch_mean_step"] = tf_r["mean_step_seconds"] / torch_r["mean_step_seconds"]
    result["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
