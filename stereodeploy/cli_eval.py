"""`stereodeploy evaluate` and `stereodeploy compare` (registered on the main app by :func:`register`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the evaluate and compare commands to ``app``."""
