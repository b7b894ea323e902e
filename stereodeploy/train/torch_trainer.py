"""PyTorch stepper for the shared training loop.

Update rule (both frameworks follow it, see docs/training.md): PyTorch's SGD with momentum,
``v <- momentum * v + g``, ``w <- w - lr * v``. The learning rate multiplies the whole buffer at update time, so a
drop takes effect at once.
"""

from __future__ import annotations

import numpy as np
import torch

from stereodeploy.config import NetworkConfig, TrainConfig
from stereodeploy.errors import UserError
from stereodeploy.nets.torch_net import FastMCCNN, RawImageFeatures, get_weights, set_weights
from stereodeploy.patches import Batch
from stereodeploy.train.loop import Weights


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA was asked for but torch sees no CUDA device: use --device cpu, or install a CUDA build of torch")
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r}: use cpu or cuda", exit_code=2)
    return torch.device(device)


def hinge_loss(s_pos: torch.Tensor, s_neg: torch.Tensor, margin: float) -> torch.Tensor:
    return torch.clamp(margin + s_neg - s_pos, min=0).mean()


class TorchStepper:
    framework = "torch"

    def __init__(self, network: NetworkConfig, cfg: TrainConfig, weights: Weights):
        self.framework_version = torch.__version__
        self.dev = resolve_device(cfg.device)
        self.device = str(self.dev) if self.dev.type == "cpu" else f"cuda ({torch.cuda.get_device_name(self.dev)})"
        torch.manual_seed(cfg.seed)
        self.net = FastMCCNN(network)
        set_weights(self.net, weights)
        self.net.to(self.dev)
        self.margin = cfg.margin
        self.opt = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum)

    def step(self, batch: Batch, lr: float) -> tuple[float, float]:
        for group in self.opt.param_groups:
            group["lr"] = lr
        x = torch.from_numpy(np.concatenate([batch.left, batch.pos, batch.neg])).to(self.dev, non_blocking=True)
        f = self.net(x).flatten(1)  # (3B, C)
        fl, fp, fn = f.chunk(3)
        s_pos = (fl * fp).sum(1)
        s_neg = (fl * fn).sum(1)
        loss = hinge_loss(s_pos, s_neg, self.margin)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        acc = (s_pos > s_neg).float().mean()
        return float(loss.item()), float(acc.item())  # .item() synchronises the device

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
