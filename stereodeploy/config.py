"""Frozen configuration dataclasses shared by every stage.

They travel as plain dicts (``asdict`` / ``from_dict``) inside checkpoints, run directories and ONNX metadata,
so that inference rebuilds exactly what was trained. A training run is described by one :class:`RunSpec`, which
validates itself when built (a bad value is a :class:`~stereodeploy.errors.UsageError` naming the option).
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stereodeploy.engine.spec import DEFAULT_PRESET, PipelineSpec, preset_spec
from stereodeploy.errors import UsageError

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
            raise UsageError(f"invalid network {self}: --layers and --maps must be at least 1 and --kernel odd")

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
    """Optimisation schedule and where it runs. ``batch_size`` counts pairs as the original does: 128 = 64 positive
    + 64 negative pairs, i.e. 64 examples (left patch, positive, negative)."""

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
    device: str = "cpu"  # cpu or cuda

    def __post_init__(self) -> None:
        from stereodeploy.frameworks import DEVICES

        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise UsageError("--batch-size counts pairs (one positive and one negative per example): use an even "
                             f"number >= 2, not {self.batch_size}")
        if self.max_examples is not None and self.max_examples < 1:
            raise UsageError(f"--max-examples must be at least 1, got {self.max_examples}")
        if self.checkpoint_every < 0 or self.checkpoint_minutes < 0:
            raise UsageError("--checkpoint-every and --checkpoint-minutes must be at least 0 (0: off)")
        if self.device not in DEVICES:
            raise UsageError(f"unknown device {self.device!r}: use --device {' or '.join(DEVICES)}")

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


POSTPROCESS = ("none", "full")
"""What a matcher does after the features: ``none`` = winner-take-all only; ``full`` = every stage of MC-CNN's
post-processing."""


@dataclass(frozen=True)
class DataSpec:
    """The training data: dataset folders (recorded resolved), frames left out, and the layout (None: detected)."""

    sources: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    format: str | None = None

    def __post_init__(self) -> None:  # paths and lists as given -> tuples of strings (hashable, JSON-ready)
        object.__setattr__(self, "sources", tuple(str(p) for p in self.sources))
        object.__setattr__(self, "exclude", tuple(str(n) for n in self.exclude))


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a training run, validated once when built and stored once, as the run directory's
    config.json (:mod:`stereodeploy.train.checkpoint`). ``validation`` and ``max_disp``: datasets scored with
    winner-take-all after each epoch, and their max disparity. ``threads``: CPU threads per operation (None: a
    default that does not oversubscribe the cores)."""

    framework: str
    data: DataSpec = field(default_factory=DataSpec)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: tuple[str, ...] = ()
    max_disp: int = 64
    threads: int | None = None

    def __post_init__(self) -> None:
        from stereodeploy.frameworks import get

        get(self.framework)  # an unknown framework is a usage error listing the known ones
        if self.max_disp < 1:
            raise UsageError(f"--max-disp must be at least 1, got {self.max_disp}")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads must be at least 1, got {self.threads}")
        object.__setattr__(self, "validation", tuple(str(p) for p in self.validation))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """The spec recorded in ``data`` (a run's config.json; unknown keys, such as the data summary, ignored)."""
        parts = {"data": DataSpec, "network": NetworkConfig, "sampler": SamplerConfig, "train": TrainConfig}
        spec = {k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(cls)}}
        for name, part in parts.items():
            spec[name] = from_dict(part, data.get(name) or {})
        return from_dict(cls, spec)

    def resumed(self, given: RunSpec, options: Iterable[str] | None = None) -> tuple[RunSpec, list[str]]:
        """This (recorded) spec, continued with the ``options`` given for the resume (None: every option of
        :data:`RUN_OPTIONS`) taken from ``given``. Options that may change (:data:`RUN_OPTIONS`) are honoured, e.g.
        ``--epochs 20`` extends the run; one that may not and differs from the record is a usage error naming it.
        Returns the spec and one line per honoured change."""
        spec, changes = self, []
        for option in RUN_OPTIONS if options is None else options:
            if option not in RUN_OPTIONS:
                continue  # not part of the spec (--progress, --overwrite ...)
            paths, may_change = RUN_OPTIONS[option]
            old, new = [_get(self, p) for p in paths], [_get(given, p) for p in paths]
            if old == new:
                continue
            if not may_change:
                raise UsageError(f"{option} {_show(new[0])} differs from the run's {_show(old[0])}, and a resumed run "
                                 f"cannot change it: drop {option} to continue the run, or start a new run with "
                                 "another --out")
            for p, value in zip(paths, new):
                spec = _with(spec, p, value)
            changes.append(f"{option} {_show(old[0])} -> {_show(new[0])}")
        return spec, changes


