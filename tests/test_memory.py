"""Oversized requests are refused up front, in seconds, with the memory they would need (issue 19, item 2)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stereodeploy.errors import UserError
from stereodeploy.util.memory import GIB, _cgroup_room, available_memory, refuse_if_oversized


def test_cgroup_room_reads_v2_then_v1_and_ignores_no_limit(tmp_path: Path) -> None:
    assert _cgroup_room(tmp_path) is None  # no cgroup files: no limit known
    (tmp_path / "memory.max").write_text("max\n")  # v2 without a limit
    (tmp_path / "memory.current").write_text("100\n")
    assert _cgroup_room(tmp_path) is None
    (tmp_path / "memory.max").write_text(f"{8 * GIB}\n")
    (tmp_path / "memory.stat").write_text(f"anon 5\ninactive_file {GIB}\n")
    assert _cgroup_room(tmp_path) == 8 * GIB - 100 + GIB  # droppable page cache counts as room
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "no limit"
    (v1 / "memory" / "memory.usage_in_bytes").write_text("5\n")
    assert _cgroup_room(v1) is None
    (v1 / "memory" / "memory.limit_in_bytes").write_text(f"{2 * GIB}\n")
    assert _cgroup_room(v1) == 2 * GIB - 5


def test_available_memory_is_the_smaller_of_meminfo_and_the_cgroup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("stereodeploy.util.memory._meminfo_available", lambda: 20 * GIB)
    monkeypatch.setattr("stereodeploy.util.memory._cgroup_room", lambda: 3 * GIB)
    assert available_memory() == 3 * GIB
    monkeypatch.setattr("stereodeploy.util.memory._cgroup_room", lambda: None)
    assert available_memory() == 20 * GIB


def test_refusal_names_the_need_the_room_and_the_fix() -> None:
    refuse_if_oversized(GIB, "x", "do y", available=GIB)  # exactly enough passes
    with pytest.raises(UserError, match=r"^x needs about 3\.0 GiB of memory, more than the 2\.0 GiB available: "
                                        r"do y$"):
        refuse_if_oversized(3 * GIB, "x", "do y", available=2 * GIB)


def test_check_estimates_follow_the_measured_peaks() -> None:
    """The measured peaks (MiB, see export_matcher's constants) lie under the estimates, by less than 30 %."""
    from stereodeploy.deploy.export_matcher import check_memory_bytes

    for max_disp, postprocess, measured in ((1000, "none", 476), (4000, "none", 1448), (8000, "none", 2587),
                                            (256, "full", 477), (512, "full", 1193), (768, "full", 2368)):
        estimate = check_memory_bytes(max_disp, postprocess) / 2**20
        assert measured <= estimate <= 1.3 * measured, (max_disp, postprocess, estimate)
    assert check_memory_bytes(100000, "none") > 22e9  # the run the issue saw killed at 22 GB


@pytest.mark.parametrize("postprocess", ["none", "full"])
def test_export_matcher_refuses_every_variant_in_seconds(postprocess: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from stereodeploy.cli.app import app

    monkeypatch.setattr("stereodeploy.util.memory.available_memory", lambda: 16 * GIB)
    start = time.perf_counter()
    res = CliRunner().invoke(app, ["export-matcher", "--out", str(tmp_path / "m.onnx"), "--max-disp", "100000",
                                   "--postprocess", postprocess])
    assert time.perf_counter() - start < 10
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "max disparity 100000 " in res.output and "more than the 16.0 GiB available" in res.output
    assert "use a smaller --max-disp" in res.output and not (tmp_path / "m.onnx").exists()


def test_infer_refuses_a_volume_that_would_not_fit_and_says_what_fits(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A KITTI-sized pair at max disparity 1000 with post-processing: about 4.6 GiB; refused with 2 GiB free, in
    seconds, before any output; winner-take-all (no volume) needs under 1 GiB and runs."""
    from stereodeploy.cli.app import app
    from stereodeploy.data.io import write_png
    from stereodeploy.engine.inference import match_memory_bytes

    rng = np.random.default_rng(0)
    left = rng.integers(0, 255, (375, 1242), dtype=np.uint8)
    write_png(tmp_path / "l.png", left)
    write_png(tmp_path / "r.png", np.roll(left, -4, axis=1))
    assert 4.3 * GIB < match_memory_bytes(375, 1242, 1000, True) < 5.1 * GIB
    monkeypatch.setattr("stereodeploy.util.memory.available_memory", lambda: 2 * GIB)
    args = ["infer", str(tmp_path / "l.png"), str(tmp_path / "r.png"), "--max-disp", "1000", "--out",
            str(tmp_path / "out")]
    start = time.perf_counter()
    res = CliRunner().invoke(app, [*args, "--postprocess", "full"])
    assert time.perf_counter() - start < 10
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "matching l.png (1242x375) at max disparity 1000 with post-processing needs about 4." in res.output
    assert "use a smaller --max-disp, or --postprocess none" in res.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert match_memory_bytes(375, 1242, 1000, False) < GIB  # the suggested --postprocess none fits: run it
    res = CliRunner().invoke(app, [*args, "--postprocess", "none", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "l_disp.png").is_file()


_HUGEPAGE_PROBE = """
import sys
from numpy._core.multiarray import _set_madvise_hugepage
from stereodeploy.cli.app import main
sys.argv = ["stereodeploy", "models"]
try:
    main()
except SystemExit:
    pass
print("advice on" if _set_madvise_hugepage(True) else "advice off")
"""


@pytest.mark.parametrize("env, expected", [({}, "advice off"), ({"NUMPY_MADVISE_HUGEPAGE": "1"}, "advice on")])
def test_commands_stop_numpy_advising_huge_pages_unless_the_user_chose(env: dict, expected: str) -> None:
    """numpy's MADV_HUGEPAGE made the kernel compact memory inside page faults: seconds per full-pipeline infer
    (util.memory.skip_huge_page_advice). Every command turns it off; numpy's own variable still wins."""
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    run = subprocess.run([sys.executable, "-c", _HUGEPAGE_PROBE], env={**clean, **env}, capture_output=True,
                         text=True, timeout=120, check=True)
    assert run.stdout.strip().splitlines()[-1] == expected
