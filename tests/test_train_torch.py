"""PyTorch trainer and the shared loop: schedule, learning, checkpoints, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_NET

from stereodeploy.config import RunSpec, SamplerConfig, TrainConfig
from stereodeploy.data.datasets import synthetic_pair
from stereodeploy.errors import UsageError, UserError
from stereodeploy.nets.weights import init_weights
from stereodeploy.train.api import train_run
from stereodeploy.train.checkpoint import load_checkpoint


def spec(cfg: TrainConfig, **fields) -> RunSpec:
    return RunSpec(framework="torch", network=TINY_NET, train=cfg, **fields)


def samples(n: int = 2):
    return [synthetic_pair(height=48, width=80, max_disp=12, seed=s) for s in range(n)]


def test_learning_rate_schedule_is_multistep():
    cfg = TrainConfig(epochs=14, lr=0.002, lr_drops=(12,))
    assert [cfg.lr_at(e) for e in (0, 11, 12, 13)] == pytest.approx([0.002, 0.002, 0.0002, 0.0002])
    assert TrainConfig(lr_drops=(2, 4)).lr_at(5) == pytest.approx(0.002 * 0.01)
    with pytest.raises(UsageError, match="--batch-size counts pairs"):
        TrainConfig(batch_size=7)


def test_tiny_network_learns_well_above_chance(tmp_path):
    cfg = TrainConfig(epochs=3, lr=0.01, lr_drops=(), max_examples=6400, seed=0)  # 300 steps of 64 examples
    summary = train_run(spec(cfg), tmp_path / "run", samples=samples(3), progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[-1]["steps"] == 100
    assert summary.final_accuracy > 0.85  # chance is 0.5
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert summary.mean_step_seconds > 0 and summary.examples_per_second > 0
    for name in ("config.json", "metrics.jsonl", "summary.json", "checkpoint.npz", "accuracy.png"):
        assert (tmp_path / "run" / name).is_file(), name
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt.framework == "torch" and ckpt.network == TINY_NET and ckpt.epoch == 3 and ckpt.batch == 0


def test_validation_error_is_logged_per_epoch(tmp_path):
    val = [synthetic_pair(height=48, width=80, max_disp=12, seed=9)]
    cfg = TrainConfig(epochs=2, lr=0.01, max_examples=640)
    train_run(spec(cfg, max_disp=16), tmp_path / "run", samples=samples(), validation=val, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["validation_error"] <= 100 for r in rows)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(epochs=2, lr=0.01, max_examples=1280, checkpoint_every=7, seed=4)  # 20 steps per epoch
    data = samples()
    straight = train_run(spec(cfg), tmp_path / "a", samples=data, progress=False)

    from stereodeploy.train import loop

    def crash(epoch: int, batch: int) -> None:
        if (epoch, batch) == (1, 9):
            raise Interrupt

    original = loop.train

    def train_with_crash(*args, **kwargs):
        return original(*args, on_step=crash, **kwargs)

    loop_train = loop.train
    try:
        loop.train = train_with_crash
        with pytest.raises(Interrupt):
            train_run(spec(cfg), tmp_path / "b", samples=data, progress=False)
    finally:
        loop.train = loop_train
    ckpt = load_checkpoint(tmp_path / "b")
    assert (ckpt.epoch, ckpt.batch) == (1, 8)  # global step 28 = epoch 1, batch 8 done: resume at batch 8
    resumed = train_run(spec(cfg), tmp_path / "b", samples=data, progress=False, resume=True)
    a, b = load_checkpoint(tmp_path / "a").weights, load_checkpoint(tmp_path / "b").weights
    for (ka, ba), (kb, bb) in zip(a, b):
        np.testing.assert_array_equal(ka, kb)
        np.testing.assert_array_equal(ba, bb)
    assert resumed.epochs == straight.epochs == 2


def test_checkpoints_are_checked_on_load(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a stereodeploy checkpoint"):
        load_checkpoint(tmp_path / "bad.npz")
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")
    cfg = TrainConfig(epochs=1, max_examples=128)
    train_run(spec(cfg), tmp_path / "run", samples=samples(1), progress=False)
    with pytest.raises(UserError, match="torch checkpoint, not tf"):
        load_checkpoint(tmp_path / "run", framework="tf")


def test_same_seed_same_initial_weights_and_same_result(tmp_path):
    a, b = init_weights(TINY_NET, 5), init_weights(TINY_NET, 5)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert not np.array_equal(a[0][0], init_weights(TINY_NET, 6)[0][0])
    cfg = TrainConfig(epochs=1, max_examples=640, seed=2)
    for name in ("x", "y"):
        train_run(spec(cfg, sampler=SamplerConfig(seed=2)), tmp_path / name, samples=samples(1), progress=False)
    wx, wy = load_checkpoint(tmp_path / "x").weights, load_checkpoint(tmp_path / "y").weights
    assert all(np.array_equal(p[0], q[0]) for p, q in zip(wx, wy))