# command-line option -> (the RunSpec fields it sets, whether a resumed run may change it). What a resume may
# change leaves the examples and the batches already trained as they are: the length of the run, where and how it
# runs, checkpoints and validation; the data's place (its frames are checked). Everything that shapes the network,
# the examples or the optimisation so far is fixed.
RUN_OPTIONS: dict[str, tuple[tuple[str, ...], bool]] = {
    "--epochs": (("train.epochs",), True),
    "--device": (("train.device",), True),
    "--threads": (("threads",), True),
    "--checkpoint-every": (("train.checkpoint_every",), True),
    "--checkpoint-minutes": (("train.checkpoint_minutes",), True),
    "--val": (("validation",), True),
    "--max-disp": (("max_disp",), True),
    "--data": (("data.sources",), True),
    "--exclude": (("data.exclude",), False),
    "--format": (("data.format",), False),
    "--layers": (("network.layers",), False),
    "--maps": (("network.maps",), False),
    "--kernel": (("network.kernel",), False),
    "--augment": (("sampler.augment",), False),
    "--seed": (("train.seed", "sampler.seed"), False),
    "--batch-size": (("train.batch_size",), False),
    "--lr": (("train.lr",), False),
    "--momentum": (("train.momentum",), False),
    "--lr-drop": (("train.lr_drops",), False),
    "--max-examples": (("train.max_examples",), False),
}


def _get(obj: Any, path: str) -> Any:
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def _with(obj: Any, path: str, value: Any) -> Any:
    head, _, rest = path.partition(".")
    return dataclasses.replace(obj, **{head: _with(getattr(obj, head), rest, value) if rest else value})


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "(none)"
    return str(value)


@dataclass(frozen=True)
class MatchConfig:
    """Matching pipeline settings, checked once here: the disparity range, which stages of
    :func:`stereodeploy.engine.postprocess.postprocess` run, and their values, a preset of
    :data:`stereodeploy.engine.spec.PRESETS` by name with some values overridden (:attr:`spec` gives the result).
    A bad value raises :class:`~stereodeploy.errors.UsageError` with one line that names it."""

    max_disp: int = 128
    sgm: bool = False
    lr_check: bool = False
    subpixel: bool = False
    median: bool = False
    bilateral: bool = False
    sgm_preset: str = DEFAULT_PRESET  # SGM and filter values, tuned per benchmark; "SGM preset" in the CLI's words
    # overrides of the preset's values (names of engine.spec.TUNABLE), as sorted (name, value) pairs so that the
    # config stays hashable; a dict given here is converted
    overrides: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.max_disp, bool) or not isinstance(self.max_disp, numbers.Integral) or self.max_disp < 1:
            raise UsageError(f"max disparity must be a whole number of at least 1, got {self.max_disp!r}")
        object.__setattr__(self, "max_disp", int(self.max_disp))
        given = dict(self.overrides.items() if isinstance(self.overrides, dict) else self.overrides)
        preset_spec(self.sgm_preset, given)  # an unknown preset, a bad name or value fails here, once
        object.__setattr__(self, "overrides", tuple(sorted((str(k), float(v)) for k, v in given.items())))

    @property
    def spec(self) -> PipelineSpec:
        """The values of every stage: the preset's, with the overrides applied."""
        return preset_spec(self.sgm_preset, dict(self.overrides))

    @classmethod
    def preset(cls, postprocess: str, max_disp: int, overrides: dict[str, float] | None = None,
               sgm_preset: str = DEFAULT_PRESET) -> MatchConfig:
        """``postprocess`` ``none`` = winner-take-all only; ``full`` = every stage of MC-CNN's post-processing,
        with the values of ``sgm_preset`` and ``overrides``."""
        if postprocess not in POSTPROCESS:
            raise UsageError(f"postprocess must be 'none' or 'full', not {postprocess!r}")
        full = postprocess == "full"
        return cls(max_disp=max_disp, sgm=full, lr_check=full, subpixel=full, median=full, bilateral=full,
                   sgm_preset=sgm_preset, overrides=tuple((overrides or {}).items()))


def check_max_disp(max_disp: int, width: int) -> None:
    """UsageError unless ``1 <= max_disp <= width - 1`` (here, not beside the numba kernels, so that a matcher
    checks its input without waiting for numba to import)."""
    if max_disp <= 0 or max_disp >= width:
        raise UsageError(f"max disparity must be in [1, image width - 1] = [1, {width - 1}], got {max_disp}")
