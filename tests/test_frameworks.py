"""The framework record is the one place that names a framework: no other module does, and a new record is picked
up by the CLI, the thread settings, the process reader and the report without any other edit."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
import types
from dataclasses import replace
from pathlib import Path

import pytest

from stereodeploy import frameworks
from stereodeploy.train.distributed import Process

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "stereodeploy"
# the modules that are one framework's own code (named by its record), and the registry itself
FRAMEWORK_MODULES = {
    "frameworks.py", "nets/torch_net.py", "nets/tf_net.py", "train/torch_trainer.py", "train/tf_trainer.py",
    "engine/torch_backend.py", "engine/tf_backend.py", "util/quiet.py",
}
NAMES = re.compile(r"\b(torch|tf|tensorflow|keras|pytorch)\b", re.IGNORECASE)


def framework_names_in(path: Path) -> list[str]:
    """Framework names in ``path``'s code: imports of a framework and string constants (docstrings and comments,
    which describe, are left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)
                  and isinstance(node.value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if NAMES.match(a.name.split(".")[0])]
        elif isinstance(node, ast.ImportFrom) and node.module and NAMES.match(node.module.split(".")[0]):
            found.append(f"from {node.module} import")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
              and NAMES.search(node.value)):
            found.append(f"line {node.lineno}: {node.value!r}")
    return found


def test_no_module_outside_the_framework_modules_names_a_framework() -> None:
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel not in FRAMEWORK_MODULES and (found := framework_names_in(path)):
            offenders[rel] = found
    assert offenders == {}


def test_the_scan_finds_a_hard_coded_name(tmp_path: Path) -> None:
    """The scan above can fail: code that names a framework is found, a docstring that does is not."""
    sample = tmp_path / "sample.py"
    sample.write_text('"""Works with PyTorch."""\nimport torch\nKEYS = ("tf", "onnx")\nx = f"a {1} TensorFlow"\n')
    assert framework_names_in(sample) == ["import torch", "line 3: 'tf'", "line 4: ' TensorFlow'"]


# ------------------------------------------------------------------------------------------------ a third framework
def fake_module(calls: list) -> types.ModuleType:
    mod = types.ModuleType("fakefw")
    mod.__version__ = "9.9"
    mod.set_threads = lambda intra, inter: calls.append((intra, inter))
    mod.thread_counts = lambda: {"intra_op": 7, "inter_op": 1}
    mod.process = lambda: Process(rank=1, world=3, local_rank=1, local_world=3)
    return mod


def fake_record() -> frameworks.Framework:
    return replace(frameworks.FRAMEWORKS["torch"], key="fake", label="FakeFlow", version_module="fakefw",
                   set_threads="fakefw:set_threads", thread_counts="fakefw:thread_counts", process="fakefw:process",
                   distributed_hint="fakerun -n N", local_launch=(), thread_env={"FAKE_THREADS": "intra"},
                   distributions={"fakeflow": ("fakeflow",)}, model_file="mccnn_fast_fake.onnx")


@pytest.fixture
def third_framework(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    monkeypatch.setitem(sys.modules, "fakefw", fake_module(calls))
    monkeypatch.setitem(frameworks.FRAMEWORKS, "fake", fake_record())
    monkeypatch.delenv("FAKE_THREADS", raising=False)
    return calls


def test_threads_and_processes_follow_a_new_record(third_framework: list, monkeypatch) -> None:
    import os

    from stereodeploy.train.distributed import process_for
    from stereodeploy.util.threads import configure_threads, thread_report

    for variable in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", *(v for fw in frameworks.FRAMEWORKS.values()
                                                               for v in fw.thread_env)):
        monkeypatch.setenv(variable, os.environ.get(variable, ""))  # restored after the test
    settings = configure_threads(3)
    assert settings["threads"] == 3
    assert third_framework == [(3, 1)]  # the loaded framework's pools were sized through its record
    assert os.environ["FAKE_THREADS"] == "3"  # and the variable it reads at start was set
    assert thread_report()["fake"] == {"intra_op": 7, "inter_op": 1}
    assert process_for("fake") == Process(rank=1, world=3, local_rank=1, local_world=3)


def test_the_report_takes_differences_of_every_framework_against_the_first(third_framework: list) -> None:
    from stereodeploy.study.report import markdown, training_table

    summaries = {key: {"total_seconds": t, "mean_epoch_seconds": t / 2, "mean_step_seconds": t / 100}
                 for key, t in (("torch", 10.0), ("tf", 12.0), ("fake", 5.0))}
    table = training_table(summaries)
    assert table["differences"]["tf"]["total_seconds"] == pytest.approx(20.0)
    assert table["differences"]["fake"]["total_seconds"] == pytest.approx(-50.0)
    assert table["difference_percent"] == table["differences"]["tf"]  # two frameworks: the one row, as before
    assert "T_FakeFlow − T_PyTorch" in table["difference_formulas"]["fake"]
    text = markdown({"title": "T", "table1": table})
    assert "| Difference FakeFlow (%) | -50.0 |" in text and "| Difference TensorFlow (%) | +20.0 |" in text


def test_the_cli_gets_a_train_command_and_choices_for_a_new_record() -> None:
    """In a fresh process (the CLI's choices are made at import): add a record, then import the CLI."""
    code = textwrap.dedent("""
        from dataclasses import replace
        from stereodeploy import frameworks
        frameworks.FRAMEWORKS["fake"] = replace(frameworks.FRAMEWORKS["torch"], key="fake", label="FakeFlow",
                                                distributed_hint="fakerun -n N", local_launch=())
        from typer.testing import CliRunner
        from stereodeploy.cli.app import app
        r = CliRunner()
        print(r.invoke(app, ["train", "--help"]).output)
        print(r.invoke(app, ["train", "fake", "--help"]).output)
        print(r.invoke(app, ["infer", "--help"]).output)
        res = r.invoke(app, ["train", "fake", "--nproc-per-node", "2", "--data", "x"])
        print(res.exit_code, res.output)
    """)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200", "NO_COLOR": "1"}
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    out = " ".join(res.stdout.split())
    assert "fake Train MC-CNN fast with FakeFlow" in out
    assert "Several processes: fakerun -n N" in out
    assert "onnx|torch|tf|fake" in out  # the backend choice of infer
    assert "2 " in out and "for FakeFlow start fakerun -n N" in out
