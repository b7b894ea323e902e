"""Pairs files for `infer --pairs`: names, relative and quoted paths, and every mistake in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from stereodeploy.data.pairs import Pair, read_pairs_file
from stereodeploy.errors import UsageError, UserError


@pytest.fixture
def middeval(tmp_path: Path) -> Path:
    """Two MiddEval3-like scenes (every left image is im0.png) and one folder with a space in its name."""
    for scene in ("Adirondack", "Jadeplant", "my scans"):
        (tmp_path / scene).mkdir()
        for name in ("im0.png", "im1.png"):
            (tmp_path / scene / name).write_bytes(b"png")
    return tmp_path


def _write(folder: Path, text: str) -> Path:
    path = folder / "pairs.txt"
    path.write_text(text)
    return path


def test_name_column_relative_quoted_and_absolute_paths(middeval: Path) -> None:
    text = ("# left right name\n\n"
            "Adirondack/im0.png Adirondack/im1.png Adirondack\n"
            f"{middeval}/Jadeplant/im0.png   Jadeplant/im1.png\tJade  # trailing comment\n"
            "'my scans/im0.png' \"my scans/im1.png\"\n")
    pairs = read_pairs_file(_write(middeval, text))
    assert pairs == [
        Pair("Adirondack", middeval / "Adirondack/im0.png", middeval / "Adirondack/im1.png"),
        Pair("Jade", middeval / "Jadeplant/im0.png", middeval / "Jadeplant/im1.png"),
        Pair("im0", middeval / "my scans/im0.png", middeval / "my scans/im1.png"),  # no name: the left stem
    ]
    name, left, right = pairs[0]  # unpacks like the (name, left, right) tuples it replaces
    assert (name, left.name, right.name) == ("Adirondack", "im0.png", "im1.png")


def test_two_pairs_with_one_output_name_point_to_the_name_column(middeval: Path) -> None:
    path = _write(middeval, "Adirondack/im0.png Adirondack/im1.png\nJadeplant/im0.png Jadeplant/im1.png\n")
    with pytest.raises(UsageError, match=r"pairs.txt:2: output name 'im0' is already used on line 1: add a third "
                                         r"column with a distinct output name"):
        read_pairs_file(path)
    path = _write(middeval, "Adirondack/im0.png Adirondack/im1.png a\nJadeplant/im0.png Jadeplant/im1.png a\n")
    with pytest.raises(UsageError, match="pairs.txt:2: output name 'a' is already used on line 1: use distinct"):
        read_pairs_file(path)


@pytest.mark.parametrize("line, message", [
    ("Adirondack/im0.png", r"pairs.txt:1: expected 'LEFT RIGHT \[NAME\]', got 1 fields"),
    ("a b c d", r"pairs.txt:1: expected 'LEFT RIGHT \[NAME\]', got 4 fields"),
    ("my scans/im0.png my scans/im1.png", r"got 4 fields .*quote paths that contain spaces"),
    ("'my scans/im0.png my scans/im1.png", r"pairs.txt:1: No closing quotation; quote each path"),
    ("Adirondack/im0.png Adirondack/im1.png out/x", r"pairs.txt:1: output name 'out/x' must be a plain file name"),
    ("Adirondack/im0.png Adirondack/im1.png ..", r"output name '..' must be a plain file name"),
])
def test_malformed_lines_name_file_line_and_fix(middeval: Path, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        read_pairs_file(_write(middeval, line + "\n"))


def test_missing_file_image_or_pairs(middeval: Path) -> None:
    with pytest.raises(UserError, match="pairs file .*nope.txt not found"):
        read_pairs_file(middeval / "nope.txt")
    with pytest.raises(UserError, match=r"pairs.txt:2: image .*Adirondack/im2.png not found; check the path"):
        read_pairs_file(_write(middeval, "# header\nAdirondack/im0.png Adirondack/im2.png\n"))
    with pytest.raises(UsageError, match="lists no pairs"):
        read_pairs_file(_write(middeval, "# only a comment\n\n"))
