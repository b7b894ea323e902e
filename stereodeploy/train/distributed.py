"""Which process of a training job this is, read from the launcher's environment (framework-free).

Each framework record (:mod:`stereodeploy.frameworks`) names the reader of its launcher's convention:

- PyTorch: ``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` for each process it
  starts (on one node or, through its c10d rendezvous, on several).
- TensorFlow: ``TF_CONFIG`` holds the cluster (``{"cluster": {"worker": ["host:port", ...]}, "task": {"type":
  "worker", "index": i}}``), the convention of ``tf.distribute.MultiWorkerMirroredStrategy``. A ``chief`` entry,
  if any, is process 0 and the workers follow.

Without these variables a run is one process: rank 0 of 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from stereodeploy.errors import UsageError


@dataclass(frozen=True)
class Process:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # on this node (picks the GPU)
    local_world: int = 1  # processes on this node (shares the CPU cores)

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a whole number: unset it or launch with torchrun") from None


def torch_process() -> Process:
    """From torchrun's variables; one process when WORLD_SIZE is unset."""
    world = _int("WORLD_SIZE", 1)
    rank = _int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"RANK={rank} and WORLD_SIZE={world} do not describe a job: launch with torchrun")
    local_rank = _int("LOCAL_RANK", rank if world > 1 else 0)
    return Process(rank=rank, world=world, local_rank=local_rank, local_world=_int("LOCAL_WORLD_SIZE", world))


def tf_process() -> Process:
    """From TF_CONFIG; one process when it is unset or names a single task."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return Process()
    try:
        config = json.loads(raw)
        cluster = config.get("cluster", {})
        tasks = [("chief", i) for i in range(len(cluster.get("chief", [])))]
        tasks += [("worker", i) for i in range(len(cluster.get("worker", [])))]
        me = (config["task"]["type"], int(config["task"]["index"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise UsageError('TF_CONFIG is not valid: give {"cluster": {"worker": ["host:port", ...]}, '
                         '"task": {"type": "worker", "index": N}}') from None
    if me not in tasks:
        raise UsageError(f"TF_CONFIG's task {me[0]} {me[1]} is not in its cluster: training runs on chief and "
                         "worker tasks")
    hosts = [h.rsplit(":", 1)[0] for kind in ("chief", "worker") for h in cluster.get(kind, [])]
    my_host = hosts[tasks.index(me)]
    local = [i for i, h in enumerate(hosts) if h == my_host]
    return Process(rank=tasks.index(me), world=len(tasks), local_rank=local.index(tasks.index(me)),
                   local_world=len(local))


def process_for(framework: str) -> Process:
    """This process's place in a job of ``framework``, read by the launcher convention its record names."""
    from stereodeploy.frameworks import get

    return get(framework).load("process")()
