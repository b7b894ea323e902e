"""One run spec: validated once when built, stored once (config.json), and on --resume what may change is honoured
(--epochs extends a finished run, bit-identically to a longer run) while what may not is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from stereodeploy.config import DataSpec, NetworkConfig, RunSpec, SamplerConfig, TrainConfig
from stereodeploy.errors import UsageError

# ------------------------------------------------------------------------------------------------ the spec alone


@pytest.mark.parametrize("build, option", [
    (lambda: TrainConfig(epochs=0), "--epochs must be at least 1"),
    (lambda: TrainConfig(max_examples=0), "--max-examples must be at least 1"),
    (lambda: TrainConfig(batch_size=7), "--batch-size counts pairs"),
    (lambda: TrainConfig(device="tpu"), "unknown device 'tpu': use --device cpu or cuda"),
    (lambda: NetworkConfig(kernel=2), "--kernel odd"),
    (lambda: RunSpec(framework="jax"), "unknown framework 'jax'"),
    (lambda: RunSpec(framework="torch", threads=0), "--threads must be at least 1"),
    (lambda: RunSpec(framework="torch", max_disp=0), "--max-disp must be at least 1"),
])
def test_a_bad_value_is_a_usage_error_naming_the_option(build, option: str) -> None:
    with pytest.raises(UsageError, match=option):
        build()


def test_the_spec_round_trips_through_its_record() -> None:
    spec = RunSpec(framework="tf", data=DataSpec(sources=(Path("/d/a"),), exclude=["x"], format="kitti2015"),
                   network=NetworkConfig(layers=2, maps=8), sampler=SamplerConfig(seed=3, augment=True),
                   train=TrainConfig(epochs=3, lr_drops=(1, 2)), validation=(Path("/v"),), max_disp=32, threads=2)
    record = json.loads(json.dumps({**spec.to_dict(), "examples": 10}))  # as config.json holds it, extra keys too
    assert RunSpec.from_dict(record) == spec
    assert spec.data.sources == ("/d/a",) and spec.validation == ("/v",)


def test_resumed_honours_what_may_change_and_refuses_the_rest() -> None:
    saved = RunSpec(framework="torch", train=TrainConfig(epochs=2, lr=0.01, seed=4), sampler=SamplerConfig(seed=4))
    given = RunSpec(framework="torch", train=TrainConfig(epochs=5, lr=0.5, seed=4, device="cpu"), threads=3,
                    sampler=SamplerConfig(seed=4))
    spec, changes = saved.resumed(given, {"--epochs", "--threads", "--seed", "--progress"})
    assert spec == RunSpec(framework="torch", train=TrainConfig(epochs=5, lr=0.01, seed=4), threads=3,
                           sampler=SamplerConfig(seed=4))
    assert sorted(changes) == ["--epochs 2 -> 5", "--threads None -> 3"]  # --seed given as recorded: no change
    with pytest.raises(UsageError, match=r"^--lr 0.5 differs from the run's 0.01, and a resumed run cannot change "
                                         r"it: drop --lr"):
        saved.resumed(given, {"--epochs", "--lr"})
    assert saved.resumed(given, ())[0] == saved  # nothing given: the record as it is


# ------------------------------------------------------------------------------------------------ through the CLI
torch = pytest.importorskip("torch")
ARGS = ["--max-examples", "640", "--seed", "4", "--lr", "0.01", "--lr-drop", "3", "--layers", "2", "--maps", "8",
        "--threads", "1", "--no-progress"]


def cli(*args: object):
    from stereodeploy.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def weights(run: Path):
    from stereodeploy.train.checkpoint import load_checkpoint

    return load_checkpoint(run).weights


def test_resume_with_more_epochs_extends_a_finished_run_as_if_it_had_been_longer(synthetic_dataset, tmp_path):
    longer, run = tmp_path / "longer", tmp_path / "run"
    assert cli("train", "torch", "--data", synthetic_dataset, "--out", longer, "--epochs", 4, *ARGS).exit_code == 0
    res = cli("train", "torch", "--data", synthetic_dataset, "--out", run, "--epochs", 2, *ARGS)
    assert res.exit_code == 0 and "2 epochs" in res.output, res.output

    res = cli("train", "torch", "--resume", "--out", run, "--epochs", 4, "--no-progress")
    assert res.exit_code == 0 and "4 epochs" in res.output, res.output
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.01, 0.01, 0.001])  # the recorded schedule goes on
    for (ka, ba), (kb, bb) in zip(weights(run), weights(longer)):
        np.testing.assert_array_equal(ka, kb)
        np.testing.assert_array_equal(ba, bb)
    config = json.loads((run / "config.json").read_text())  # the record follows the change
    assert config["train"]["epochs"] == 4 and config["framework"] == "torch"
    assert config["data"]["sources"] == [str(synthetic_dataset.resolve())] and config["data"]["frames"]

    # the spec is stored once: the checkpoint keeps only what an export of it alone needs
    from stereodeploy.train.checkpoint import load_checkpoint

    assert set(load_checkpoint(run).meta) == {"data", "framework_version"}


def test_resume_refuses_an_option_that_cannot_change_and_fewer_epochs(synthetic_dataset, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "torch", "--data", synthetic_dataset, "--out", run, "--epochs", 2, *ARGS).exit_code == 0
    before = (run / "checkpoint.npz").read_bytes()
    for given, message in ((["--lr", "0.1"], "--lr 0.1 differs from the run's 0.01"),
                           (["--maps", "16"], "--maps 16 differs from the run's 8"),
                           (["--epochs", "1"], "--epochs 1 is fewer than the 2 epochs")):
        res = cli("train", "torch", "--resume", "--out", run, *given, "--no-progress")
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.output
    assert (run / "checkpoint.npz").read_bytes() == before  # nothing was trained or rewritten
    # options given with the values the run has are no change
    res = cli("train", "torch", "--resume", "--out", run, "--seed", 4, "--maps", 8, "--no-progress")
    assert res.exit_code == 0 and "2 epochs" in res.output, res.output
