"""The demo picture: left | colour disparity with its colour bar | error map with its legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stereodeploy.cli.demo import MOTORCYCLE_MAX_DISP, run_demo, side_by_side
from stereodeploy.data.io import colorbar, error_legend, read_image
from stereodeploy.errors import UsageError


def test_side_by_side_top_aligns_on_white() -> None:
    a = np.zeros((4, 2, 3), np.uint8)
    b = np.full((2, 3), 7, np.uint8)
    out = side_by_side(a, b, gap=1)
    assert out.shape == (4, 6, 3)
    assert (out[:, 2] == 255).all()  # the gap
    assert (out[:2, 3:] == 7).all() and (out[2:, 3:] == 255).all()  # the shorter picture, padded below in white


def test_demo_picture_carries_the_colour_bar_and_the_error_legend(motorcycle, tmp_path: Path) -> None:
    from stereodeploy.engine.shipped import default_model_path

    left = motorcycle[0]
    h, w = left.shape[:2]
    result = run_demo(default_model_path(), tmp_path, postprocess="none")
    assert 0 < result.error_rate < 100 and result.image == tmp_path / "motorcycle_none.png"
    picture = read_image(result.image)
    bar, legend = colorbar(w, MOTORCYCLE_MAX_DISP), error_legend(w)
    assert picture.shape == (h + max(len(bar), len(legend)), 3 * w + 16, 3)
    np.testing.assert_array_equal(picture[:h, :w], left)
    np.testing.assert_array_equal(picture[h:h + len(bar), w + 8:2 * w + 8], bar)
    np.testing.assert_array_equal(picture[h:h + len(legend), 2 * w + 16:], legend)
    with pytest.raises(UsageError, match="exists"):
        run_demo(default_model_path(), tmp_path, postprocess="none")  # nothing replaced without overwrite
