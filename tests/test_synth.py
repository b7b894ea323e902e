"""Stereo pairs from single images (stereodeploy.data.synth): exact warps, occlusion order, determinism, layout."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from stereodeploy.data.datasets import load_dataset
from stereodeploy.data.synth import SynthConfig, forward_warp, synth_pair, synth_samples, write_scene
from stereodeploy.errors import UserError


def _photos(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    """Textured RGB 'photos' with distinct content (random blocks with smooth shading)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)
        img = np.kron(small, np.ones((8, 8, 1), np.uint8)).astype(np.int16)
        img += rng.integers(-20, 21, img.shape).astype(np.int16)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


EXACT = SynthConfig(width=160, height=120, max_disp=24, segments=12, layers=2, integer=True, realism=False)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_right_view_reproduces_left_where_not_occluded(seed):
    """Before the realism step, with integer disparities: right[y, x - d] == left[y, x] at every non-occluded
    pixel, and the occluded pixels are a minority."""
    photos = _photos()
    s = synth_pair(photos[0], photos[1:], EXACT, seed=seed)
    ys, xs = np.nonzero(np.isfinite(s.disp))
    d = s.disp[ys, xs].astype(int)
    assert np.array_equal(s.disp[ys, xs], d)  # whole pixels
    assert np.array_equal(s.right[ys, xs - d], s.left[ys, xs])
    assert 0.5 < len(ys) / s.disp.size < 1.0  # some occlusion, mostly visible
    # the full map is known everywhere; the non-occluded one is a subset of it
    assert np.all(np.isfinite(s.disp_occ))
    assert np.array_equal(s.disp_occ[ys, xs], s.disp[ys, xs])


def test_occlusion_nearer_surface_wins():
    """Two surfaces on a row: a far one (d=2) everywhere and a near one (d=6) on x 10..14. The near surface shows
    at its own place in the right view; the far pixels it covers are marked not visible, the others are."""
    h, w = 1, 30
    left = np.arange(w, dtype=np.float64)[None, :, None].repeat(3, axis=2) * 5.0
    disp = np.full((h, w), 2.0)
    surface = np.zeros((h, w), np.int64)
    disp[0, 10:15] = 6.0
    surface[0, 10:15] = 1
    warp = forward_warp(left, disp, surface)
    # the near surface lands at 4..8 with its own values
    assert np.array_equal(warp.right[0, 4:9, 0], left[0, 10:15, 0])
    assert np.all(warp.right_surface[0, 4:9] == 1)
    # far pixels 6..10 would land on 4..8 too: hidden behind the near surface
    assert not warp.visible[0, 6:10].any()
    assert warp.visible[0, 10:15].all()
    assert warp.visible[0, 2:6].all() and warp.visible[0, 15:].all()
    # far pixels 0, 1 leave the image; right pixels 9..12 are disoccluded (far pixels 11..14 hide behind the near)
    assert not warp.visible[0, :2].any()
    assert np.isnan(warp.right[0, 9:13, 0]).all() and (warp.right_surface[0, 9:13] == -1).all()


def test_slanted_plane_stretches_without_holes():
    """A plane d = 2 + 0.2 x: the right view is the left one resampled linearly, with no hole inside."""
    w = 40
    xs = np.arange(w, dtype=np.float64)
    left = (xs * 3.0)[None, :, None].repeat(3, axis=2)
    disp = (2.0 + 0.2 * xs)[None, :]
    warp = forward_warp(left, disp, np.zeros((1, w), np.int64))
    filled = ~np.isnan(warp.right[0, :, 0])
    first, last = np.argmax(filled), w - 1 - np.argmax(filled[::-1])
    assert filled[first : last + 1].all()
    # right pixel xr shows left position u with u - (2 + 0.2 u) = xr, i.e. u = (xr + 2) / 0.8; value 3 u
    # (up to where the last left pixel lands; beyond it the surface's end is one pixel at its own value)
    end = int(np.floor(w - 1 - disp[0, -1]))
    xr = np.arange(first, end + 1)
    np.testing.assert_allclose(warp.right[0, first : end + 1, 0], 3.0 * (xr + 2) / 0.8, atol=1e-9)
    np.testing.assert_allclose(warp.right_disp[0, first : end + 1], 2.0 + 0.2 * (xr + 2) / 0.8, atol=1e-9)
    assert last == end + 1 and warp.right[0, last, 0] == left[0, -1, 0]


