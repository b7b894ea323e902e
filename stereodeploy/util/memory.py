"""How much memory this process may still take, and the one-line refusal of a request that needs more.

Commands whose memory grows with the disparity range (the cost volume is H x W x D) estimate their peak from
the sizes involved and call :func:`refuse_if_oversized` before any work, so an oversized request stops in a
second with the number, instead of swapping for minutes and being killed.
"""

from __future__ import annotations

import os
from pathlib import Path

from stereodeploy.errors import UserError

GIB = 2**30
_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a number near 2**63



def skip_huge_page_advice() -> bool:
    """Stop numpy from advising transparent huge pages (``madvise(MADV_HUGEPAGE)``) for its large arrays; return
    whether it was done. Left alone when the user set ``NUMPY_MADVISE_HUGEPAGE`` (numpy's own switch).

    Where the kernel's THP ``defrag`` setting is ``madvise`` (a common default), every first touch of an advised
    2 MB range may compact memory inside the page fault. The engine's volumes are hundreds of MB touched once, so
    a one-shot ``infer --postprocess full`` on a KITTI pair spent 3-10 s of system time there against 1 s without
    the advice (wall 5.0-9.1 s against 3.5 s on the 2-core development VM; scripts/bench_pipeline.py). The
    kernel may still back the arrays with huge pages it has at hand (THP ``enabled=always``), without stalling.
    """
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return False
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # numpy 1.x
        try:
            from numpy.core.multiarray import _set_madvise_hugepage
        except ImportError:
            return False
    _set_madvise_hugepage(False)
    return True

def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return None


def _cgroup_room(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Limit minus use of this process's memory cgroup (v2, else v1), page cache that can be dropped not counted
    as use; None without a limit. A container's limit is invisible in /proc/meminfo, yet it is what kills."""
    for limit_file, usage_file, stat_file, cache_key in (
            (root / "memory.max", root / "memory.current", root / "memory.stat", "inactive_file"),
            (root / "memory" / "memory.limit_in_bytes", root / "memory" / "memory.usage_in_bytes",
             root / "memory" / "memory.stat", "total_inactive_file")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is None or usage is None or limit >= _UNLIMITED:
            continue
        cache = 0
        try:
            for line in stat_file.read_text().splitlines():
                key, _, number = line.partition(" ")
                if key == cache_key and number.strip().isdigit():
                    cache = int(number)
        except OSError:
            pass
        return max(0, limit - usage + cache)
    return None


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping or being killed: the smaller of the system's
    MemAvailable and its cgroup's room; None when neither can be read."""
    known = [n for n in (_meminfo_available(), _cgroup_room()) if n is not None]
    return min(known) if known else None


def refuse_if_oversized(need: int, what: str, fix: str, available: int | None = None) -> None:
    """UserError "``what`` needs about N GiB, more than the M GiB available: ``fix``" when ``need`` exceeds the
    available memory (:func:`available_memory` unless given)."""
    have = available if available is not None else available_memory()
    if have is not None and need > have:
        raise UserError(f"{what} needs about {need / GIB:.1f} GiB of memory, more than the {have / GIB:.1f} GiB "
                        f"available: {fix}")
