"""Lists of stereo pairs for ``stereodeploy infer --pairs FILE``.

One pair per line: ``LEFT RIGHT [NAME]``. Paths relative to the file's folder; quote a path that holds spaces
(``"my scans/l.png" "my scans/r.png"``). ``NAME`` names the outputs (``<NAME>_disp.png`` ...); without it the left
image's stem is used, which is ambiguous where every left image has one name (MiddEval3's ``im0.png``)::

    # left                      right                       name
    trainingQ/Adirondack/im0.png trainingQ/Adirondack/im1.png Adirondack
    trainingQ/Jadeplant/im0.png  trainingQ/Jadeplant/im1.png  Jadeplant

Blank lines and ``#`` comments are skipped.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import NamedTuple

from stereodeploy.errors import UsageError, UserError

_FORMAT = "'LEFT RIGHT [NAME]'"


class Pair(NamedTuple):
    """One line of a pairs file: the output name and the two image paths."""

    name: str
    left: Path
    right: Path


def _check_name(name: str, where: str) -> None:
    bad = [c for c in ("/", "\\", os.sep) if c in name]
    if bad or name in (".", "..") or name.startswith("."):
        raise UsageError(f"{where}: output name {name!r} must be a plain file name (no folders, not starting "
                         "with '.'); write e.g. Adirondack")


def read_pairs_file(path: str | os.PathLike[str]) -> list[Pair]:
    """The pairs listed in ``path`` (see the module docstring), in file order.

    Raises :class:`UserError` when the file or an image is missing, and :class:`UsageError` (naming the file and
    line) for a line that is not ``LEFT RIGHT [NAME]``, a bad name, two pairs with one output name, or a file with
    no pair.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs file {path} not found: give a text file with one {_FORMAT} line per pair")
    pairs: list[Pair] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        where = f"{path}:{number}"
        try:
            fields = shlex.split(line, comments=True)
        except ValueError as exc:  # an unclosed quote
            raise UsageError(f"{where}: {exc}; quote each path that has spaces with matching quotes") from None
        if not fields:
            continue
        if len(fields) not in (2, 3):
            raise UsageError(f"{where}: expected {_FORMAT}, got {len(fields)} fields in {line.strip()[:60]!r}; "
                             "quote paths that contain spaces")
        left, right = (p if p.is_absolute() else path.parent / p for p in map(Path, fields[:2]))
        name = fields[2] if len(fields) == 3 else left.stem
        _check_name(name, where)
        if name in first_line:
            fix = "use distinct names" if len(fields) == 3 else "add a third column with a distinct output name"
            raise UsageError(f"{where}: output name {name!r} is already used on line {first_line[name]}: {fix}")
        for image in (left, right):
            if not image.is_file():
                raise UserError(f"{where}: image {image} not found; check the path (relative paths start at "
                                f"{path.parent})")
        first_line[name] = number
        pairs.append(Pair(name, left, right))
    if not pairs:
        raise UsageError(f"{path} lists no pairs: write one {_FORMAT} line per pair")
    return pairs
