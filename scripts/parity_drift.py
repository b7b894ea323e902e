"""How far training runs that differ only in float32 rounding drift apart: the yardstick for distributed parity.

    python scripts/parity_drift.py                                   # ../shared/data/middlebury, 4 x 64, 64 steps
    python scripts/parity_drift.py --data DIR --steps 1,10,32,64 --layers 2 --maps 8

One process, PyTorch, 1 thread, the project's sampler and SGD with momentum (lr 0.002, batches of 128 pairs).
Three runs from the same initial weights on the same batches:

- ``full``: the gradient of each batch's mean hinge loss, as a one-process run computes it;
- ``halves``: the batch split in two slices whose gradients (slice sum / B, times 2) are averaged, which is what
  DistributedDataParallel does with 2 processes, without any distribution;
- ``one ulp``: like ``full``, with one weight of the first layer moved by one float32 ulp at the start.

Prints the largest weight difference of ``halves`` and ``one ulp`` from ``full`` after each of ``--steps``. When the
two columns agree, a 2-process run cannot be expected closer to the 1-process run than that (docs/training.md,
"The batch contract").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "middlebury")
    ap.add_argument("--steps", default="1,10,32,64", help="report after these steps")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--maps", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    marks = sorted(int(s) for s in args.steps.split(","))

    import torch

    from stereodeploy.config import NetworkConfig, SamplerConfig, TrainConfig
    from stereodeploy.nets.torch_net import FastMCCNN, set_weights
    from stereodeploy.nets.weights import init_weights
    from stereodeploy.train.api import build_index, load_samples

    torch.set_num_threads(1)
    network = NetworkConfig(layers=args.layers, maps=args.maps)
    cfg = TrainConfig(lr=args.lr, seed=args.seed)
    index, summary = build_index(load_samples([args.data]), network.patch_size, SamplerConfig(seed=args.seed))
    per = cfg.examples_per_batch
    w0 = init_weights(network, args.seed)
    w1 = [(k.copy(), b.copy()) for k, b in w0]
    w1[0][0].flat[0] = np.nextafter(w1[0][0].flat[0], np.float32(1))

    def make(weights):
        net = FastMCCNN(network)
        set_weights(net, weights)
        return net, torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum)

    def hinge_sum(net, batch):
        x = torch.from_numpy(np.concatenate([batch.left, batch.pos, batch.neg]))
        fl, fp, fn = net(x).flatten(1).chunk(3)
        return torch.clamp(cfg.margin + (fl * fn).sum(1) - (fl * fp).sum(1), min=0).sum()

    full, halves, ulp = make(w0), make(w0), make(w1)
    print(f"# {args.data} ({len(summary['frames'])} frames, {len(index):,} examples), {args.layers}x{args.maps}, "
          f"lr {cfg.lr}, {per} examples per batch, PyTorch {torch.__version__}, 1 thread")
    print("| steps | halves averaged (2-process arithmetic) | one ulp in one weight |")
    print("|---|---|---|")

    def diff(a, b) -> float:
        with torch.no_grad():
            return max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))

    for step in range(1, marks[-1] + 1):
        batch = index.batch(0, step - 1, per)
        for net, opt in (full, ulp):
            opt.zero_grad()
            (hinge_sum(net, batch) / per).backward()
            opt.step()
        net, opt = halves
        grads = []
        for part in ((0, per // 2), (per // 2, per)):
            opt.zero_grad()
            (hinge_sum(net, index.batch(0, step - 1, per, part)) * (2 / per)).backward()
            grads.append([p.grad.clone() for p in net.parameters()])
        for p, g0, g1 in zip(net.parameters(), *grads):
            p.grad = (g0 + g1) / 2
        opt.step()
        if step in marks:
            print(f"| {step} | {diff(full[0], halves[0]):.2e} | {diff(full[0], ulp[0]):.2e} |")


if __name__ == "__main__":
    main()
