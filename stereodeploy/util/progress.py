"""The one progress bar of long work (training epochs, evaluation frames, int8 calibration)."""

from __future__ import annotations

from typing import Any


def progress_bar(enabled: bool = True, label: str = "{task.description}", stderr: bool = False) -> Any:
    """A rich ``Progress``: label, bar, done/total, elapsed and remaining time; hidden when not ``enabled``.
    ``stderr`` keeps it off stdout, for commands whose stdout carries results."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True) if stderr else None, disable=not enabled, transient=False)
