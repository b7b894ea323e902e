"""Tests for stereodeploy.data.io: atomic writes, image reading, PFM / KITTI round trips, colour maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stereodeploy.data.io import (
    ERROR_ORANGE,
    ERROR_RED,
    atomic_write,
    colorbar,
    colorize,
    colorize_with_bar,
    ensure_writable,
    error_legend,
    error_map,
    error_map_with_legend,
    kitti_encode,
    nice_ticks,
    read_disp,
    read_image,
    read_kitti_disp,
    read_pfm,
    read_png_text,
    with_legend,
    write_kitti_disp,
    write_pfm,
    write_png,
)
from stereodeploy.data.preprocess import to_gray
from stereodeploy.errors import UsageError, UserError


def _siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------------- atomic


def test_atomic_write_renames_temp_file_with_same_suffix(tmp_path: Path) -> None:
    target = tmp_path / "out.png"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.suffix == ".png" and tmp.name.startswith(".out.tmp-")
        assert not target.exists()
        tmp.write_bytes(b"payload")
    assert target.read_bytes() == b"payload"
    assert _siblings(tmp_path) == ["out.png"]


def test_atomic_write_removes_temp_and_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target, overwrite=True) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert _siblings(tmp_path) == ["model.onnx"]


def test_atomic_write_refuses_existing_file_unless_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("keep")
    with pytest.raises(UsageError, match=r"a\.txt exists: pass --overwrite to replace it") as info, atomic_write(target):
        pytest.fail("must not yield")
    assert info.value.exit_code == 2
    assert target.read_text() == "keep"
    with atomic_write(target, overwrite=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_write_creates_missing_folders(tmp_path: Path) -> None:
    target = tmp_path / "runs" / "x" / "disp.pfm"
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"1")
    assert target.read_bytes() == b"1"


def test_unwritable_folder_is_a_user_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match=r"cannot create folder .*file.*is a file"):
        ensure_writable(blocker / "out.png")
    with pytest.raises(UserError, match="is a folder"):
        ensure_writable(tmp_path)


def test_ensure_writable_checks_without_creating(tmp_path: Path) -> None:
    target = tmp_path / "new" / "out.png"
    assert ensure_writable(target) == target
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------------------------------------------- images


def _rgb(h: int = 5, w: int = 7) -> np.ndarray:
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


def test_read_image_rgb_and_gray_as_stored(tmp_path: Path) -> None:
    Image.fromarray(_rgb()).save(tmp_path / "c.png")
    gray = np.arange(35, dtype=np.uint8).reshape(5, 7)
    Image.fromarray(gray).save(tmp_path / "g.png")
    rgb = read_image(tmp_path / "c.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (5, 7, 3)
    np.testing.assert_array_equal(rgb, _rgb())
    np.testing.assert_array_equal(read_image(tmp_path / "g.png"), gray)


def test_read_image_keeps_16_bit_grayscale(tmp_path: Path) -> None:
    raw = np.array([[0, 1, 256], [1000, 40000, 65535]], dtype=np.uint16)
    write_png(tmp_path / "d.png", raw)
    img = read_image(tmp_path / "d.png")
    assert img.dtype == np.uint16
    np.testing.assert_array_equal(img, raw)


def test_read_image_alpha_palette_and_la(tmp_path: Path) -> None:
    rgba = np.dstack([_rgb(), np.full((5, 7), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    np.testing.assert_array_equal(read_image(tmp_path / "opaque.png"), _rgb())

    rgba[2, 3, 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "transparent.png")
    with pytest.raises(UserError, match=r"transparent\.png: image has transparent pixels"):
        read_image(tmp_path / "transparent.png")

    pal = Image.new("P", (3, 2))
    pal.putpalette([0, 0, 0, 200, 10, 30] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "pal.png")
    img = read_image(tmp_path / "pal.png")
    assert img.shape == (2, 3, 3)
    assert tuple(img[0, 1]) == (200, 10, 30) and tuple(img[0, 0]) == (0, 0, 0)

    la = np.dstack([np.full((2, 2), 77, np.uint8), np.full((2, 2), 255, np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert img.shape == (2, 2) and (img == 77).all()


def test_read_image_user_errors_name_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing\.png: image not found; check the path"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"empty\.png: empty file"):
        read_image(tmp_path / "empty.png")
    (tmp_path / "notes.png").write_text("hello, not an image\n")
    with pytest.raises(UserError, match=r"notes\.png: not an image file"):
        read_image(tmp_path / "notes.png")
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.png: truncated or corrupt image .*re-download") as info:
        read_image(tmp_path / "cut.png")
    assert "\n" not in str(info.value)


def test_to_gray_uses_bt601_weights_and_scales_16_bit() -> None:
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 10, 10]]], dtype=np.uint8)
    gray = to_gray(rgb)
    assert gray.dtype == np.float32 and gray.shape == (1, 4)
    np.testing.assert_allclose(gray, [[76.245, 149.685, 29.07, 10.0]], rtol=1e-5)
    g16 = to_gray(np.array([[0, 65535, 257]], dtype=np.uint16))
    np.testing.assert_allclose(g16, [[0.0, 255.0, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(to_gray(np.array([[3, 200]], np.uint8)), [[3.0, 200.0]])
    with pytest.raises(ValueError, match="shape"):
        to_gray(np.zeros((2, 2, 4), np.uint8))


# ---------------------------------------------------------------------------------------------------- PFM


def test_pfm_round_trip_keeps_values_and_nan(tmp_path: Path) -> None:
    disp = np.arange(12, dtype=np.float32).reshape(3, 4) * 1.25
    disp[1, 2] = np.nan
    write_pfm(tmp_path / "d.pfm", disp)
    back = read_pfm(tmp_path / "d.pfm")
    assert back.dtype == np.float32 and back.shape == (3, 4)
    np.testing.assert_array_equal(back, disp)  # NaN positions compare equal


def test_pfm_file_layout_is_little_endian_bottom_up_with_inf(tmp_path: Path) -> None:
    disp = np.array([[1.0, 2.0], [3.0, np.nan]], dtype=np.float32)
    write_pfm(tmp_path / "d.pfm", disp)
    data = (tmp_path / "d.pfm").read_bytes()
    header = b"Pf\n2 2\n-1.0\n"
    assert data.startswith(header)
    body = np.frombuffer(data[len(header) :], "<f4")
    np.testing.assert_array_equal(body, [3.0, np.inf, 1.0, 2.0])  # bottom row first, NaN stored as inf


def test_pfm_stores_every_non_finite_value_as_inf_and_keeps_zero(tmp_path: Path) -> None:
    disp = np.array([[0.0, -np.inf, np.inf, np.nan, 7.5]], dtype=np.float32)
    write_pfm(tmp_path / "d.pfm", disp)
    body = np.frombuffer((tmp_path / "d.pfm").read_bytes()[len(b"Pf\n5 1\n-1.0\n"):], "<f4")
    np.testing.assert_array_equal(body, [0.0, np.inf, np.inf, np.inf, 7.5])  # Middlebury: inf = unknown, 0 is 0
    np.testing.assert_array_equal(read_pfm(tmp_path / "d.pfm"), [[0.0, np.nan, np.nan, np.nan, 7.5]])


def test_read_pfm_big_endian_and_colour(tmp_path: Path) -> None:
    rows_bottom_up = np.array([[5.0, 6.0, np.inf], [1.0, 2.0, 3.0]], dtype=">f4")
    (tmp_path / "be.pfm").write_bytes(b"Pf\n3 2\n1.0\n" + rows_bottom_up.tobytes())
    disp = read_pfm(tmp_path / "be.pfm")
    assert disp.dtype == np.float32 and disp.dtype.isnative
    np.testing.assert_array_equal(disp, [[1.0, 2.0, 3.0], [5.0, 6.0, np.nan]])

    colour = np.zeros((2, 1, 3), dtype="<f4")
    colour[:, 0, 0] = [7.0, 8.0]  # bottom, top
    colour[:, 0, 1:] = 99.0
    (tmp_path / "c.pfm").write_bytes(b"PF\n1 2\n-1.0\n" + colour.tobytes())
    np.testing.assert_array_equal(read_pfm(tmp_path / "c.pfm"), [[8.0], [7.0]])


def test_read_pfm_errors(tmp_path: Path) -> None:
    (tmp_path / "x.pfm").write_bytes(b"P6\n2 2\n255\n" + bytes(12))
    with pytest.raises(UserError, match=r"x\.pfm: not a PFM file"):
        read_pfm(tmp_path / "x.pfm")
    (tmp_path / "short.pfm").write_bytes(b"Pf\n4 4\n-1.0\n" + bytes(20))
    with pytest.raises(UserError, match=r"short\.pfm: truncated PFM \(20 data bytes, 64 expected for 4x4\)"):
        read_pfm(tmp_path / "short.pfm")
    with pytest.raises(UserError, match="not found"):
        read_pfm(tmp_path / "none.pfm")
    write_pfm(tmp_path / "d.pfm", np.zeros((2, 2)))
    with pytest.raises(UsageError, match="exists: pass --overwrite"):
        write_pfm(tmp_path / "d.pfm", np.ones((2, 2)))


# ---------------------------------------------------------------------------------------------------- KITTI


def test_kitti_round_trip_quantises_to_1_256(tmp_path: Path) -> None:
    disp = np.array([[0.0, 1.0, 12.34], [np.nan, -3.0, 300.0], [0.001, 100.5, 255.99]], dtype=np.float32)
    write_kitti_disp(tmp_path / "d.png", disp)
    raw = read_image(tmp_path / "d.png")
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, [[0, 256, 3159], [0, 0, 65535], [1, 25728, 65533]])
    back = read_kitti_disp(tmp_path / "d.png")
    assert back.dtype == np.float32
    expected = raw.astype(np.float32) / 256
    expected[raw == 0] = np.nan
    np.testing.assert_array_equal(back, expected)
    known = np.isfinite(disp) & (disp > 1 / 256) & (disp < 255.9)  # inside the encodable range
    assert np.max(np.abs(back[known] - disp[known])) <= 0.5 / 256 + 1e-6


def test_kitti_encode_unknown_codes() -> None:
    np.testing.assert_array_equal(kitti_encode(np.array([np.nan, np.inf, -1.0, 0.0, 1e-9])), [0, 0, 0, 0, 1])


def test_read_kitti_disp_refuses_8_bit(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((2, 3), np.uint8)).save(tmp_path / "img.png")
    with pytest.raises(UserError, match=r"img\.png: not a KITTI disparity map \(got uint8 2x3"):
        read_kitti_disp(tmp_path / "img.png")


def test_read_disp_reads_both_formats_and_refuses_others(tmp_path: Path) -> None:
    disp = np.array([[1.5, np.nan]], dtype=np.float32)
    write_pfm(tmp_path / "a.pfm", disp)
    write_kitti_disp(tmp_path / "a.png", disp)
    for name in ("a.pfm", "a.png"):
        np.testing.assert_array_equal(read_disp(tmp_path / name), disp)
    with pytest.raises(UserError, match=r"unknown disparity format \.npy"):
        read_disp(tmp_path / "a.npy")


# ---------------------------------------------------------------------------------------------------- pictures


def test_colorize_range_nan_and_order() -> None:
    disp = np.array([[0.0, 5.0, 10.0, np.nan, 20.0]], dtype=np.float32)
    img = colorize(disp, max_disp=10)
    assert img.dtype == np.uint8 and img.shape == (1, 5, 3)
    assert tuple(img[0, 0]) == (120, 60, 175)  # first anchor
    assert tuple(img[0, 2]) == (190, 25, 20)  # last anchor
    assert tuple(img[0, 4]) == tuple(img[0, 2])  # clipped at max_disp
    assert tuple(img[0, 3]) == (0, 0, 0)
    ramp = colorize(np.linspace(0, 1, 256, dtype=np.float32)[None])
    assert len({tuple(c) for c in ramp[0]}) > 200  # a real colour ramp, no big flat runs
    assert (ramp[0].sum(axis=1) > 0).all()  # black only for NaN
    luma = ramp[0].astype(float) @ [0.299, 0.587, 0.114]
    assert luma.min() >= 70  # disparity ~0 does not read as "no answer" (issue 19: the low end was nearly black)
    assert (colorize(np.full((2, 2), np.nan)) == 0).all()


def test_error_map_colours() -> None:
    gt = np.array([[10.0, 10.0, 10.0, 10.0, np.nan, 10.0]], dtype=np.float32)
    disp = np.array([[10.0, 11.0, 14.0, 25.0, 3.0, np.nan]], dtype=np.float32)
    img = error_map(disp, gt, threshold=3.0)
    exact, small, orange, red, no_gt, missing = (tuple(int(v) for v in img[0, i]) for i in range(6))
    assert exact[2] > exact[0] and exact[2] > exact[1]  # blue for exact
    assert small[1] > small[0]  # still a "good" colour below the threshold
    assert orange == ERROR_ORANGE  # err 4: between threshold and twice it
    assert red == ERROR_RED
    assert no_gt == (0, 0, 0)
    assert missing == ERROR_RED


def test_error_map_threshold_boundaries_and_shape_check() -> None:
    gt = np.zeros((1, 4), np.float32)
    img = error_map(np.array([[2.99, 3.0, 5.99, 6.0]], np.float32), gt, threshold=3.0)
    assert tuple(img[0, 0]) not in (ERROR_ORANGE, ERROR_RED)
    assert tuple(img[0, 1]) == ERROR_ORANGE and tuple(img[0, 2]) == ERROR_ORANGE
    assert tuple(img[0, 3]) == ERROR_RED
    with pytest.raises(UserError, match="disparity is 1x4 but ground truth is 2x2"):
        error_map(np.zeros((1, 4)), np.zeros((2, 2)))


def test_png_text_chunks_record_how_a_map_was_made(tmp_path: Path) -> None:
    disp = np.full((3, 4), 2.5, np.float32)
    meta = {"stereodeploy.sgm_preset": "kitti2015", "stereodeploy.model": "mccnn_fast_torch.onnx (ü)"}
    write_kitti_disp(tmp_path / "d.png", disp, text=meta)
    assert read_png_text(tmp_path / "d.png") == meta
    np.testing.assert_array_equal(read_kitti_disp(tmp_path / "d.png"), disp)  # pixels unchanged
    write_png(tmp_path / "plain.png", np.zeros((2, 2), np.uint8))
    assert read_png_text(tmp_path / "plain.png") == {}


def test_write_png_round_trip_and_refusal(tmp_path: Path) -> None:
    img = _rgb()
    write_png(tmp_path / "p.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), img)
    with pytest.raises(UsageError, match="exists"):
        write_png(tmp_path / "p.png", img)
    write_png(tmp_path / "p.png", img[..., 0], overwrite=True)
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), img[..., 0])
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "f.png", img.astype(np.float32))


# ---------------------------------------------------------------------------------------------------- legends


def test_nice_ticks_use_round_steps_within_the_range() -> None:
    assert nice_ticks(228, 12) == [0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220]
    assert nice_ticks(70, 4) == [0, 20, 40, 60]
    assert nice_ticks(10, 11) == list(range(11))
    assert nice_ticks(1, 3) == [0, 0.5, 1]
    assert nice_ticks(228, 2) == [0, 200]
    assert nice_ticks(0, 5) == [0]


def _ink_columns(strip: np.ndarray, row: int) -> list[int]:
    return [int(x) for x in np.flatnonzero((strip[row] == 0).all(axis=1))]


def test_colorbar_shows_exactly_colorize_colours_with_ticks_and_a_title() -> None:
    width, top = 300, 228
    strip = colorbar(width, top)
    assert strip.dtype == np.uint8 and strip.shape[1:] == (width, 3) and 25 <= strip.shape[0] <= 50
    # The bar: the row whose pixels are not background and not ink, spanning columns 4..295.
    bar_rows = [y for y in range(strip.shape[0]) if (strip[y, 4:width - 4] != 255).any(axis=1).all()
                and not (strip[y, 4:width - 4] == 0).all(axis=1).any()]
    assert len(bar_rows) == 10
    bar = strip[bar_rows[0], 4:width - 4]
    expected = colorize(np.linspace(0, top, width - 8, dtype=np.float32)[None], top)[0]
    np.testing.assert_array_equal(bar, expected)
    # Tick marks: black pixels right under the bar at the positions of round values.
    ticks = _ink_columns(strip, bar_rows[-1] + 1)
    assert ticks == [4 + round(v / top * (width - 9)) for v in nice_ticks(top, len(ticks))]
    assert len(ticks) >= 3
    # The title row holds text (black pixels) above the bar; nothing is drawn outside the strip's white.
    assert (strip[: bar_rows[0]] == 0).all(axis=2).sum() > 50
    colours = {tuple(c) for c in strip.reshape(-1, 3)}
    assert colours <= {tuple(c) for c in expected} | {(0, 0, 0), (255, 255, 255)}


def test_colorbar_title_shortens_on_narrow_pictures_but_keeps_the_range() -> None:
    wide, narrow = colorbar(600, 70), colorbar(90, 70)
    def ink(strip: np.ndarray) -> int:  # black pixels in the title rows
        return int((strip[:14] == 0).all(axis=2).sum())

    assert ink(narrow) < ink(wide)  # a shorter title
    assert colorbar(1, 10).shape[1] == 1  # degenerate widths still work
    with pytest.raises(ValueError, match="width"):
        colorbar(0, 10)


def test_colorize_with_bar_keeps_the_picture_and_appends_the_strip() -> None:
    disp = np.tile(np.linspace(0, 50, 120, dtype=np.float32), (20, 1))
    disp[0, 0] = np.nan
    out = colorize_with_bar(disp, 64)
    np.testing.assert_array_equal(out[:20], colorize(disp, 64))
    np.testing.assert_array_equal(out[20:], colorbar(120, 64))


def test_error_legend_has_every_colour_of_the_error_map_and_wraps_when_narrow() -> None:
    wide = error_legend(600, threshold=3.0)
    colours = {tuple(int(v) for v in c) for c in wide.reshape(-1, 3)}
    assert ERROR_ORANGE in colours and ERROR_RED in colours and (0, 0, 0) in colours
    errors = np.linspace(0.0, 2.9999, 2000, dtype=np.float32)[None]
    good = {tuple(int(v) for v in c) for c in error_map(errors, np.zeros_like(errors))[0]}
    ends = error_map(np.array([[0.0, 2.9999]], np.float32), np.zeros((1, 2), np.float32))[0]
    assert {tuple(int(v) for v in c) for c in ends} <= colours  # the ramp runs from "exact" to "just below 3"
    assert colours <= good | {ERROR_ORANGE, ERROR_RED, (0, 0, 0), (255, 255, 255)}  # no other colour
    narrow = error_legend(120, threshold=3.0)
    assert narrow.shape[0] > wide.shape[0]  # wrapped onto more lines, nothing cut at the right edge
    assert (narrow[:, -3:] == 255).all()


def test_error_map_with_legend_and_width_check() -> None:
    gt = np.full((8, 200), 10.0, np.float32)
    disp = gt + 4
    out = error_map_with_legend(disp, gt, 3.0)
    np.testing.assert_array_equal(out[:8], error_map(disp, gt, 3.0))
    np.testing.assert_array_equal(out[8:], error_legend(200, 3.0))
    with pytest.raises(ValueError, match="wide"):
        with_legend(np.zeros((4, 10, 3), np.uint8), error_legend(12))
