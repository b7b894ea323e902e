"""TensorFlow's start-up logs stay off stderr unless verbose (checked in a fresh process, as a command runs)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stereodeploy.util.quiet import PYTHON_LOGGERS, QUIET_LEVEL, TF_LOG_ENV, QuietImport, drop_chatter, quiet_tensorflow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_loggers():
    levels = {name: logging.getLogger(name).level for name in PYTHON_LOGGERS}
    for name in PYTHON_LOGGERS:  # commands run in this process earlier (CliRunner) may have quietened them
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _hooks() -> int:
    return sum(isinstance(f, QuietImport) for f in sys.meta_path)


def test_sets_the_level_unless_verbose_or_set_by_the_user(monkeypatch: pytest.MonkeyPatch, clean_loggers) -> None:
    monkeypatch.delenv(TF_LOG_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, QuietImport)])
    assert quiet_tensorflow(verbose=True) is True
    assert TF_LOG_ENV not in os.environ and logging.getLogger("tensorflow").level < logging.ERROR and _hooks() == 0
    assert quiet_tensorflow() is True
    assert os.environ[TF_LOG_ENV] == QUIET_LEVEL and _hooks() == 1
    assert all(logging.getLogger(n).level == logging.ERROR for n in PYTHON_LOGGERS)
    quiet_tensorflow()
    assert _hooks() == 1  # installed once
    monkeypatch.setattr(sys, "meta_path", [f for f in sys.meta_path if not isinstance(f, QuietImport)])
    monkeypatch.setenv(TF_LOG_ENV, "0")  # the user's own choice wins: no level change and no filter
    quiet_tensorflow()
    assert os.environ[TF_LOG_ENV] == "0" and _hooks() == 0
    monkeypatch.setitem(sys.modules, "tensorflow", object())  # too late for the C++ side: says so
    assert quiet_tensorflow() is False


def test_drop_chatter_keeps_errors_and_everything_else() -> None:
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1796487470.063521   17385 port.cc:153] oneDNN custom operations are on.\n"
            "W0000 00:00:1796487470.1   17385 cpu_feature_guard.cc:12] This TensorFlow binary is optimized\n"
            "E0000 00:00:1796487470.2   17385 cuda_dnn.cc:8] Unable to register cuDNN factory\n"
            "a Python warning\n")
    assert drop_chatter(text) == ("E0000 00:00:1796487470.2   17385 cuda_dnn.cc:8] Unable to register cuDNN factory\n"
                                  "a Python warning\n")


def _tf_stderr(verbose: bool) -> str:
    code = ("from stereodeploy.util.quiet import quiet_tensorflow\n"
            f"quiet_tensorflow(verbose={verbose})\n"
            "import tensorflow as tf\n"
            "tf.get_logger().warning('python-side warning')\n"
            "print(float((tf.constant([1.0]) + 1)[0]))\n")
    env = {k: v for k, v in os.environ.items() if k != TF_LOG_ENV}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "2.0"
    return done.stderr


@pytest.mark.slow
def test_tensorflow_import_and_op_print_nothing_unless_verbose() -> None:
    pytest.importorskip("tensorflow")
    quiet = _tf_stderr(verbose=False)
    assert quiet == "", quiet
    loud = _tf_stderr(verbose=True)
    assert "python-side warning" in loud  # verbose shows what TensorFlow says (here at least its Python warning)


@pytest.mark.slow
def test_a_tensorflow_command_prints_no_absl_or_onednn_line_unless_verbose(synthetic_dataset: Path,
                                                                            tmp_path: Path) -> None:
    """The real thing: ``stereodeploy train tf`` in a fresh process, as a user runs it."""
    pytest.importorskip("tensorflow")
    env = {k: v for k, v in os.environ.items() if k != TF_LOG_ENV}
    env["PYTHONPATH"] = str(ROOT)

    def train(*extra: str) -> str:
        out = tmp_path / f"run{len(extra)}"
        cmd = [sys.executable, "-m", "stereodeploy", *extra, "train", "tf", "--data", str(synthetic_dataset),
               "--out", str(out), "--epochs", "1", "--max-examples", "64", "--layers", "2", "--maps", "8",
               "--no-progress", "--threads", "1"]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        assert (out / "summary.json").is_file()
        return done.stdout + done.stderr

    quiet = train()
    assert "absl" not in quiet and "oneDNN" not in quiet and "port.cc" not in quiet, quiet
    assert "oneDNN custom operations" in train("--verbose")  # the switch works, and the line was really there
