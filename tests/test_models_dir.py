"""The shipped models: listing them with their metadata, and resolving a name given to --model."""

from __future__ import annotations

from pathlib import Path

import pytest

from stereodeploy.engine.shipped import DEFAULT_MODEL, list_models, resolve_model
from stereodeploy.errors import UserError
from stereodeploy.study.report import models_table

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_list_models_reads_each_file_s_metadata() -> None:
    models = {m.name: m for m in list_models(MODELS)}
    assert set(models) == {"mccnn_fast_torch", "mccnn_fast_tf", "mccnn_fast_torch_int8"}
    torch, tf, int8 = models["mccnn_fast_torch"], models["mccnn_fast_tf"], models["mccnn_fast_torch_int8"]
    assert torch.default and not tf.default and not int8.default and f"{torch.name}.onnx" == DEFAULT_MODEL
    assert (torch.source_framework, tf.source_framework, int8.source_framework) == ("torch", "tf", "torch")
    assert torch.quantization == "" and int8.quantization.startswith("int8")
    assert all(m.max_disp == 128 and m.training_frames == 14 for m in models.values())  # the model card's values
    assert torch.network == "4 layers x 64 maps, 3x3" and torch.path == MODELS / "mccnn_fast_torch.onnx"
    assert torch.size_bytes == (MODELS / "mccnn_fast_torch.onnx").stat().st_size


def test_models_table_names_paths_and_default() -> None:
    text = models_table(list_models(MODELS))
    assert "mccnn_fast_torch (default)" in text and "int8" in text and text.endswith(f"\n{MODELS}\n")


def test_models_listing_fits_80_columns_in_a_pipe_wherever_the_clone_is(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the folder's own line may be longer (printed whole, to be copied); the clone's path length is made
    long here on purpose, so the test does not depend on where the suite runs."""
    import shutil

    from typer.testing import CliRunner

    from stereodeploy.cli.app import app

    folder = tmp_path / ("a_long_folder_name_" * 6) / "models"
    folder.mkdir(parents=True)
    for model in MODELS.glob("*.onnx"):
        shutil.copy(model, folder / model.name)
    monkeypatch.setattr("stereodeploy.engine.shipped.shipped_models", lambda: folder)
    res = CliRunner().invoke(app, ["models"])  # not a terminal: 80 columns
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[-1] == str(folder) and len(lines[-1]) > 100
    assert max(len(line) for line in lines[:-1]) <= 80
    assert "mccnn_fast_torch (default)" in res.output and "0.13 MB" in res.output


def test_resolve_model_by_name_file_name_or_existing_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model("mccnn_fast_torch", MODELS) == MODELS / "mccnn_fast_torch.onnx"
    assert resolve_model("mccnn_fast_tf.onnx", MODELS) == MODELS / "mccnn_fast_tf.onnx"
    run = tmp_path / "runs" / "torch"
    run.mkdir(parents=True)
    assert resolve_model(run, MODELS) == run  # a run directory passes through
    monkeypatch.chdir(tmp_path)
    Path("mccnn_fast_torch").write_bytes(b"x")  # a file of that name here wins over the shipped model
    assert resolve_model("mccnn_fast_torch", MODELS) == Path("mccnn_fast_torch")


@pytest.mark.parametrize("name", ["mccnn_fast", "other/mccnn_fast_torch", "README"])
def test_unknown_model_lists_the_shipped_names(name: str) -> None:
    with pytest.raises(UserError, match=rf"model {name} not found: .*\(mccnn_fast_tf, mccnn_fast_torch, "
                                        r"mccnn_fast_torch_int8; `stereodeploy models` lists them\)"):
        resolve_model(name, MODELS)
