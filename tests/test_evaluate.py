"""The evaluation loop (stereodeploy.study.evaluate.evaluate), its table and JSON, and `stereodeploy evaluate`."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from stereodeploy.config import MatchConfig
from stereodeploy.data.datasets import StereoSample, synthetic_pair
from stereodeploy.data.io import (
    ERROR_ORANGE,
    ERROR_RED,
    error_legend,
    read_image,
    write_json,
    write_pfm,
    write_png,
)
from stereodeploy.engine.matcher import MatchResult
from stereodeploy.errors import UsageError, UserError
from stereodeploy.study.evaluate import (
    EvalResult,
    ImageResult,
    evaluate,
    postprocess_name,
    training_overlap,
    training_overlap_warning,
)
from stereodeploy.study.report import render_eval_table, text_table

TIMINGS = {"features": 0.25, "matching": 0.5, "total": 0.75}


class FakeMatcher:
    """Stands in for StereoMatcher: answers a prepared disparity per left image and records each call."""

    def __init__(self, answers: dict[int, np.ndarray], max_disp: int = 64, calls: list | None = None,
                 valid: dict[int, np.ndarray] | None = None):
        self.answers = answers
        self.valid = valid or {}
        self.config = MatchConfig(max_disp=max_disp)
        self.backend = SimpleNamespace(name="fake", device="cpu", path=Path("fake.onnx"),
                                       meta=SimpleNamespace(source_framework="torch"))
        self.calls = [] if calls is None else calls

    def with_max_disp(self, max_disp: int) -> FakeMatcher:
        return FakeMatcher(self.answers, max_disp, self.calls, self.valid)

    def match(self, left: np.ndarray, right: np.ndarray) -> MatchResult:
        self.calls.append(self.config.max_disp)
        disp = self.answers[id(left)]
        return MatchResult(disparity=disp, valid=self.valid.get(id(left), np.isfinite(disp)), confidence=None,
                           timings=dict(TIMINGS))


def _sample(name: str, gt: np.ndarray | None, max_disp: int | None = None) -> StereoSample:
    img = np.zeros((2, 40) if gt is None else gt.shape, dtype=np.uint8)
    return StereoSample(name, img, img.copy(), disp=gt, disp_occ=gt, max_disp=max_disp)


@pytest.fixture
def frames() -> tuple[list[StereoSample], FakeMatcher]:
    gt_a = np.array([[5.0, 5.0, 5.0, 5.0]] * 2, dtype=np.float32)  # 8 known pixels
    gt_a = np.pad(gt_a, ((0, 0), (0, 36)), constant_values=np.nan)  # 2 x 40, width leaves room for max_disp
    gt_b = gt_a.copy()
    gt_b[0, 0] = np.nan  # 7 known pixels
    pred_a = np.where(np.isfinite(gt_a), 5.0, np.nan).astype(np.float32)
    pred_a[0, :2] = 9.0  # 2 of 8 wrong: 25%
    pred_b = pred_a.copy()
    pred_b[:] = 5.0
    pred_b[1, 3] = np.nan  # 1 of 7 wrong: 100/7 %
    a = _sample("a", gt_a, max_disp=20)
    b = _sample("b", gt_b)
    c = _sample("c", None)
    matcher = FakeMatcher({id(a.left): pred_a, id(b.left): pred_b})
    return [a, c, b], matcher


def test_evaluate_scores_each_frame_and_averages_per_image(frames) -> None:
    samples, matcher = frames
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 frames without ground truth \(c\)"):
        result = evaluate(samples, matcher, progress=False)
    assert [i.name for i in result.images] == ["a", "b"]
    assert result.skipped == ["c"]
    assert result.images[0].error_rate == pytest.approx(25.0)
    assert result.images[1].error_rate == pytest.approx(100 / 7)
    assert result.average_error_rate == pytest.approx((25.0 + 100 / 7) / 2)  # equation 3, not 3/15 pooled
    assert result.images[0].density == pytest.approx(100 * 8 / 80)  # answered only where gt is known
    assert result.images[1].density == pytest.approx(100 * 79 / 80)  # answered everywhere but one pixel
    assert result.mean_seconds == pytest.approx(0.75)
    assert result.mean_stage_seconds() == pytest.approx(TIMINGS)
    assert (result.model, result.backend, result.postprocess) == ("fake.onnx", "fake", "none")


def test_evaluate_scores_the_valid_pixels_and_their_density(frames) -> None:
    """A matcher that filled 2 pixels of frame a (one of its two wrong ones and one right one): the valid rate
    is 1 wrong of the 6 valid known pixels, the density 78 of 80 pixels, the all-pixel rate unchanged."""
    samples, matcher = frames
    a = samples[0]
    valid = np.ones(a.disp.shape, dtype=bool)
    valid[0, 1] = valid[1, 2] = False  # pred 9 (wrong) at (0, 1); pred 5 (right) at (1, 2)
    answers = {id(a.left): np.where(np.isfinite(a.disp), matcher.answers[id(a.left)], 5.0).astype(np.float32)}
    result = evaluate([a], FakeMatcher(answers, valid={id(a.left): valid}), progress=False, warmup=False)
    image = result.images[0]
    assert image.error_rate == pytest.approx(25.0)
    assert image.metrics["error_rate_valid"] == pytest.approx(100 / 6)
    assert image.metrics["d1_occ_valid"] == pytest.approx(100 / 6)  # |9 - 5| = 4 > 3 and > 5 % of 5
    assert image.density == pytest.approx(100 * 78 / 80)
    assert result.averages()["error_rate_valid"] == pytest.approx(100 / 6)
    assert ">=3 valid" in render_eval_table(result, terminal=False)


def test_max_disp_option_then_hint_then_model_capped_at_width(frames) -> None:
    samples, matcher = frames
    result = evaluate(samples[:1], matcher, progress=False, warmup=False)  # a: hint 20
    assert [i.max_disp for i in result.images] == [20]
    matcher.calls.clear()
    result = evaluate([samples[2]], replace_matcher(matcher, 100), progress=False, warmup=False)  # b: no hint
    assert [i.max_disp for i in result.images] == [39]  # the model's 100, capped at width - 1
    matcher.calls.clear()
    result = evaluate([samples[0], samples[2]], matcher, max_disp=7, progress=False, warmup=False)
    assert [i.max_disp for i in result.images] == [7, 7]
    assert matcher.calls == [7, 7]


def replace_matcher(matcher: FakeMatcher, max_disp: int) -> FakeMatcher:
    return FakeMatcher(matcher.answers, max_disp, matcher.calls)


def test_warmup_runs_the_first_frame_once_more(frames) -> None:
    samples, matcher = frames
    evaluate([samples[0], samples[2]], matcher, progress=False, warmup=True)
    assert len(matcher.calls) == 3
    matcher.calls.clear()
    evaluate([samples[0], samples[2]], matcher, progress=False, warmup=False)
    assert len(matcher.calls) == 2


def test_error_maps_are_written_per_frame_and_never_replaced_silently(frames, tmp_path: Path) -> None:
    samples, matcher = frames
    with pytest.warns(UserWarning):
        evaluate(samples, matcher, error_maps=tmp_path / "maps", progress=False)
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == ["a_error.png", "b_error.png"]
    img = read_image(tmp_path / "maps" / "a_error.png")
    assert tuple(img[0, 0]) == ERROR_ORANGE  # error 4: at least 3, under 6
    assert tuple(img[0, 10]) == (0, 0, 0)  # no ground truth
    assert tuple(img[1, 0]) == (35, 60, 170)  # exact
    assert img.shape[0] > 2 and (img[2:] == 255).any()  # the legend strip under the 2-row map
    np.testing.assert_array_equal(img[2:], error_legend(40, 3.0))
    img = read_image(tmp_path / "maps" / "b_error.png")
    assert tuple(img[1, 3]) == ERROR_RED  # missing prediction where ground truth is known
    matcher.calls.clear()
    with pytest.raises(UsageError, match="exists"), pytest.warns(UserWarning):
        evaluate(samples, matcher, error_maps=tmp_path / "maps", progress=False)
    assert matcher.calls == []  # refused before any matching


def test_nothing_to_score_and_bad_max_disp(frames) -> None:
    samples, matcher = frames
    with pytest.raises(UserError, match="none of the 1 frames has ground truth"):
        evaluate([samples[1]], matcher, progress=False)
    with pytest.raises(UsageError, match="at least 1"):
        evaluate(samples, matcher, max_disp=0, progress=False)


def test_postprocess_name() -> None:
    m = SimpleNamespace(config=MatchConfig.preset("none", 10))
    assert postprocess_name(m) == "none"
    m.config = MatchConfig.preset("full", 10)
    assert postprocess_name(m) == "full"
    m.config = replace(MatchConfig(max_disp=10), sgm=True)
    assert postprocess_name(m) == "custom"


def test_json_and_table_carry_the_same_numbers(frames, tmp_path: Path) -> None:
    samples, matcher = frames
    with pytest.warns(UserWarning):
        result = evaluate(samples, matcher, progress=False)
    path = write_json(tmp_path / "r.json", result.to_dict())
    data = json.loads(path.read_text())
    for key in ("model", "backend", "postprocess", "images", "average_error_rate", "mean_seconds"):
        assert key in data
    assert data["images"][0]["name"] == "a"
    assert data["images"][0]["error_rate"] == pytest.approx(25.0)
    assert data["images"][0]["seconds"] == TIMINGS
    assert data["average_error_rate"] == pytest.approx(result.average_error_rate)
    assert data["skipped_without_ground_truth"] == ["c"]
    text = render_eval_table(result, terminal=False)
    assert "mean of 2" in text
    assert f"{result.average_error_rate:.2f}" in text and "25.00" in text and "14.29" in text


def test_training_overlap_names_the_trained_frames_in_evaluation_order(tmp_path: Path) -> None:
    trained = {"frames": ["Baby2", "000005_10", "Midd1"], "examples": 10}
    assert training_overlap(trained, ["Midd2", "Midd1", "Baby2", "Baby3"]) == ["Midd1", "Baby2"]
    assert training_overlap(trained, ["Midd2"]) == []
    assert training_overlap({}, ["Midd1"]) == []  # no records: nothing can be said
    # KITTI 2012 and 2015 share frame names: a known, different training layout means no overlap.
    assert training_overlap({**trained, "format": "kitti2015"}, ["000005_10"], "kitti2012") == []
    assert training_overlap({**trained, "format": "kitti2015"}, ["000005_10"], "kitti2015") == ["000005_10"]
    kitti = tmp_path / "k15" / "training"
    for sub in ("image_2", "image_3"):
        (kitti / sub).mkdir(parents=True)
    sources = {**trained, "sources": [str(tmp_path / "k15")]}  # layout read from the source folder
    assert training_overlap(sources, ["000005_10"], "kitti2012") == []
    assert training_overlap(sources, ["000005_10"], "kitti2015") == ["000005_10"]
    gone = {**trained, "sources": [str(tmp_path / "moved")]}  # a source that no longer exists: names decide
    assert training_overlap(gone, ["000005_10"], "kitti2012") == ["000005_10"]
    line = training_overlap_warning("m.onnx", ["a", "b", "c", "d", "e", "f"], 9)
    assert "\n" not in line and "6 of the 9" in line and "a, b, c, d, e, ..." in line


def test_evaluate_warns_and_records_frames_the_model_was_trained_on(frames) -> None:
    samples, matcher = frames
    matcher.backend.meta = SimpleNamespace(source_framework="torch", training_data={"frames": ["b", "x"]})
    with pytest.warns(UserWarning) as caught:
        result = evaluate(samples, matcher, progress=False)
    messages = [str(w.message) for w in caught]
    assert any("trained on 1 of the 2 evaluated frames (b)" in m for m in messages), messages
    assert result.trained_on == ["b"] and result.to_dict()["trained_on"] == ["b"]
    assert [i.name for i in result.images] == ["a", "b"]  # still scored
    matcher.backend.meta = SimpleNamespace(source_framework="torch")  # no records: no warning about training
    with pytest.warns(UserWarning) as caught:
        assert evaluate(samples, matcher, progress=False).trained_on == []
    assert not any("trained on" in str(w.message) for w in caught)


def _kitti_result(frames: int = 3) -> EvalResult:
    """A result with every KITTI column and numbers whose digits differ per cell (so a cut one shows)."""
    images = []
    for i in range(frames):
        metrics = {"error_rate": 12.3456 + i, "density": 99.51 - i, "study_noc": 12.3456 + i,
                   "kitti_noc": 11.1111 + i, "d1_noc": 10.5049 + i, "study_occ": 14.25 + i,
                   "kitti_occ": 13.875 + i, "d1_occ": 102.75 - i, "error_rate_valid": 9.8765 + i}
        images.append(ImageResult(name=f"0000{i}5_10", error_rate=metrics["error_rate"], density=metrics["density"],
                                  seconds={"features": 0.1234 + i, "matching": 12.5 + i, "total": 12.6234 + 2 * i},
                                  metrics=metrics, ground_truth="noc", max_disp=228, size=(1242, 375)))
    return EvalResult(model="models/mccnn_fast_torch.onnx", backend="onnx", postprocess="full", images=images)


def _cells_by_row(text: str, names: list[str]) -> dict[str, list[str]]:
    """Every cell printed after each row name, over all blocks of the table (cells are separated by 2+ spaces)."""
    import re

    cells: dict[str, list[str]] = {n: [] for n in names}
    for line in text.splitlines():
        for n in names:
            if line.startswith(n + " "):
                cells[n] += re.split(r"\s{2,}", line[len(n):].strip())
    return cells


@pytest.mark.parametrize("width", [60, 80, 120, None])
def test_eval_text_table_never_cuts_a_number(width: int | None) -> None:
    result = _kitti_result()
    text = render_eval_table(result, width=width, terminal=width is not None)
    lines = text.splitlines()
    if width is not None:
        assert max(map(len, lines)) <= width
    assert "…" not in text and "..." not in text
    names = [i.name for i in result.images] + ["mean of 3"]
    cells = _cells_by_row(text, names)
    for img in result.images:
        m = img.metrics
        expected = ["228", f"{img.error_rate:.2f}", f"{m['error_rate_valid']:.2f}", f"{m['kitti_noc']:.2f}", f"{m['d1_noc']:.2f}",
                    f"{m['kitti_occ']:.2f}", f"{m['d1_occ']:.2f}", f"{img.density:.1f}",
                    *(f"{img.seconds[k]:.3f}" for k in ("features", "matching", "total"))]
        assert cells[img.name] == expected
    assert cells["mean of 3"][0] == f"{result.average_error_rate:.2f}" and len(cells["mean of 3"]) == 10
    blocks = sum(1 for line in lines if line.startswith("frame "))
    assert blocks == (1 if width in (120, None) else 2)  # these 12 columns need 95 characters


def test_eval_text_table_is_plain_when_output_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")  # a narrow terminal size must not matter when stdout is a pipe
    text = render_eval_table(_kitti_result())  # pytest captures stdout: not a terminal
    assert sum(1 for line in text.splitlines() if line.startswith("frame ")) == 1
    assert text == render_eval_table(_kitti_result(), terminal=False)
    assert "\x1b" not in text  # no terminal escapes
    wrapped = render_eval_table(_kitti_result(), terminal=True)  # a terminal of COLUMNS=40 columns
    assert max(map(len, wrapped.splitlines())) <= 40


def test_text_table_blocks_repeat_the_key_column_and_check_rows() -> None:
    text = text_table(["name", "a", "b"], [["x", "1.25", "300.5"], ["yy", "2", "3"]], width=12,
                      footer=[["all", "3.25", "303.5"]])
    assert text.splitlines() == ["name     a", "----  ----", "x     1.25", "yy       2", "----  ----", "all   3.25",
                                 "", "name      b", "----  -----", "x     300.5", "yy        3", "----  -----",
                                 "all   303.5"]
    with pytest.raises(ValueError, match="one entry per header"):
        text_table(["a", "b"], [["1"]])


# ---------------------------------------------------------------------------------------------------- the command


def _middlebury(root: Path, n: int = 2) -> Path:
    """``n`` synthetic scenes in MiddEval3 layout (im0, im1, disp0GT.pfm, calib.txt with ndisp)."""
    for i in range(n):
        s = synthetic_pair(height=32, width=48, max_disp=8, layers=1, seed=i)
        scene = root / f"scene{i}"
        write_png(scene / "im0.png", s.left)
        write_png(scene / "im1.png", s.right)
        write_pfm(scene / "disp0GT.pfm", s.disp_occ)
        (scene / "calib.txt").write_text("width=48\nheight=32\nndisp=8\n")
    return root


def _tiny_onnx(path: Path) -> Path:
    """A feature model with the stereodeploy contract, built without any framework: one random 3x3 convolution
    (1 -> 4 maps, zero padding) and L2 normalisation over the channels."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from stereodeploy.config import NetworkConfig
    from stereodeploy.contract import INPUT_NAME, OUTPUT_NAME, ModelMeta, set_meta

    rng = np.random.default_rng(0)
    kernel = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "k")
    bias = numpy_helper.from_array(np.zeros(4, np.float32), "b")
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "k", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceL2", ["c"], ["n"], axes=[1], keepdims=1),
        helper.make_node("Div", ["c", "n"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 4, "H", "W"])], [kernel, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    set_meta(model, ModelMeta(network=NetworkConfig(layers=1, maps=4), source_framework="torch", max_disp=16))
    onnx.save_model(model, str(path))
    return path


def test_evaluate_command_writes_json_consistent_with_the_library(tmp_path: Path) -> None:
    from stereodeploy.cli.app import app
    from stereodeploy.data.datasets import load_dataset
    from stereodeploy.engine.matcher import StereoMatcher

    data = _middlebury(tmp_path / "data")
    model = _tiny_onnx(tmp_path / "m.onnx")
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", "--data", str(data), "--model", str(model), "--json",
                              str(tmp_path / "out.json"), "--error-maps", str(tmp_path / "maps"), "--no-progress"])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "out.json").read_text())
    assert [i["name"] for i in out["images"]] == ["scene0", "scene1"]
    assert [i["max_disp"] for i in out["images"]] == [8, 8]  # calib ndisp, not the model's 16
    assert out["backend"] == "onnx" and out["postprocess"] == "none" and out["format"] == "middlebury"
    assert set(out["images"][0]["seconds"]) >= {"features", "matching", "total"}
    assert (tmp_path / "maps" / "scene1_error.png").is_file()
    # the library on the same frames gives the same error rates (the matcher is deterministic)
    matcher = StereoMatcher.from_file(model, max_disp=8)
    again = evaluate(load_dataset(data), matcher, progress=False, warmup=False)
    assert [i.error_rate for i in again.images] == pytest.approx([i["error_rate"] for i in out["images"]])
    assert out["average_error_rate"] == pytest.approx(again.average_error_rate)
    assert f"{again.average_error_rate:.2f}" in res.output

    # user mistakes: one line, non-zero exit, nothing overwritten
    res = runner.invoke(app, ["evaluate", "--data", str(data), "--model", str(model), "--json",
                              str(tmp_path / "out.json"), "--no-progress"])
    assert res.exit_code == 2 and "pass --overwrite" in res.output
    res = runner.invoke(app, ["evaluate", "--data", str(data), "--model", str(model), "--frame", "nope",
                              "--no-progress"])
    assert res.exit_code == 1 and "frame(s) nope not found" in res.output


def test_evaluate_threads_option_is_applied_and_recorded(tmp_path: Path, monkeypatch) -> None:
    import numba

    from stereodeploy.cli.app import app

    for key in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "NUMBA_NUM_THREADS"):
        monkeypatch.setenv(key, "2")  # restored after the test, whatever the command sets
    before = numba.get_num_threads()
    data = _middlebury(tmp_path / "data")
    model = _tiny_onnx(tmp_path / "m.onnx")
    try:
        res = CliRunner().invoke(app, ["evaluate", "--data", str(data), "--model", str(model), "--json",
                                       str(tmp_path / "out.json"), "--no-progress", "--threads", "1"])
        assert res.exit_code == 0, res.output
        assert numba.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        numba.set_num_threads(before)
    recorded = json.loads((tmp_path / "out.json").read_text())["threads"]
    assert recorded["threads"] == 1 and recorded["source"] == "option"
