"""PyTorch stepper for the shared training loop.

Update rule (both frameworks follow it, see docs/training.md): PyTorch's SGD with momentum,
``v <- momentum * v + g``, ``w <- w - lr * v``. The learning rate multiplies the whole buffer at update time, so a
drop takes effect at once.

Under torchrun (``WORLD_SIZE`` > 1) the network is wrapped in DistributedDataParallel (gloo on the CPU, nccl on
CUDA, one GPU per local rank). Each process holds a slice of the global batch of ``B`` examples; its loss is its
slice's hinge sum times ``world / B``, so that DDP's gradient average over the processes is the gradient of the
global batch mean, whatever the sizes of the slices.
"""

from __future__ import annotations

import numpy as np
import torch

from stereodeploy.config import NetworkConfig, TrainConfig
from stereodeploy.data.patches import Batch
from stereodeploy.errors import UserError
from stereodeploy.frameworks import FRAMEWORKS
from stereodeploy.nets.torch_net import FastMCCNN, RawImageFeatures, get_weights, set_weights
from stereodeploy.nets.weights import Weights
from stereodeploy.train.distributed import torch_process


def hinge_loss(s_pos: torch.Tensor, s_neg: torch.Tensor, margin: float) -> torch.Tensor:
    return torch.clamp(margin + s_neg - s_pos, min=0).mean()


class TorchStepper:
    framework = "torch"

    def __init__(self, network: NetworkConfig, cfg: TrainConfig, weights: Weights):
        proc = torch_process()
        self.rank, self.world = proc.rank, proc.world
        self.framework_version = torch.__version__
        self.dev, self.device = FRAMEWORKS["torch"].resolve_device(cfg.device, index=proc.local_rank)
        torch.manual_seed(cfg.seed)
        self.net = FastMCCNN(network)
        set_weights(self.net, weights)
        self.net.to(self.dev)
        self.model: torch.nn.Module = self.net
        self.global_batch = cfg.examples_per_batch
        if self.world > 1:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel

            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.dev.type == "cuda" else "gloo")
            self.model = DistributedDataParallel(self.net, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
            self.device = f"{self.device} x {self.world} processes"
        self.margin = cfg.margin
        self.opt = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum)

    def step(self, batch: Batch, lr: float) -> tuple[float, float]:
        for group in self.opt.param_groups:
            group["lr"] = lr
        x = torch.from_numpy(np.concatenate([batch.left, batch.pos, batch.neg])).to(self.dev, non_blocking=True)
        f = self.model(x).flatten(1)  # (3b, C), b = this process's slice
        fl, fp, fn = f.chunk(3)
        s_pos = (fl * fp).sum(1)
        s_neg = (fl * fn).sum(1)
        if self.world == 1:
            loss = hinge_loss(s_pos, s_neg, self.margin)
        else:  # DDP averages over processes: world / B * (slice sum) averages to the global batch mean
            loss = torch.clamp(self.margin + s_neg - s_pos, min=0).sum() * (self.world / self.global_batch)
        self.opt.zero_grad(set_to_none=True)
        try:
            loss.backward()
        except RuntimeError as exc:
            raise _peer_lost(exc, self.rank, self.world) from None
        self.opt.step()
        acc = (s_pos > s_neg).float().mean()
        if self.world == 1:
            return float(loss.item()), float(acc.item())  # .item() synchronises the device
        import torch.distributed as dist

        sums = torch.stack([loss.detach() * (self.global_batch / self.world), (s_pos > s_neg).float().sum()])
        try:
            dist.all_reduce(sums)
        except RuntimeError as exc:
            raise _peer_lost(exc, self.rank, self.world) from None
        loss_sum, correct = sums.tolist()
        return loss_sum / self.global_batch, correct / self.global_batch

    def any_rank(self, flag: bool) -> bool:
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.dev)
        try:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        except RuntimeError as exc:
            raise _peer_lost(exc, self.rank, self.world) from None
        return bool(t.item() > 0)

    def get_weights(self) -> Weights:
        return get_weights(self.net)

    def set_weights(self, weights: Weights) -> None:
        set_weights(self.net, weights)

    def get_momentum(self) -> Weights | None:
        bufs = []
        for conv in self.net.convs:
            state_w = self.opt.state.get(conv.weight, {}).get("momentum_buffer")
            state_b = self.opt.state.get(conv.bias, {}).get("momentum_buffer")
            if state_w is None or state_b is None:
                return None
            bufs.append((state_w.detach().cpu().numpy().copy(), state_b.detach().cpu().numpy().copy()))
        return bufs

    def set_momentum(self, momentum: Weights) -> None:
        for conv, (mw, mb) in zip(self.net.convs, momentum):
            self.opt.state[conv.weight]["momentum_buffer"] = torch.from_numpy(mw).to(self.dev)
            self.opt.state[conv.bias]["momentum_buffer"] = torch.from_numpy(mb).to(self.dev)

    @torch.no_grad()
    def features(self, gray: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))[None, None].to(self.dev)
        return RawImageFeatures(self.net)(x)[0].cpu().numpy()


def _peer_lost(exc: RuntimeError, rank: int, world: int) -> Exception:
    """A collective failed because another process of the job is gone: one line, not the backend's traceback."""
    text = str(exc)
    lost = (type(exc).__name__ == "DistBackendError"
            or any(m in text for m in ("Connection closed", "Connection reset", "Broken pipe", "NCCL", "Gloo")))
    if world == 1 or not lost:
        return exc
    first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return UserError(f"another process of the job stopped ({first}); its own error is printed above")
