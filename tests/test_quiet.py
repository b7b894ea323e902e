"""TensorFlow's start-up logs stay off stderr unless verbose (checked in a fresh process, as a command runs)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stereodeploy.util.quiet import PYTHON_LOGGERS, QUIET_LEVEL, TF_LOG_ENV, quiet_tensorflow

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_loggers():
    levels = {name: logging.getLogger(name).level for name in PYTHON_LOGGERS}
    for name in PYTHON_LOGGERS:  # commands run in this process earlier (CliRunner) may have quietened them
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_sets_the_level_unless_verbose_or_set_by_the_user(monkeypatch: pytest.MonkeyPatch, clean_loggers) -> None:
    monkeypatch.delenv(TF_LOG_ENV, raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    assert quiet_tensorflow(verbose=True) is True
    assert TF_LOG_ENV not in os.environ and logging.getLogger("tensorflow").level < logging.ERROR
    assert quiet_tensorflow() is True
    assert os.environ[TF_LOG_ENV] == QUIET_LEVEL
    assert all(logging.getLogger(n).level == logging.ERROR for n in PYTHON_LOGGERS)
    monkeypatch.setenv(TF_LOG_ENV, "0")  # the user's own choice wins
    quiet_tensorflow()
    assert os.environ[TF_LOG_ENV] == "0"
    monkeypatch.setitem(sys.modules, "tensorflow", object())  # too late for the C++ side: says so
    assert quiet_tensorflow() is False


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