def test_deterministic_by_seed_and_different_across_seeds():
    photos = _photos()
    cfg = SynthConfig(width=128, height=96, max_disp=20, segments=8, layers=2)
    a = synth_pair(photos[0], photos[1:], cfg, seed=5)
    b = synth_pair(photos[0], photos[1:], cfg, seed=5)
    c = synth_pair(photos[0], photos[1:], cfg, seed=6)
    for x, y in ((a.left, b.left), (a.right, b.right)):
        assert np.array_equal(x, y)
    np.testing.assert_array_equal(a.disp_occ, b.disp_occ)
    assert not np.array_equal(a.disp_occ, c.disp_occ)
    assert 0 <= np.nanmin(a.disp_occ) and np.nanmax(a.disp_occ) < cfg.max_disp


def test_realism_changes_the_views_but_not_the_ground_truth():
    photos = _photos()
    plain = synth_pair(photos[0], photos[1:], EXACT, seed=3)
    real = synth_pair(photos[0], photos[1:], EXACT.__class__(**{**EXACT.__dict__, "realism": True}), seed=3)
    np.testing.assert_array_equal(plain.disp_occ, real.disp_occ)
    assert not np.array_equal(plain.right, real.right)
    # the two views differ photometrically, yet the matched pixels stay strongly correlated
    ys, xs = np.nonzero(np.isfinite(real.disp))
    d = real.disp[ys, xs].astype(int)
    r = np.corrcoef(real.left[ys, xs].astype(float).ravel(), real.right[ys, xs - d].astype(float).ravel())[0, 1]
    assert r > 0.8


def test_layout_reads_back(tmp_path):
    photos = _photos()
    samples = synth_samples(photos, 2, SynthConfig(width=96, height=64, max_disp=16, segments=6, layers=1), seed=1)
    for s in samples:
        write_scene(s, tmp_path / s.name)
    back = load_dataset(tmp_path)
    assert [b.name for b in back] == [s.name for s in samples]
    for s, b in zip(samples, back):
        assert np.array_equal(b.left, s.left) and np.array_equal(b.right, s.right)
        np.testing.assert_array_equal(b.disp_occ, s.disp_occ)
        np.testing.assert_array_equal(b.disp, s.disp)  # non-occluded map rebuilt from mask0nocc.png
        assert b.max_disp == s.max_disp


def test_usable_as_training_source():
    from stereodeploy.config import SamplerConfig
    from stereodeploy.train.api import build_index

    samples = synth_samples(_photos(), 2, SynthConfig(width=96, height=64, max_disp=16, segments=6, layers=1))
    index, summary = build_index(samples, 9, SamplerConfig())
    assert summary["frames"] == ["synth_0000", "synth_0001"] and len(index) > 1000


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="max-disp"):
        SynthConfig(width=64, height=64, max_disp=40)
    from stereodeploy.data.synth import list_images

    with pytest.raises(UserError, match="no image files"):
        list_images([tmp_path])


def test_cli_synth_then_train(tmp_path):
    from PIL import Image

    from stereodeploy.cli.app import app

    for i, p in enumerate(_photos(2)):
        Image.fromarray(p).save(tmp_path / f"photo{i}.jpg")
    runner = CliRunner()
    res = runner.invoke(app, ["synth", str(tmp_path), "--out", str(tmp_path / "pairs"), "--count", "2", "--size",
                              "96x64", "--max-disp", "16"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == ["synth_0000", "synth_0001"]
    assert len(load_dataset(tmp_path / "pairs")) == 2
    res = runner.invoke(app, ["synth", str(tmp_path / "photo0.jpg"), "--out", str(tmp_path / "p2"), "--size", "96"])
    assert res.exit_code == 2 and "WIDTHxHEIGHT" in res.output
    pytest.importorskip("torch")
    # the command the success message suggests
    res = runner.invoke(app, ["train", "torch", "--data", str(tmp_path / "pairs"), "--out", str(tmp_path / "run"),
                              "--epochs", "1", "--max-examples", "256", "--no-progress"])
    assert res.exit_code == 0, res.output
