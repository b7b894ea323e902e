"""Preemption: SIGINT/SIGTERM finish the step, checkpoint and exit 130/143; time-based checkpoints; resume
continues bit-identically; resume works from any folder and for a dataset that moved; every command an error
message suggests works."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("torch")

from stereodeploy.cli.app import app
from stereodeploy.config import DataSpec, NetworkConfig, RunSpec, SamplerConfig, TrainConfig
from stereodeploy.train import loop
from stereodeploy.train.api import train_run
from stereodeploy.train.checkpoint import load_checkpoint, read_metrics, read_run_config
from stereodeploy.train.loop import TrainingInterrupted

NET = NetworkConfig(layers=2, maps=8)
CFG = TrainConfig(epochs=2, max_examples=1280, seed=4, lr=0.01)  # 20 steps of 64 examples per epoch


def run(data: Path, out: Path, cfg: TrainConfig = CFG, resume: bool = False, **kwargs) -> dict:
    spec = RunSpec(framework="torch", data=DataSpec(sources=(data,) if data else ()), network=NET,
                   sampler=SamplerConfig(seed=4), train=cfg, threads=1)
    return train_run(spec, out, resume=resume, options=None if data else (), progress=False, **kwargs)


@pytest.fixture(scope="module")
def straight(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    run(synthetic_dataset, out)
    return load_checkpoint(out).weights


def assert_same(a, b) -> None:
    for (ka, ba), (kb, bb) in zip(a, b):
        np.testing.assert_array_equal(ka, kb)
        np.testing.assert_array_equal(ba, bb)


def with_hook(monkeypatch, hook) -> None:
    original = loop.train
    monkeypatch.setattr(loop, "train", lambda *a, **k: original(*a, on_step=hook, **k))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_finishes_the_step_checkpoints_and_resume_is_bit_identical(
        synthetic_dataset, tmp_path, straight, monkeypatch, sig, code):
    before = signal.getsignal(sig)
    with_hook(monkeypatch, lambda epoch, batch: os.kill(os.getpid(), sig) if (epoch, batch) == (0, 12) else None)
    with pytest.raises(TrainingInterrupted) as info:
        run(synthetic_dataset, tmp_path / "run")
    monkeypatch.undo()
    assert info.value.exit_code == code
    ckpt = load_checkpoint(tmp_path / "run")
    assert (ckpt.epoch, ckpt.batch) == (0, 13)  # step 12 finished, then the checkpoint
    assert signal.getsignal(sig) is before  # the handler is put back
    run(None, tmp_path / "run", resume=True)
    assert_same(load_checkpoint(tmp_path / "run").weights, straight)
    assert [r["epoch"] for r in read_metrics(tmp_path / "run")] == [0, 1]


def test_a_signal_on_the_last_step_of_an_epoch_closes_the_epoch_first(synthetic_dataset, tmp_path, straight,
                                                                         monkeypatch):
    with_hook(monkeypatch, lambda epoch, batch: os.kill(os.getpid(), signal.SIGTERM) if (epoch, batch) == (0, 19) else None)
    with pytest.raises(TrainingInterrupted):
        run(synthetic_dataset, tmp_path / "run")
    monkeypatch.undo()
    assert (load_checkpoint(tmp_path / "run").epoch, load_checkpoint(tmp_path / "run").batch) == (1, 0)
    assert len(read_metrics(tmp_path / "run")) == 1
    run(None, tmp_path / "run", resume=True)
    assert_same(load_checkpoint(tmp_path / "run").weights, straight)


class Crash(Exception):
    pass


def test_time_based_checkpoints_bound_what_a_crash_loses(synthetic_dataset, tmp_path, straight, monkeypatch):
    assert TrainConfig().checkpoint_minutes == 10  # on by default
    cfg = TrainConfig(**{**CFG.__dict__, "checkpoint_minutes": 1e-9})  # due after every step

    def crash(epoch: int, batch: int) -> None:
        if (epoch, batch) == (1, 7):
            raise Crash

    with_hook(monkeypatch, crash)
    with pytest.raises(Crash):
        run(synthetic_dataset, tmp_path / "run", cfg=cfg)
    monkeypatch.undo()
    ckpt = load_checkpoint(tmp_path / "run")
    assert (ckpt.epoch, ckpt.batch) == (1, 7)  # the step before the crash
    run(None, tmp_path / "run", resume=True)
    assert_same(load_checkpoint(tmp_path / "run").weights, straight)


def test_a_crash_before_any_step_still_leaves_a_run_to_resume(synthetic_dataset, tmp_path, monkeypatch):
    def crash(epoch: int, batch: int) -> None:
        raise Crash

    with_hook(monkeypatch, crash)
    with pytest.raises(Crash):
        run(synthetic_dataset, tmp_path / "run")
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run").batch == 0
    assert run(None, tmp_path / "run", resume=True).epochs == 2


@pytest.mark.slow
def test_ctrl_c_with_default_options_then_resume(synthetic_dataset, tmp_path):
    """The issue's case: Ctrl-C mid-epoch, default options (no --checkpoint-every), then --resume."""
    out = tmp_path / "run"
    args = ["--data", str(synthetic_dataset), "--out", str(out), "--epochs", "12", "--layers", "2", "--maps", "8",
            "--no-progress", "--threads", "1"]  # 12 epochs of 52 steps
    proc = subprocess.Popen([sys.executable, "-m", "stereodeploy", "train", "torch", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / "checkpoint.npz").is_file():
        time.sleep(0.05)
    time.sleep(1.0)  # some steps into the epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "SIGINT: stopped at epoch" in lines[0], err
    ckpt = load_checkpoint(out)
    assert ckpt.epoch < 12 and ckpt.batch > 0, (ckpt.epoch, ckpt.batch)  # mid-epoch
    res = CliRunner().invoke(app, suggested_command(lines[0]) + ["--no-progress"])
    assert res.exit_code == 0, res.output
    assert [r["epoch"] for r in read_metrics(out)] == list(range(12))


def suggested_command(message: str) -> list[str]:
    return shlex.split(re.search(r"`stereodeploy ([^`]+)`", message).group(1))


def test_resume_is_independent_of_the_working_folder_and_accepts_a_moved_dataset(synthetic_dataset, tmp_path,
                                                                                 monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dataset, data)
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(epochs=1, max_examples=640, seed=1)
    with_hook(monkeypatch, lambda e, b: os.kill(os.getpid(), signal.SIGTERM) if b == 3 else None)
    with pytest.raises(TrainingInterrupted):
        run(Path("data"), Path("run"), cfg=cfg)  # relative paths, as typed
    monkeypatch.undo()
    assert read_run_config(tmp_path / "run")["data"]["sources"] == [str(data.resolve())]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    moved = tmp_path / "moved"
    data.rename(moved)
    res = CliRunner().invoke(app, ["train", "torch", "--resume", "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 1 and "no longer at" in res.output
    args = [a.replace("NEW_PATH", str(moved)) for a in suggested_command(res.output)]
    res = CliRunner().invoke(app, args + ["--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(read_metrics(tmp_path / "run")) == 1


def test_every_command_an_error_message_suggests_works(synthetic_dataset, tmp_path):
    invoke = CliRunner().invoke
    common = ["--epochs", "1", "--max-examples", "64", "--layers", "2", "--maps", "4", "--no-progress"]
    out = tmp_path / "run"
    res = invoke(app, ["train", "torch", "--data", str(synthetic_dataset), "--out", str(out), "--epochs", "2",
                       "--max-examples", "64", "--layers", "2", "--maps", "4", "--no-progress"])
    assert res.exit_code == 0, res.output
    (out / "checkpoint.npz").unlink()  # as if it stopped in epoch 1 of 2: keep config, put back a checkpoint
    ckpt_run = tmp_path / "half"
    invoke(app, ["train", "torch", "--data", str(synthetic_dataset), "--out", str(ckpt_run), *common])
    shutil.copy(ckpt_run / "checkpoint.npz", out / "checkpoint.npz")
    # the wrong framework: the message names the command for the right one
    res = invoke(app, ["train", "tf", "--resume", "--out", str(out), "--no-progress"])
    assert res.exit_code == 1 and "torch run, not tf" in res.output
    res = invoke(app, suggested_command(res.output) + ["--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(read_metrics(out)) == 2
    # a non-empty --out: the message offers --resume
    res = invoke(app, ["train", "torch", "--data", str(synthetic_dataset), "--out", str(ckpt_run), *common])
    assert res.exit_code == 2 and "--resume" in res.output
    res = invoke(app, suggested_command(res.output) + ["--no-progress"])
    assert res.exit_code == 0, res.output
    # a checkpoint read as the other framework's
    from stereodeploy.errors import UserError
    from stereodeploy.train.checkpoint import load_checkpoint as load

    with pytest.raises(UserError) as info:
        load(out, framework="tf")
    res = invoke(app, suggested_command(str(info.value)) + ["--no-progress"])
    assert res.exit_code == 0, res.output
