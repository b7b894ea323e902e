"""Keep TensorFlow's start-up chatter off the terminal unless the user asks for it.

TensorFlow's C++ core logs through absl on every start (``WARNING: All log messages before absl::InitializeLog()
...``, ``cpu_feature_guard.cc ... This TensorFlow binary is optimized ...``, oneDNN notices); they say nothing
about the user's command. Its C++ log level is read from the environment once, when the library loads, so
:func:`quiet_tensorflow` must run before the first ``import tensorflow`` (the commands import it lazily, after
parsing their options, so the start of a command is early enough).

Errors still show (level 2 hides INFO and WARNING). ``verbose`` leaves everything as it is, and so does a value
the user set in the environment.
"""

from __future__ import annotations

import logging
import os
import sys

TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "2"  # 0: everything, 1: no INFO, 2: no INFO or WARNING, 3: errors hidden too
PYTHON_LOGGERS = ("tensorflow", "absl", "tf2onnx", "h5py")  # Python-side loggers that repeat TF's notices


def quiet_tensorflow(verbose: bool = False) -> bool:
    """Silence TensorFlow's INFO and WARNING logs (C++ and Python) unless ``verbose``.

    Returns whether the C++ setting can still take effect (False when TensorFlow is already imported; the Python
    loggers are quietened anyway). Touches only the process environment and the named loggers' levels.
    """
    if verbose:
        return "tensorflow" not in sys.modules
    os.environ.setdefault(TF_LOG_ENV, QUIET_LEVEL)
    for name in PYTHON_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.ERROR:  # NOTSET (0) included
            logger.setLevel(logging.ERROR)
    return "tensorflow" not in sys.modules
