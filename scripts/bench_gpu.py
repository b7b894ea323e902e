"""GPU speed of training and of the torch engine, one table, in under 3 minutes on one NVIDIA GPU.

    python scripts/bench_gpu.py                     # CUDA required; exits with a message without it
    python scripts/bench_gpu.py --large 131072 --steps 50
    python scripts/bench_gpu.py --cpu-smoke         # tiny sizes on the CPU: checks the script, measures nothing

Training (examples per second; an example is a left patch with its positive and negative, a batch of 128 pairs
is 64 examples, as in TrainConfig), at 128 pairs and at ``--large`` pairs, the same batches for every variant:

- ``stepper``: the project's TorchStepper (host batches copied in each step, loss and accuracy read back);
- ``device fp32``: one step with the batches already on the GPU (no host round trip), TF32 convolutions;
- ``device bf16``: the same under bf16 autocast;
- ``graph fp32`` / ``graph bf16``: the whole step (forward, backward, SGD with momentum) captured once in a CUDA
  graph and replayed: one launch per step instead of ~100, which is what a network this small needs at 128 pairs.

The engine, on a KITTI-sized pair (1242x375, max disparity 228): the torch backend's features, its winner-take-all
(``TorchBackend.wta``: features + device matching + the disparity back on the host), the full pipeline
(``StereoMatcher`` with MC-CNN post-processing: device cost volume, host post-processing), and a candidate
device winner-take-all, ``wta_bmm``: per image row one (W x C) @ (C x W) product (TF32 or bf16 tensor cores)
masked to the disparity band and arg-maxed, checked against the engine's answer.

Targets on an H100/H200 (issue 8): winner-take-all under 5 ms per pair, full pipeline under 30 ms, training over
1 million examples/s at the large batch. The model: models/mccnn_fast_torch.onnx, else random weights.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EPOCH = 17_000_000  # examples in a KITTI-scale epoch (200 frames, see scripts/bench_sampler.py)


def model_path(folder: Path) -> Path:
    shipped = ROOT / "models" / "mccnn_fast_torch.onnx"
    if shipped.is_file():
        return shipped
    from stereodeploy.config import NetworkConfig
    from stereodeploy.nets.weights import init_weights
    from stereodeploy.train.checkpoint import Checkpoint, save_checkpoint

    net = NetworkConfig()
    save_checkpoint(folder / "checkpoint.npz", Checkpoint(framework="torch", network=net, weights=init_weights(net, 0)))
    return folder / "checkpoint.npz"


def host_batches(pairs: int, count: int, height: int, width: int) -> list:
    """``count`` sampler batches of ``pairs`` pairs from synthetic frames (the real PatchIndex.gather)."""
    from stereodeploy.config import NetworkConfig, SamplerConfig
    from stereodeploy.data.datasets import synthetic_pair
    from stereodeploy.data.patches import PatchIndex
    from stereodeploy.data.preprocess import to_gray

    index = PatchIndex(NetworkConfig().patch_size, SamplerConfig(seed=0))
    for seed in range(2):
        s = synthetic_pair(height=height, width=width, max_disp=64, seed=seed)
        index.add(to_gray(s.left), to_gray(s.right), s.disp, f"synthetic{seed}")
    per = pairs // 2
    available = index.num_batches(per)  # batches repeat if the set is small
    return [index.batch(0, i % available, per) for i in range(count)]


class DeviceStep:
    """One SGD-with-momentum step of MC-CNN fast on a batch already on the device, optionally bf16 autocast."""

    def __init__(self, torch, net, lr: float, momentum: float, margin: float, bf16: bool, device):
        self.torch, self.net, self.margin, self.bf16, self.device = torch, net, margin, bf16, device
        self.opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)

    def loss(self, x):
        torch = self.torch
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=False):
            f = self.net(x).flatten(1)
        fl, fp, fn = f.float().chunk(3)
        return torch.clamp(self.margin + (fl * fn).sum(1) - (fl * fp).sum(1), min=0).mean()

    def __call__(self, x):
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(x)
        loss.backward()
        self.opt.step()
        return loss


def graph_step(torch, step: DeviceStep, example):
    """Capture ``step`` on a static input in a CUDA graph; returns (static input, replay function)."""
    static_x = example.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph: cuDNN plans, optimizer state
        for _ in range(3):
            step(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    step.opt.zero_grad(set_to_none=True)  # gradients are then allocated, and overwritten, inside the graph
    with torch.cuda.graph(graph):
        loss = step.loss(static_x)
        loss.backward()
        step.opt.step()
    return static_x, graph.replay


def sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_training(torch, args, device, pairs: int) -> dict[str, float]:
    """Examples per second of each training variant on the same batches of ``pairs`` pairs."""
    from stereodeploy.config import NetworkConfig, TrainConfig
    from stereodeploy.nets.torch_net import FastMCCNN, set_weights
    from stereodeploy.nets.weights import init_weights
    from stereodeploy.train.torch_trainer import TorchStepper

    network = NetworkConfig()
    cfg = TrainConfig(batch_size=pairs, device=device.type)
    per = cfg.examples_per_batch
    batches = host_batches(pairs, args.pool, *args.frame)
    weights = init_weights(network, 0)
    out: dict[str, float] = {}

    stepper = TorchStepper(network, cfg, weights)
    for b in batches[:2]:
        stepper.step(b, cfg.lr)
    t0 = time.perf_counter()
    for i in range(args.steps):
        stepper.step(batches[i % len(batches)], cfg.lr)
    out["stepper"] = per * args.steps / (time.perf_counter() - t0)

    staged = [torch.from_numpy(np.concatenate([b.left, b.pos, b.neg])).to(device) for b in batches]
    variants = [("device fp32", False, False), ("device bf16", True, False)]
    if device.type == "cuda" and not args.no_graphs:
        variants += [("graph fp32", False, True), ("graph bf16", True, True)]
    for name, bf16, graphed in variants:
        net = FastMCCNN(network)
        set_weights(net, weights)
        net.to(device)
        step = DeviceStep(torch, net, cfg.lr, cfg.momentum, cfg.margin, bf16, device)
        if graphed:
            static_x, replay = graph_step(torch, step, staged[0])

            def run(x, static_x=static_x, replay=replay):
                static_x.copy_(x, non_blocking=True)
                replay()
        else:
            run = step
        for x in staged[:3]:
            run(x)
        sync(torch, device)
        t0 = time.perf_counter()
        for i in range(args.steps):
            run(staged[i % len(staged)])
        sync(torch, device)
        out[name] = per * args.steps / (time.perf_counter() - t0)
    return out


def wta_bmm(torch, fl, fr, max_disp: int, rows: int = 64, bf16: bool = False):
    """Candidate device winner-take-all: (C, H, W) features -> (H, W) float32 disparity.

    Per row, similarities to every right pixel as one (W x C) @ (C x W) product (right columns reversed, so the
    first maximum is the smallest disparity), pixels outside ``0 <= x - xr < max_disp`` masked, argmax.
    """
    _, h, w = fl.shape
    a = fl.permute(1, 2, 0)  # (H, W, C)
    b = fr.flip(-1).permute(1, 0, 2)  # (H, C, W), column j = right pixel W - 1 - j
    x = torch.arange(w, device=fl.device)
    d = x[:, None] - (w - 1 - x[None, :])  # disparity of (x, j)
    band = (d >= 0) & (d < max_disp)
    out = torch.empty((h, w), dtype=torch.float32, device=fl.device)
    dtype = torch.bfloat16 if bf16 else torch.float32
    for y0 in range(0, h, rows):
        sim = torch.bmm(a[y0:y0 + rows].to(dtype), b[y0:y0 + rows].to(dtype)).float()  # (rows, W, W)
        sim.masked_fill_(~band, -3.0)
        j = sim.argmax(dim=-1)
        out[y0:y0 + rows] = (x[None, :] - (w - 1 - j)).float()
    return out


def bench_engine(torch, args, device, model: Path) -> tuple[dict[str, float], dict[str, float], str]:
    from stereodeploy.config import MatchConfig
    from stereodeploy.data.datasets import synthetic_pair
    from stereodeploy.data.preprocess import to_gray
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.engine.torch_backend import TorchBackend

    h, w = args.frame
    d = min(args.max_disp, w - 1)
    s = synthetic_pair(height=h, width=w, max_disp=min(200, d), seed=0)
    gl, gr = to_gray(s.left), to_gray(s.right)
    be = TorchBackend(model, device=device.type)
    times: dict[str, list[float]] = {}

    def add(k: str, v: float) -> None:
        times.setdefault(k, []).append(v)

    pair = np.stack([gl, gr])[:, None]
    engine_disp = be.wta(gl, gr, d, {})
    feats = be.features_tensor(pair)
    cand = wta_bmm(torch, feats[0], feats[1], d).cpu().numpy()
    cand16 = wta_bmm(torch, feats[0], feats[1], d, bf16=True).cpu().numpy()
    agree = f"wta_bmm equals the engine on {100 * np.mean(cand == engine_disp):.2f} % of pixels (fp32), " \
            f"{100 * np.mean(cand16 == engine_disp):.2f} % (bf16)"
    full = StereoMatcher(be, MatchConfig.preset("full", d), sgm_preset="kitti2015")
    full.match(s.left, s.right)
    for _ in range(args.repeats):
        sync(torch, device)
        t0 = time.perf_counter()
        be.features_tensor(pair)
        sync(torch, device)
        add("features (torch backend)", time.perf_counter() - t0)
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        be.wta(gl, gr, d, t)
        add("engine wta total (features + matching, disparity on host)", time.perf_counter() - t0)
        add("  engine wta matching (torch_wta)", t["matching"])
        for name, bf16 in (("  candidate wta_bmm matching, fp32", False), ("  candidate wta_bmm matching, bf16", True)):
            sync(torch, device)
            t0 = time.perf_counter()
            wta_bmm(torch, feats[0], feats[1], d, bf16=bf16)
            sync(torch, device)
            add(name, time.perf_counter() - t0)
        r = full.match(s.left, s.right).timings
        add("full pipeline total (device volume, host post-processing)", r["total"])
        for k, v in r.items():
            if k not in ("total", "matching", "features"):
                add(f"  full: {k}", v)
    return {k: float(np.median(v)) for k, v in times.items()}, {"max_disp": d}, agree


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", type=int, default=65536, help="large batch, in pairs (default 65536)")
    ap.add_argument("--steps", type=int, default=30, help="timed training steps per variant")
    ap.add_argument("--pool", type=int, default=6, help="distinct batches cycled through")
    ap.add_argument("--repeats", type=int, default=3, help="engine repetitions (median)")
    ap.add_argument("--max-disp", type=int, default=228)
    ap.add_argument("--no-graphs", action="store_true", help="skip the CUDA-graph variants")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU: checks the code paths only")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        sys.exit("bench_gpu: PyTorch is not installed; install a CUDA build of torch (pip install torch)")
    if args.cpu_smoke:
        device = torch.device("cpu")
        args.large, args.steps, args.pool, args.repeats, args.max_disp = 512, 3, 2, 1, 24
        args.frame = (48, 96)
    else:
        if not torch.cuda.is_available():
            sys.exit(f"bench_gpu: no CUDA device is visible to torch {torch.__version__} (CUDA build: "
                     f"{torch.version.cuda or 'none'}); run it on a machine with an NVIDIA GPU and a CUDA build of "
                     "torch, or pass --cpu-smoke to only check the script")
        device = torch.device("cuda")
        args.frame = (375, 1242)
    started = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke test, not a measurement)"
    print(f"# bench_gpu on {name}; torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
          f"{torch.backends.cudnn.version() if device.type == 'cuda' else '-'}")
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        model = model_path(Path(tmp))
        print("| measure | value |")
        print("|---|---|")
        if not args.skip_training:
            for pairs in (128, args.large):
                for variant, eps in bench_training(torch, args, device, pairs).items():
                    note = f"; a {EPOCH / 1e6:.0f}M-example epoch in {EPOCH / eps:.1f} s" if pairs == args.large else ""
                    print(f"| train {variant}, {pairs} pairs | {eps:,.0f} examples/s{note} |", flush=True)
        if not args.skip_engine:
            times, info, agree = bench_engine(torch, args, device, model)
            h, w = args.frame
            for k, v in times.items():
                print(f"| engine {w}x{h}, max disp {info['max_disp']}: {k} | {1000 * v:.2f} ms |", flush=True)
            print(f"| engine check | {agree} |")
    print(f"# done in {time.perf_counter() - started:.0f} s; model {model.name}")


if __name__ == "__main__":
    main()
