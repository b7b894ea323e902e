"""CPU thread settings for every framework, chosen once per process and recorded with the results.

PyTorch's OpenMP workers spin while they wait: when more threads run than there are free cores, a training step
becomes an order of magnitude slower (measured in docs/training.md). The default here therefore never asks for
more threads than the cores this process may use, shared between the processes of a job on this node
(``LOCAL_WORLD_SIZE`` under torchrun), and leaves out the cores that other processes are keeping busy.

No framework is imported here: the settings go into the environment variables the frameworks read when they start
(``OMP_NUM_THREADS``, each framework record's ``thread_env``, and ``NUMBA_NUM_THREADS`` for the engine's kernels),
and a framework that is already loaded is set through its record's ``set_threads`` as well. onnxruntime takes its
count per session (``open_backend(threads=...)``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from stereodeploy.frameworks import FRAMEWORKS


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def busy_cores() -> int:
    """Cores kept busy by other processes now: the 1-minute load average, rounded down (0 where unknown)."""
    try:
        return int(os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0


def default_threads(processes_per_node: int | None = None) -> int:
    """Threads per process that do not oversubscribe the cores: the free cores shared by this node's processes."""
    if processes_per_node is None:
        processes_per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    cores = usable_cores()
    free = max(1, cores - min(busy_cores(), cores - 1))
    return max(1, free // max(1, processes_per_node))


def configure_threads(n: int | None = None, frameworks: Sequence[str] = ()) -> dict[str, Any]:
    """Use ``n`` threads per framework operation (None: :func:`default_threads`); returns the settings made.

    Call it before the framework runs its first operation: some frameworks fix their thread pools then, others can
    size a pool only once. ``frameworks`` (keys of :data:`~stereodeploy.frameworks.FRAMEWORKS`) are imported here
    so that their pools are set through their APIs too; frameworks loaded already are set in any case. The returned
    dict is what reports record.
    """
    if n is not None and n < 1:
        from stereodeploy.errors import UsageError

        raise UsageError(f"--threads must be at least 1, got {n}")
    chosen = n if n is not None else default_threads()
    inter = 1  # one training or inference step at a time: parallelism lives inside each operation
    os.environ["OMP_NUM_THREADS"] = str(chosen)
    for fw in FRAMEWORKS.values():
        for variable, pool in fw.thread_env.items():
            os.environ[variable] = str(chosen if pool == "intra" else inter)
    if "numba" in sys.modules:  # its pool is sized: use at most that many of it from this thread
        import numba

        numba.set_num_threads(min(chosen, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(chosen)  # the engine's kernels and thread pools
    settings: dict[str, Any] = {"threads": chosen, "interop_threads": inter, "source": "option" if n else "default",
                                "usable_cores": usable_cores(), "load_average": _load()}
    for name in frameworks:
        importlib.import_module(FRAMEWORKS[name].version_module)
    for fw in FRAMEWORKS.values():
        if fw.loaded():
            fw.load("set_threads")(chosen, inter)
    return settings


def thread_report() -> dict[str, Any]:
    """The thread counts the loaded frameworks actually use (for summaries; imports no framework)."""
    out: dict[str, Any] = {"usable_cores": usable_cores(), "load_average": _load()}
    for fw in FRAMEWORKS.values():
        if fw.loaded():
            out[fw.key] = fw.load("thread_counts")()
    return out


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None
