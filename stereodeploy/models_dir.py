"""Where the shipped models are: ``models/`` of the repository, installed as the package ``stereodeploy.models``."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from stereodeploy.errors import UserError

DEFAULT_MODEL = "mccnn_fast_torch.onnx"


def shipped_models() -> Path:
    return Path(str(resources.files("stereodeploy.models")))


def default_model_path() -> Path:
    """The shipped default model, or $STEREODEPLOY_MODEL when set."""
    override = os.environ.get("STEREODEPLOY_MODEL")
    path = Path(override) if override else shipped_models() / DEFAULT_MODEL
    if not path.is_file():
        raise UserError(f"the default model {path} is missing: reinstall stereodeploy or pass --model")
    return path
