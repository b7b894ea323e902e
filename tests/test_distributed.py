"""Training on several processes (torchrun, 2 CPU processes over gloo): the batch contract, resume across world
sizes, SIGTERM to a torchrun job, and a failing process ending the job.

The reference is the same run in one process: every global batch is the single-process batch, so the weights
must agree to float32 rounding (1e-5) whatever the number of processes. Batches of 11 examples give the two
processes uneven slices (5 and 6), which a plain average of per-process means would get wrong.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # several processes each: about 90 s together on two cores

from stereodeploy.config import DataSpec, NetworkConfig, RunSpec, SamplerConfig, TrainConfig
from stereodeploy.train.api import train_run
from stereodeploy.train.checkpoint import load_checkpoint, read_metrics
from stereodeploy.train.loop import TrainingInterrupted

NET = NetworkConfig(layers=2, maps=8)
CFG = TrainConfig(epochs=2, batch_size=22, max_examples=1100, seed=3, checkpoint_every=10)  # 2 x 100 steps
ARGS = ["--epochs", "2", "--batch-size", "22", "--max-examples", "1100", "--seed", "3",
        "--layers", "2", "--maps", "8", "--checkpoint-every", "10", "--no-progress", "--threads", "1"]
# Observed 2.2e-7 after these 200 steps. Two float32 summation orders drift apart chaotically as training goes on
# (a hinge or ReLU switches on a rounding difference): ~5e-5 after 200 steps at lr 0.01.
TOLERANCE = 1e-5
CLI = [sys.executable, "-m", "stereodeploy", "train", "torch"]


def train_here(data: Path, out: Path, resume: bool = False) -> dict:
    spec = RunSpec(framework="torch", data=DataSpec(sources=(data,)), network=NET, sampler=SamplerConfig(seed=3),
                   train=CFG, threads=1)
    return train_run(spec, out, resume=resume, progress=False)


@pytest.fixture(scope="module")
def reference(synthetic_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    train_here(synthetic_dataset, out)
    return load_checkpoint(out).weights


def assert_close(a, b, tol: float = TOLERANCE) -> float:
    worst = max(float(np.abs(x - y).max()) for p, q in zip(a, b) for x, y in zip(p, q))
    assert worst <= tol, worst
    return worst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(args: list[str], world: int = 2) -> list[subprocess.Popen]:
    """The processes torchrun would start (its environment variables), without the launcher's start-up time."""
    port = free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world)}
        procs.append(subprocess.Popen(CLI + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    return procs


def wait_for_mid_epoch_checkpoint(run: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(Exception):  # not written yet, or being replaced: look again
            if load_checkpoint(run).batch > 0:
                return
        time.sleep(0.02)
    pytest.fail("no mid-epoch checkpoint appeared")


def test_sigterm_to_a_torchrun_job_then_resume_in_one_process(synthetic_dataset, tmp_path, reference):
    """``--nproc-per-node 2`` replaces the process by ``torchrun --standalone --nproc-per-node 2 ...``: the
    signal goes to torchrun, as a scheduler's would."""
    run = tmp_path / "run"
    job = subprocess.Popen(CLI + ["--nproc-per-node", "2", "--data", str(synthetic_dataset), "--out", str(run), *ARGS],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_mid_epoch_checkpoint(run, job)
    job.send_signal(signal.SIGTERM)
    output, _ = job.communicate(timeout=60)
    assert job.returncode != 0 and "torch.distributed" in output  # torchrun's own report of the signal
    assert output.count("SIGTERM: stopped") == 1, output  # process 0 alone says it
    ckpt = load_checkpoint(run)
    assert (ckpt.epoch, ckpt.batch) != (2, 0)  # stopped before the end, with a checkpoint where it stopped
    resumed = train_run(RunSpec(framework="torch"), run, resume=True, options=(), progress=False)  # as recorded
    assert resumed.epochs == 2 and [r["epoch"] for r in read_metrics(run)] == [0, 1]
    assert_close(load_checkpoint(run).weights, reference)


def test_one_process_run_resumes_in_two_processes(synthetic_dataset, tmp_path, reference, monkeypatch):
    from stereodeploy.train import loop

    def sigterm_at(epoch: int, batch: int) -> None:
        if (epoch, batch) == (0, 36):
            os.kill(os.getpid(), signal.SIGTERM)

    original = loop.train
    monkeypatch.setattr(loop, "train", lambda *a, **k: original(*a, on_step=sigterm_at, **k))
    with pytest.raises(TrainingInterrupted) as info:
        train_here(synthetic_dataset, tmp_path / "run")
    monkeypatch.undo()
    assert info.value.exit_code == 143 and "--resume --out" in str(info.value)
    assert (load_checkpoint(tmp_path / "run").epoch, load_checkpoint(tmp_path / "run").batch) == (0, 37)
    procs = start_workers(["--resume", "--out", str(tmp_path / "run")])
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert "2 epochs" in outputs[0] and not outputs[1].strip()  # process 1 prints nothing
    assert_close(load_checkpoint(tmp_path / "run").weights, reference)


def test_a_failing_process_ends_the_job_with_one_line(synthetic_dataset, tmp_path):
    run = tmp_path / "run"
    procs = start_workers(["--data", str(synthetic_dataset), "--out", str(run), *ARGS])
    wait_for_mid_epoch_checkpoint(run, procs[0])
    procs[1].send_signal(signal.SIGKILL)  # process 1 dies mid-training (out of memory, a node lost ...)
    t0 = time.monotonic()
    output, _ = procs[0].communicate(timeout=60)
    assert time.monotonic() - t0 < 30  # no hang
    assert procs[0].returncode == 1
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: process 0 of 2: another process of the job stopped"), output


# ---------------------------------------------------------------------------- TensorFlow: 2 workers via TF_CONFIG
TF_CFG = TrainConfig(epochs=2, batch_size=22, max_examples=550, seed=3, checkpoint_every=5)  # 2 x 25 steps
TF_ARGS = ["--epochs", "2", "--batch-size", "22", "--max-examples", "550", "--seed", "3", "--layers", "2",
           "--maps", "8", "--checkpoint-every", "5", "--no-progress", "--threads", "1"]


def start_tf_workers(args: list[str], world: int = 2) -> list[subprocess.Popen]:
    import json

    hosts = [f"localhost:{free_port()}" for _ in range(world)]
    procs = []
    for i in range(world):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": hosts},
                                                       "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen([sys.executable, "-m", "stereodeploy", "train", "tf", *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def test_tf_workers_sigterm_then_resume_in_one_process_match_one_process(synthetic_dataset, tmp_path):
    pytest.importorskip("tensorflow")
    straight = tmp_path / "straight"
    train_run(RunSpec(framework="tf", data=DataSpec(sources=(synthetic_dataset,)), network=NET,
                      sampler=SamplerConfig(seed=3), train=TF_CFG, threads=1), straight, progress=False)
    run = tmp_path / "run"
    procs = start_tf_workers(["--data", str(synthetic_dataset), "--out", str(run), *TF_ARGS])
    wait_for_mid_epoch_checkpoint(run, procs[0], timeout=120)
    for p in procs:  # a scheduler stops every task of the job
        p.send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], outputs
    assert "SIGTERM: stopped" in outputs[0] and "SIGTERM: stopped" not in outputs[1]
    ckpt = load_checkpoint(run)
    assert (ckpt.epoch, ckpt.batch) != (2, 0)
    assert load_checkpoint(run).framework == "tf"
    train_run(RunSpec(framework="tf"), run, resume=True, options=(), progress=False)
    assert [r["epoch"] for r in read_metrics(run)] == [0, 1]
    assert_close(load_checkpoint(run).weights, load_checkpoint(straight).weights)


def test_nproc_per_node_mistakes_end_in_one_line(synthetic_dataset, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from stereodeploy.cli.app import app

    common = ["--data", str(synthetic_dataset), "--out", str(tmp_path / "run"), "--nproc-per-node", "2"]
    res = CliRunner().invoke(app, ["train", "tf", *common])
    assert res.exit_code == 2 and "TF_CONFIG" in res.output and "Traceback" not in res.output
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    res = CliRunner().invoke(app, ["train", "torch", *common])
    assert res.exit_code == 2 and "already runs distributed" in res.output
    assert not (tmp_path / "run").exists()
