"""Keep TensorFlow's start-up chatter off the terminal unless the user asks for it.

TensorFlow's C++ core logs on every start (``WARNING: All log messages before absl::InitializeLog() ...``, the
``port.cc ... oneDNN custom operations are on`` notice, ``cpu_feature_guard.cc`` lines); they say nothing about the
user's command. Since TensorFlow logs through absl, ``TF_CPP_MIN_LOG_LEVEL`` no longer hides the lines written while
the library loads (absl writes everything logged before ``absl::InitializeLog()`` to stderr), and the only switch
that drops the oneDNN notice, ``TF_ENABLE_ONEDNN_OPTS=0``, also changes the numerics. So :func:`quiet_tensorflow`
does two things, both before the first ``import tensorflow`` (the commands import it lazily, after parsing their
options, so the start of a command is early enough):

- sets ``TF_CPP_MIN_LOG_LEVEL=2`` (INFO and WARNING hidden after loading; errors still show), and quietens the
  Python-side loggers that repeat TensorFlow's notices;
- installs an import hook that runs the import of ``tensorflow`` with file descriptor 2 sent to a temporary file,
  then writes back every line except absl's INFO/WARNING lines and its "before InitializeLog" banner (errors,
  Python warnings and anything else printed meanwhile still reach stderr, a little later).

Every process that imports TensorFlow runs a command (distributed workers too, one ``stereodeploy train`` each), so
each calls this at its start. ``verbose`` leaves everything as it is, and so does a value the user set for
``TF_CPP_MIN_LOG_LEVEL`` (the hook is then not installed either: the user asked for TensorFlow's own level).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "2"  # 0: everything, 1: no INFO, 2: no INFO or WARNING, 3: errors hidden too
PYTHON_LOGGERS = ("tensorflow", "absl", "tf2onnx", "h5py")  # Python-side loggers that repeat TF's notices
QUIET_MODULE = "tensorflow"  # the top-level package whose import runs with stderr filtered
# absl's banner, and its INFO / WARNING lines: "I0000 00:00:1796487470.063521   17385 port.cc:153] ..."
CHATTER = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
                     r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-/]+:\d+\] )")


def drop_chatter(text: str) -> str:
    """``text`` without absl's start-up banner and INFO/WARNING lines (errors and anything else kept)."""
    return "".join(line for line in text.splitlines(keepends=True) if not CHATTER.match(line))


@contextmanager
def filtered_stderr() -> Iterator[None]:
    """Send file descriptor 2 (C++ and Python alike) to a temporary file, then write back what is not chatter."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = drop_chatter(sink.read().decode(errors="replace"))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader with stderr filtered, then puts the original loader back on the module."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with filtered_stderr():
            self._loader.exec_module(module)


class QuietImport(importlib.abc.MetaPathFinder):
    """Finds :data:`QUIET_MODULE` like the path finder does and wraps its loader in :class:`_QuietLoader`."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) \
            -> importlib.machinery.ModuleSpec | None:
        if fullname != QUIET_MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow(verbose: bool = False) -> bool:
    """Silence TensorFlow's start-up lines and its INFO and WARNING logs (C++ and Python) unless ``verbose``.

    Returns whether the C++ side can still be quietened (False when TensorFlow is already imported; the Python
    loggers are quietened anyway). Touches only the process environment, ``sys.meta_path`` (once) and the named
    loggers' levels.
    """
    if verbose:
        return QUIET_MODULE not in sys.modules
    if TF_LOG_ENV not in os.environ:
        os.environ[TF_LOG_ENV] = QUIET_LEVEL
        if not any(isinstance(finder, QuietImport) for finder in sys.meta_path):
            sys.meta_path.insert(0, QuietImport())
    for name in PYTHON_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.ERROR:  # NOTSET (0) included
            logger.setLevel(logging.ERROR)
    return QUIET_MODULE not in sys.modules
