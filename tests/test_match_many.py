"""StereoMatcher.match_many: a stream of pairs, the next pair's features beside this one's post-processing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.engine.matcher import StereoMatcher

MODEL = Path(__file__).resolve().parents[1] / "models" / "mccnn_fast_torch.onnx"


@pytest.mark.parametrize("postprocess", ["full", "none"])
def test_stream_equals_one_pair_at_a_time_in_order(postprocess: str) -> None:
    matcher = StereoMatcher.from_file(MODEL, max_disp=16, postprocess=postprocess, sgm_preset="kitti2015")
    pairs = [synthetic_pair(height=40, width=96, max_disp=14, seed=s) for s in range(5)]
    expected = [matcher(p.left, p.right) for p in pairs]
    assert not all(np.array_equal(expected[0], e) for e in expected[1:])  # the pairs give different answers
    pulled = []

    def lazily():  # a generator, as a caller reading files would pass
        for p in pairs:
            pulled.append(p)
            yield p.left, p.right

    results = list(matcher.match_many(lazily()))
    assert len(results) == len(pairs) == len(pulled)
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got.disparity, want)
        assert got.timings["total"] >= got.timings["features"] > 0
    serial = list(matcher.match_many(((p.left, p.right) for p in pairs), overlap=False))
    for got, want in zip(serial, expected):
        np.testing.assert_array_equal(got.disparity, want)


def test_stream_stops_at_a_bad_pair_after_the_good_ones() -> None:
    from stereodeploy.errors import UserError

    matcher = StereoMatcher.from_file(MODEL, max_disp=16, postprocess="full")
    good = synthetic_pair(height=40, width=96, max_disp=14, seed=1)
    stream = matcher.match_many([(good.left, good.right), (good.left, good.right[:, :80])])
    assert next(stream).disparity.shape == (40, 96)
    with pytest.raises(UserError, match="differ in size"):
        next(stream)
    assert list(matcher.match_many([])) == []
