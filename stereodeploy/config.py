"""Frozen configuration dataclasses shared by every stage.

They travel as plain dicts (``asdict`` / ``from_dict``) inside checkpoints, run directories and ONNX metadata,
so that inference rebuilds exactly what was trained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass ``cls`` from ``data``, ignoring unknown keys (forward compatible)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in names}
    return cls(**kwargs)


@dataclass(frozen=True)
class NetworkConfig:
    """MC-CNN "fast": ``layers`` convolutions of ``maps`` feature maps, ReLU after all but the last."""

    layers: int = 4
    maps: int = 64
    kernel: int = 3

    def __post_init__(self) -> None:
        if self.layers < 1 or self.maps < 1 or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"invalid network config {self}: layers, maps >= 1 and an odd kernel are required")

    @property
    def patch_size(self) -> int:
        """Side of the input patch that yields one feature vector (9 for the default)."""
        return self.layers * (self.kernel - 1) + 1


@dataclass(frozen=True)
class SamplerConfig:
    """MC-CNN fast patch sampling (defaults from Zbontar & LeCun 2016).

    For a left pixel ``x`` with ground-truth disparity ``d`` the positive right patch is centred at
    ``x - d + o_pos`` with ``|o_pos| <= pos_offset`` and the negative at ``x - d + o_neg`` with
    ``neg_low <= |o_neg| <= neg_high`` and a random sign.
    """

    pos_offset: int = 1
    neg_low: int = 4
    neg_high: int = 10
    seed: int = 0
    augment: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation schedule. ``batch_size`` counts pairs as the original does: 128 = 64 positive + 64 negative
    pairs, i.e. 64 examples (left patch, positive, negative)."""

    epochs: int = 14
    batch_size: int = 128
    lr: float = 0.002
    momentum: float = 0.9
    margin: float = 0.2
    lr_drops: tuple[int, ...] = (12,)
    lr_factor: float = 0.1
    max_examples: int | None = None
    seed: int = 0
    checkpoint_every: int = 0  # also checkpoint every N steps (0: no step-based checkpoints)
    checkpoint_minutes: float = 10.0  # checkpoint when this much time passed since the last (0: never)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError("batch_size counts pairs (one positive and one negative per example): use an even number >= 2")
        if self.checkpoint_every < 0 or self.checkpoint_minutes < 0:
            raise ValueError("checkpoint intervals must be at least 0 (0: off)")

    @property
    def examples_per_batch(self) -> int:
        return self.batch_size // 2

    def lr_at(self, epoch: int) -> float:
        """Learning rate during 0-based ``epoch``, as torch's MultiStepLR(milestones=lr_drops) gives it:
        ``lr`` times ``lr_factor`` for every milestone ``m <= epoch``. With 14 epochs and ``lr_drops=(12,)`` the
        first 12 epochs run at ``lr`` and the last 2 at ``lr * lr_factor``.
        """
        drops = sum(1 for m in self.lr_drops if epoch >= m)
        return self.lr * self.lr_factor**drops


@dataclass(frozen=True)
class MatchConfig:
    """Matching pipeline settings; see :mod:`stereodeploy.engine.postprocess` for each stage."""

    max_disp: int = 128
    sgm: bool = False
    lr_check: bool = False
    subpixel: bool = False
    median: bool = False
    bilateral: bool = False
    # overrides of the SGM preset's parameters, as sorted (name, value) pairs so that the config stays hashable;
    # a dict given here is converted
    sgm_params: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        pairs = self.sgm_params.items() if isinstance(self.sgm_params, dict) else self.sgm_params
        object.__setattr__(self, "sgm_params", tuple(sorted((str(k), float(v)) for k, v in pairs)))

    @classmethod
    def preset(cls, postprocess: str, max_disp: int, sgm_params: dict[str, float] | None = None) -> MatchConfig:
        """``none`` = winner-take-all only; ``full`` = every stage of MC-CNN's post-processing."""
        if postprocess == "none":
            return cls(max_disp=max_disp)
        if postprocess == "full":
            return cls(max_disp=max_disp, sgm=True, lr_check=True, subpixel=True, median=True, bilateral=True,
                       sgm_params=tuple((sgm_params or {}).items()))
        raise ValueError(f"postprocess must be 'none' or 'full', not {postprocess!r}")


def check_max_disp(max_disp: int, width: int) -> None:
    """UsageError unless ``1 <= max_disp <= width - 1`` (here, not beside the numba kernels, so that a matcher
    checks its input without waiting for numba to import)."""
    from stereodeploy.errors import UsageError

    if max_disp <= 0 or max_disp >= width:
        raise UsageError(f"max disparity must be in [1, image width - 1] = [1, {width - 1}], got {max_disp}")
