"""Native PyTorch feature backend, with matching on the device for CUDA (only this engine module imports torch)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from stereodeploy.engine.backends import Backend, load_weights
from stereodeploy.engine.matching import INVALID_COST, check_max_disp
from stereodeploy.frameworks import FRAMEWORKS


class TorchBackend(Backend):
    """Native PyTorch from a run directory / checkpoint, or from an ONNX file's weights (torch-exported or not).

    On a CUDA device the cost volume and winner-take-all run on the device (:func:`torch_cost_volume`,
    :func:`torch_wta`, :func:`torch_wta_confidence`): winner-take-all sends only the (H, W) disparity (and
    confidence) to the host, post-processing gets the volume as host float32. On the CPU the shared numba code is
    faster, so it is used there; ``device_matching`` forces either choice (tests use it to run the device path on
    the CPU).
    """

    name = "torch"

    def __init__(self, path: Path | str, device: str = "cpu", device_matching: bool | None = None):
        import torch

        from stereodeploy.nets import torch_net

        self.dev, _ = FRAMEWORKS["torch"].resolve_device(device, "--provider")
        self.meta, weights = load_weights(Path(path))
        net = torch_net.build(self.meta.network, weights).to(self.dev)
        self.module = torch_net.RawImageFeatures(net).eval()
        self.device = str(self.dev)
        self.device_matching = self.dev.type == "cuda" if device_matching is None else device_matching
        self._torch = torch

    def features_batch(self, images: np.ndarray, release: bool = False) -> np.ndarray:
        return self.features_tensor(images).cpu().numpy()

    def features_tensor(self, images: np.ndarray) -> Any:
        """(N, 1, H, W) float32 0..255 -> (N, C, H, W) torch tensor on the backend's device."""
        with self._torch.inference_mode():
            x = self._torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.dev)
            return self.module(x)

    def _pair_tensor(self, left: np.ndarray, right: np.ndarray) -> Any:
        return self.features_tensor(np.stack([left, right])[:, None].astype(np.float32, copy=False))

    def _sync(self) -> None:
        if self.dev.type == "cuda":
            self._torch.cuda.synchronize(self.dev)

    def wta(self, left: np.ndarray, right: np.ndarray, max_disp: int,
            timings: dict[str, float]) -> np.ndarray:
        if not self.device_matching:
            return super().wta(left, right, max_disp, timings)
        # only the (H, W) disparity leaves the device
        return self._on_device(left, right, max_disp, timings, "matching", lambda fl, fr: torch_wta(fl, fr, max_disp))

    def wta_confidence(self, left: np.ndarray, right: np.ndarray, max_disp: int,
                       timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        if not self.device_matching:
            return super().wta_confidence(left, right, max_disp, timings)
        # the volume stays on the device; the disparity and the confidence leave it
        both = self._on_device(left, right, max_disp, timings, "matching",
                               lambda fl, fr: torch_wta_confidence(fl, fr, max_disp))
        return both[0], both[1]

    def cost_volume(self, left: np.ndarray, right: np.ndarray, max_disp: int,
                    timings: dict[str, float], out: np.ndarray | None = None) -> np.ndarray:
        if not self.device_matching:
            return super().cost_volume(left, right, max_disp, timings, out)
        return self._on_device(left, right, max_disp, timings, "cost_volume",
                               lambda fl, fr: torch_cost_volume(fl, fr, max_disp).float())

    def _on_device(self, left: np.ndarray, right: np.ndarray, max_disp: int, timings: dict[str, float], key: str,
                   match: Callable[[Any, Any], Any]) -> np.ndarray:
        """Features on the device, then ``match(fl, fr)`` there; its result comes to the host. Times go to
        ``timings['features']`` and ``timings[key]``."""
        check_max_disp(max_disp, left.shape[-1])
        t0 = time.perf_counter()
        feats = self._pair_tensor(left, right)
        self._sync()
        t1 = time.perf_counter()
        with self._torch.inference_mode():
            result = match(feats[0], feats[1]).cpu().numpy()
        timings["features"] = t1 - t0
        timings[key] = time.perf_counter() - t1
        return result


def torch_cost_volume(fl: Any, fr: Any, max_disp: int) -> Any:
    """Torch twin of :func:`stereodeploy.engine.matching.cost_volume` on the features' device.

    (C, H, W) left and right feature tensors -> (max_disp, H, W) float32 tensor,
    ``cost[d, y, x] = 1 - <fl[:, y, x], fr[:, y, x - d]>`` and :data:`INVALID_COST` where ``x - d < 0``.
    """
    import torch

    _check_pair(fl, fr, max_disp)
    _, h, w = fl.shape
    fl, fr = fl.float(), fr.float()
    cost = torch.full((max_disp, h, w), INVALID_COST, dtype=torch.float32, device=fl.device)
    for d in range(max_disp):
        cost[d, :, d:] = 1.0 - (fl[:, :, d:] * fr[:, :, : w - d]).sum(dim=0)
    return cost


def torch_wta_confidence(fl: Any, fr: Any, max_disp: int) -> Any:
    """Torch twin of :func:`stereodeploy.engine.matching.wta_confidence_from_features` on the features' device:
    a (2, H, W) float32 tensor of the winner-take-all disparity and its confidence (the rule of
    :func:`stereodeploy.engine.matching.ratio_row`: ``1 - C(d1) / C2`` over rivals ``|d - d1| >= 2`` with
    ``d <= x``, 0 without one or where it costs 0)."""
    import torch

    cost = torch_cost_volume(fl, fr, max_disp)  # (D, H, W)
    d1 = torch.argmin(cost, dim=0)  # the first of equal minima, as winner_take_all
    c1 = cost.gather(0, d1[None])[0]
    d = torch.arange(max_disp, device=cost.device)[:, None, None]
    x = torch.arange(cost.shape[2], device=cost.device)[None, None, :]
    rival = ((d - d1[None]).abs() >= 2) & (d <= x)
    c2 = torch.where(rival, cost, torch.full_like(cost, float("inf"))).amin(dim=0)
    ok = torch.isfinite(c2) & (c2 > 0)
    ratio = (1.0 - c1 / torch.where(ok, c2, torch.ones_like(c2))).clamp(min=0.0)
    return torch.stack([d1.float(), torch.where(ok, ratio, torch.zeros_like(ratio))])


def torch_wta(fl: Any, fr: Any, max_disp: int) -> Any:
    """Torch twin of :func:`stereodeploy.engine.matching.wta_from_features`: fused, the volume is never stored.

    (C, H, W) left and right feature tensors -> (H, W) float32 disparity tensor on their device; ties keep the
    smallest disparity, and only disparities with ``x - d >= 0`` are considered (d = 0 always is).
    """
    import torch

    _check_pair(fl, fr, max_disp)
    _, h, w = fl.shape
    fl, fr = fl.float(), fr.float()
    best = (fl * fr).sum(dim=0)  # (H, W) similarity at d = 0
    arg = torch.zeros((h, w), dtype=torch.int64, device=fl.device)
    for d in range(1, max_disp):
        sim = (fl[:, :, d:] * fr[:, :, : w - d]).sum(dim=0)  # (H, W - d)
        better = sim > best[:, d:]  # strict: ties keep the smaller disparity
        best[:, d:] = torch.maximum(best[:, d:], sim)
        arg[:, d:].masked_fill_(better, d)
    return arg.float()


def _check_pair(fl: Any, fr: Any, max_disp: int) -> None:
    if fl.dim() != 3 or tuple(fl.shape) != tuple(fr.shape):
        raise ValueError(f"features must be two (C, H, W) tensors of one shape, got {tuple(fl.shape)} and "
                         f"{tuple(fr.shape)}")
    check_max_disp(max_disp, fl.shape[-1])
