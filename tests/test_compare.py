"""stereodeploy.study.compare and its report: requirements, Table I arithmetic, markdown, and the experiment end to end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.data.io import read_image, write_pfm, write_png
from stereodeploy.errors import UsageError, UserError
from stereodeploy.study import compare as compare_mod
from stereodeploy.study.report import fmt, markdown, percent_difference, training_table


def _middlebury(root: Path, n: int = 3, height: int = 40, width: int = 64, max_disp: int = 12) -> Path:
    """``n`` synthetic scenes in MiddEval3 layout (im0, im1, disp0GT.pfm, calib.txt with ndisp)."""
    for i in range(n):
        s = synthetic_pair(height=height, width=width, max_disp=max_disp, layers=2, seed=i)
        scene = root / f"scene{i}"
        write_png(scene / "im0.png", s.left)
        write_png(scene / "im1.png", s.right)
        write_pfm(scene / "disp0GT.pfm", s.disp_occ)
        (scene / "calib.txt").write_text(f"width={width}\nheight={height}\nndisp={max_disp}\n")
    return root


# ---------------------------------------------------------------------------------------------------- requirements


def test_missing_framework_names_the_extra_and_nothing_is_written(monkeypatch, tmp_path: Path) -> None:
    from stereodeploy import frameworks

    monkeypatch.setattr(frameworks, "_installed", lambda name: name != "tf2onnx")  # all else "installed"
    expected = r"compare \(it trains and exports TensorFlow\) needs tf2onnx.*: pip install 'stereodeploy\[tf\]'"
    with pytest.raises(UserError, match=expected):
        compare_mod.compare(_middlebury(tmp_path / "d", n=1), tmp_path / "d", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(frameworks, "_installed", lambda name: name != "torch")
    with pytest.raises(UserError, match=r"needs PyTorch \(torch\).*pip install 'stereodeploy\[torch\]'"):
        compare_mod.check_requirements()


def test_bad_settings_are_refused_before_training(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(compare_mod, "check_requirements", lambda *a: None)
    data = _middlebury(tmp_path / "d", n=2)
    with pytest.raises(UsageError, match="--epochs must be at least 1"):
        compare_mod.compare(data, data, tmp_path / "out", epochs=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        compare_mod.compare(data, data, tmp_path / "full")
    with pytest.raises(UserError, match=r"held-out frame\(s\) sceneX are not in"):
        compare_mod.compare(data, data, tmp_path / "out", hold_out=["sceneX"])
    with pytest.raises(UserError, match="no training frame is left"):
        compare_mod.compare(data, data, tmp_path / "out", hold_out=["scene0", "scene1"])


# ---------------------------------------------------------------------------------------------------- tables


def test_table_one_difference_is_relative_to_pytorch() -> None:
    summaries = {
        "torch": {"total_seconds": 10.0, "mean_epoch_seconds": 5.0, "mean_step_seconds": 0.002},
        "tf": {"total_seconds": 12.0, "mean_epoch_seconds": 4.0, "mean_step_seconds": 0.002},
    }
    t = training_table(summaries)
    assert [r["framework"] for r in t["rows"]] == ["PyTorch", "TensorFlow"]
    assert t["difference_percent"] == pytest.approx(
        {"total_seconds": 20.0, "mean_epoch_seconds": -20.0, "mean_step_seconds": 0.0})
    assert "T_PyTorch" in t["difference_formula"]
    assert percent_difference(1.0, 0.0) is None and percent_difference(None, 1.0) is None


def test_markdown_renders_the_numbers() -> None:
    report = {
        "title": "T", "table1": training_table({"torch": {"total_seconds": 10.0, "mean_epoch_seconds": 5.0,
                                                           "mean_step_seconds": 0.0021},
                                                 "tf": {"total_seconds": 12.5, "mean_epoch_seconds": 6.25,
                                                        "mean_step_seconds": 0.0042}}),
        "table2": {"single_image": "scene0", "images": 2, "rows": [
            {"runtime": "PyTorch", "postprocess": "none", "single_image_error": 12.345,
             "average_error_rate": 20.0, "kitti_average": None, "d1_average": 1.0, "density": 100.0}]},
        "execution_time": {"images": 2, "rows": [
            {"runtime": "PyTorch", "postprocess": "none", "mean_seconds": 0.1234,
             "features_seconds": 0.1, "matching_seconds": 0.0234}]},
        "machine": {"cpu_count": 2},
    }
    md = markdown(report)
    assert "| PyTorch | 10.00 | 5.000 | 2.100 |" in md
    assert "| TensorFlow | 12.50 | 6.250 | 4.200 |" in md
    assert "| Difference (%) | +25.0 | +25.0 | +100.0 |" in md
    assert "| PyTorch | none | 12.35 | 20.00 | n/a | 1.00 | 100.0 |" in md
    assert "| PyTorch | none | 0.123 | 0.100 | 0.023 |" in md
    assert "- cpu_count: 2" in md


# ---------------------------------------------------------------------------------------------------- end to end


def _cells(md: str, prefix: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(prefix))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.slow
def test_compare_end_to_end_on_tiny_synthetic_data(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from typer.testing import CliRunner

    from stereodeploy.cli.app import app

    data = _middlebury(tmp_path / "data", n=3)
    out = tmp_path / "report"
    res = CliRunner().invoke(app, [
        "compare", "--train-data", str(data), "--eval-data", str(data), "--out", str(out), "--hold-out", "scene2",
        "--hold-out", "scene1", "--epochs", "2", "--lr-drop", "1", "--max-examples", "256", "--batch-size", "64",
        "--layers", "2", "--maps", "8", "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()

    # structure: runs, models, figures; training on scene0 only, evaluation on the held-out scenes
    for rel in ("runs/torch/summary.json", "runs/tf/summary.json", "models/mccnn_fast_torch.onnx",
                "models/mccnn_fast_tf.onnx"):
        assert (out / rel).is_file(), rel
    for name in report["figures"].values():
        assert read_image(out / name).ndim == 3
    assert report["data"]["train_frames"] == ["scene0"]
    assert report["data"]["eval_frames"] == ["scene1", "scene2"] and report["data"]["overlap"] == []
    assert report["configuration"]["network"] == {"layers": 2, "maps": 8, "kernel": 3}
    assert {"platform", "cpu_count", "processor"} <= set(report["machine"])
    assert {"python", "numpy", "torch", "tensorflow", "onnxruntime", "stereodeploy"} <= set(report["versions"])
    assert [len(report["epochs"][fw]) for fw in ("torch", "tf")] == [2, 2]

    # Table I in the markdown is the JSON's, and the difference follows the stated formula
    t1 = {r["key"]: r for r in report["table1"]["rows"]}
    for key, name in (("torch", "PyTorch"), ("tf", "TensorFlow")):
        cells = _cells(md, f"| {name} |")
        assert cells[1:4] == [fmt(t1[key]["total_seconds"], 2), fmt(t1[key]["mean_epoch_seconds"], 3),
                              fmt(1000 * t1[key]["mean_step_seconds"], 3)]
    diff = report["table1"]["difference_percent"]["total_seconds"]
    assert diff == pytest.approx(100 * (t1["tf"]["total_seconds"] - t1["torch"]["total_seconds"])
                                 / t1["torch"]["total_seconds"])
    assert _cells(md, "| Difference (%) |")[1] == f"{diff:+.1f}"

    # Table II: every runtime x post-processing; numbers match the per-image evaluations and the markdown
    rows = report["table2"]["rows"]
    assert [(r["runtime"], r["postprocess"]) for r in rows] == [
        (rt, pp) for rt in ("PyTorch", "TensorFlow", "ONNX (PyTorch)", "ONNX (TensorFlow)") for pp in ("none", "full")]
    assert report["table2"]["single_image"] == "scene1"
    evals = {(e["runtime"], e["postprocess"]): e for e in report["evaluations"]}
    times = {(r["runtime"], r["postprocess"]): r for r in report["execution_time"]["rows"]}
    for r in rows:
        key = (r["runtime"], r["postprocess"])
        e = evals[key]
        assert r["single_image_error"] == pytest.approx(e["images"][0]["error_rate"])
        assert r["average_error_rate"] == pytest.approx(np.mean([i["error_rate"] for i in e["images"]]))
        assert times[key]["mean_seconds"] == pytest.approx(np.mean([i["seconds"]["total"] for i in e["images"]]))
        table2_line = [ln for ln in md.split("## Table II")[1].split("## ")[0].splitlines()
                       if ln.startswith(f"| {r['runtime']} | {r['postprocess']} |")]
        assert _cells(table2_line[0], "|")[2:4] == [fmt(r["single_image_error"]), fmt(r["average_error_rate"])]
        time_line = [ln for ln in md.split("## Execution time")[1].split("## ")[0].splitlines()
                     if ln.startswith(f"| {r['runtime']} | {r['postprocess']} |")]
        assert _cells(time_line[0], "|")[2] == fmt(times[key]["mean_seconds"], 3)
        assert [i["max_disp"] for i in e["images"]] == [12, 12]  # calib ndisp
    # ONNX runs the very weights of its framework: the same disparities, to a few tie pixels
    for r in rows:
        if r["runtime"].startswith("ONNX"):
            assert r["single_image_differs_from_native_percent"] < 1.0
    assert re.search(r"Difference = 100 × \(T_TensorFlow − T_PyTorch\) / T_PyTorch", md)


def test_comparison_text_wraps_on_a_terminal_and_never_cuts_a_number() -> None:
    from stereodeploy.study.report import comparison_text

    report = {
        "table1": training_table({"torch": {"total_seconds": 1234.5678, "mean_epoch_seconds": 88.123456,
                                            "mean_step_seconds": 0.0213},
                                  "tf": {"total_seconds": 2000.0, "mean_epoch_seconds": 100.0,
                                         "mean_step_seconds": 0.03}}),
        "table2": {"single_image": "000005_10", "rows": [
            {"runtime": "ONNX (TensorFlow)", "postprocess": "full", "single_image_error": 42.123,
             "average_error_rate": 17.5}]},
        "execution_time": {"rows": [{"runtime": "ONNX (TensorFlow)", "postprocess": "full", "mean_seconds": 1.2345}]},
    }
    for width, terminal in ((None, False), (50, True), (120, True)):
        text = comparison_text(report, width=width, terminal=terminal)
        for number in ("1234.57", "88.123", "21.300", "+62.0", "42.12", "17.50", "1.234", "ONNX (TensorFlow)"):
            assert number in text, (width, number)
        if terminal:
            assert max(len(line) for line in text.splitlines()) <= width


def test_busy_phases_get_one_warning_that_says_what_the_threads_were() -> None:
    load = compare_mod.PhaseLoad(cores=2)
    assert load.warnings("threads 2") == []
    load.record("PyTorch training", 1.9)  # its own two threads: fine
    for phase in ("TensorFlow training", "PyTorch none evaluation", "PyTorch full evaluation"):
        load.record(phase, 3.4)  # something else ran too
    [warning] = load.warnings("threads 2 for every framework: PyTorch 2 intra-op / 1 inter-op", 2)  # once, not 3x
    assert "above the 2 usable cores in 3 of 4 timed phases (up to 3.4, at the end of TensorFlow training)" in warning
    assert "(threads 2 for every framework: PyTorch 2 intra-op / 1 inter-op)" in warning
    assert warning.endswith("or with --threads 1 (a framework's threads wait for one another on shared cores)")
    [one_thread] = load.warnings("threads 1", 1)
    assert "--threads" not in one_thread and one_thread.endswith("rerun on a quiet machine")  # no advice to repeat
    md = markdown({"title": "T", "warnings": [warning]})
    assert f"**Warning:** {warning}." in md


def test_estimate_counts_both_frameworks_and_says_how_to_make_it_small() -> None:
    bench = {"median_step_seconds": {"torch": 0.3, "tf": 0.05}, "batches_per_epoch": 1000, "rounds": 10}
    text = compare_mod.estimate_text(bench, epochs=14, batch_size=128, frames=20)
    # 14 x 1000 steps x 0.35 s = 4900 s; the quick run: 100 steps x 0.35 s = 35 s
    assert text.startswith("compare will train for about 1:21:40 (14 epochs x 1000 steps per framework: "
                           "PyTorch 1:10:00 (300 ms per step), TensorFlow 0:11:40 (50 ms per step))")
    assert text.endswith("--epochs 1 --max-examples 12800 (about 0:00:35 of training)")
    small = compare_mod.estimate_text({**bench, "batches_per_epoch": 4}, epochs=1, batch_size=64, frames=1)
    assert small.endswith("on 1 frame") and "quick run" not in small  # already small: no advice


def test_disparity_figure_has_a_colour_bar_of_the_ramp(tmp_path):
    """compare's disparity.png: under the panels, a bar running from colorize's 0 colour to its max colour."""
    pytest.importorskip("matplotlib")
    from stereodeploy.data.io import colorize, read_image
    from stereodeploy.study.report import plot_disparities

    gt = np.full((48, 64), 20.0, np.float32)  # mid-range panels: the ramp's two ends can only come from a bar
    path = plot_disparities(gt, {("ONNX", "none"): gt, ("ONNX", "full"): gt}, 40.0, tmp_path / "d.png")
    img = read_image(path).astype(int)[..., :3]
    low, high = colorize(np.array([[0.0, 40.0]], np.float32), 40.0)[0].astype(int)

    def found(colour) -> bool:
        return bool((np.abs(img - colour).sum(axis=-1) <= 12).any())

    assert found(low) and found(high)


@pytest.mark.slow
def test_an_interrupted_compare_resumes_with_the_command_it_suggests(tmp_path: Path, monkeypatch, caplog) -> None:
    """Ctrl-C during TensorFlow's training: the message names `stereodeploy compare --resume --out ...`; running
    it keeps PyTorch's finished run and completes the report. The run starts with the whole run's estimate, and
    both frameworks ran with one thread count, their steps also measured interleaved."""
    import logging
    import shlex

    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from typer.testing import CliRunner

    from stereodeploy.cli.app import app
    from stereodeploy.train.loop import TrainingInterrupted

    data = _middlebury(tmp_path / "data", n=2)
    out = tmp_path / "report"
    from stereodeploy.train import api

    real = api.train_run

    def stop_tf(spec, *args, **kwargs):
        if spec.framework == "tf":
            raise TrainingInterrupted("SIGINT: stopped at epoch 1, batch 0 after writing x/checkpoint.npz; "
                                      "continue with `stereodeploy train tf --resume --out x`", exit_code=130)
        return real(spec, *args, **kwargs)

    res = CliRunner().invoke(app, ["compare", "--resume", "--out", str(out)])  # nothing there yet: how to start
    assert res.exit_code == 1 and "holds no comparison to resume" in res.output, res.output
    start = re.search(r"`stereodeploy (compare [^`]+)`", res.output).group(1)
    args = [{"PATH": str(data), "OUT": str(out)}.get(a, a) for a in start.split()] + [
        "--hold-out", "scene1", "--epochs", "1", "--max-examples", "256", "--batch-size", "64", "--layers", "2",
        "--maps", "8", "--no-progress", "--threads", "1"]
    monkeypatch.setattr(api, "train_run", stop_tf)
    with caplog.at_level(logging.INFO, logger="stereodeploy"):
        res = CliRunner().invoke(app, args)
    assert res.exit_code == 130, res.output
    assert "train tf --resume" not in res.output
    command = re.search(r"`(stereodeploy compare [^`]+)`", res.output).group(1)
    assert command == f"stereodeploy compare --resume --out {out}"
    estimate = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("compare will train"))
    assert "(1 epoch x 4 steps per framework: PyTorch " in estimate  # 256 examples in batches of 64
    torch_summary = (out / "runs" / "torch" / "summary.json").read_bytes()

    monkeypatch.setattr(api, "train_run", real)
    res = CliRunner().invoke(app, shlex.split(command)[1:])
    assert res.exit_code == 0, res.output
    assert (out / "runs" / "torch" / "summary.json").read_bytes() == torch_summary  # kept, not trained again
    report = json.loads((out / "report.json").read_text())
    assert (out / "runs" / "tf" / "summary.json").is_file() and len(report["table2"]["rows"]) == 8
    assert report["configuration"]["threads"]["chosen"] == 1
    assert all(report["training"][fw]["threads"]["threads"] == 1 for fw in ("torch", "tf"))
    bench = report["interleaved_steps"]
    assert bench["rounds"] >= 1 and all(t > 0 for t in bench["median_step_seconds"].values())
    assert "Interleaved step time" in res.output and "Interleaved step time" in (out / "report.md").read_text()
    assert len(report["warnings"]) <= 1
