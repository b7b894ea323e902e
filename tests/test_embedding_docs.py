"""docs/embedding.md: every snippet runs. Python blocks run in a folder holding matcher.onnx (exported by the
first bash block's command) and a real pair as left.png / right.png; the Node block runs beside
examples/node/match.mjs; the browser lines must be the page's own code (the page runs in test_examples.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "embedding.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """The first bash block's export-matcher command, run; and a real pair beside its file."""
    pytest.importorskip("onnxruntime")
    from stereodeploy.cli.app import app

    work = tmp_path_factory.mktemp("embedding")
    command = next(line for line in blocks("bash")[0].splitlines() if line.startswith("stereodeploy export-matcher"))
    args = command.split()[1:]
    args[args.index("--out") + 1] = str(work / "matcher.onnx")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    scene = shared_data / "middlebury" / "tsukuba"
    shutil.copy(scene / "im0.png", work / "left.png")
    shutil.copy(scene / "im1.png", work / "right.png")
    return work


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_snippet_runs(folder, index):
    code = blocks("python")[index]
    run = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, check=False,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()  # every snippet prints what it got


@pytest.mark.slow
def test_node_snippet_runs(folder):
    node = shutil.which("node")
    modules = ROOT / "examples" / "node" / "node_modules" / "onnxruntime-node"
    if node is None or not modules.is_dir():
        message = "node and examples/node/node_modules are needed: run `bash examples/install.sh`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    (code,) = blocks("js")[:1]
    script = ROOT / "examples" / "node" / f".doc-snippet-{os.getpid()}.mjs"  # imports resolve from there
    script.write_text(code)
    try:
        run = subprocess.run([node, str(script)], cwd=folder, capture_output=True, text=True, check=False,
                             timeout=600)
    finally:
        script.unlink()
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("[ 288, 384 ]")


def test_browser_snippet_is_the_page_code():
    page = (ROOT / "examples" / "web" / "app.mjs").read_text()
    for line in blocks("js")[1].strip().splitlines():
        assert line.strip() in page, line


def test_headers_are_the_ones_served():
    from stereodeploy.deploy.serve import HEADERS

    for line in blocks("http")[0].strip().splitlines():
        key, value = line.split(": ")
        assert HEADERS[key] == value
