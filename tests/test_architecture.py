"""The shape of the package: no import circle, no framework at import time, one record per framework."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import stereodeploy
from stereodeploy import frameworks
from stereodeploy.errors import UserError

PACKAGE = Path(stereodeploy.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the stereodeploy modules it imports anywhere in its body (also inside functions), leaving out the
    top-level package, whose lazy ``StereoMatcher`` attribute is the public facade and not a dependency."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                            for a in node.names}
        graph[name] = {t for t in targets if t in modules and t not in ("stereodeploy", name)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules, or [] when the graph has none (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_circle() -> None:
    graph = import_graph()
    assert "stereodeploy.engine.backends" in graph and graph["stereodeploy.cli.app"]  # the graph was really read
    assert find_cycle(graph) == []


def test_the_engine_stands_without_the_exporter_and_the_training_sampler() -> None:
    """engine/ (the runtime) imports neither the exporter nor the patch sampler, anywhere in its modules (also
    inside functions): the model contract and the preprocessing live in modules of their own."""
    graph = import_graph()
    engine = {m for m in graph if m.startswith("stereodeploy.engine.")}
    assert "stereodeploy.engine.matcher" in engine  # the graph was really read
    forbidden = {"stereodeploy.deploy.export", "stereodeploy.data.patches"}
    assert {m: graph[m] & forbidden for m in engine if graph[m] & forbidden} == {}
    assert "stereodeploy.data.preprocess" in set().union(*(graph[m] for m in engine))  # what they use instead


def test_the_engine_and_the_file_read_one_pipeline_spec() -> None:
    """onnx_pipeline.py assigns no number of its own at module level that engine/ also defines: both import them
    from engine/spec.py (and data/preprocess.py)."""

    def numbers(path: Path) -> dict[str, float]:
        """Module-level names bound to a literal (numbers and tuples of them)."""
        tree = ast.parse(path.read_text())
        out = {}
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                names = [t.id for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                         if isinstance(t, ast.Name)]
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    continue
                for name in names:
                    out[name] = value
        return out

    shared = [*(PACKAGE / "engine").glob("*.py"), PACKAGE / "data" / "preprocess.py"]
    engine_values = {repr(v) for path in shared for v in numbers(path).values()
                     if isinstance(v, (int, float, tuple)) and not isinstance(v, bool)}
    own = numbers(PACKAGE / "deploy" / "onnx_pipeline.py")
    assert numbers(PACKAGE / "engine" / "spec.py")["NO_NEIGHBOUR"] == 3.0e38  # the reader really reads
    assert {n: v for n, v in own.items() if repr(v) in engine_values} == {}
    graph = import_graph()
    assert "stereodeploy.engine.spec" in graph["stereodeploy.deploy.onnx_pipeline"]
    assert "stereodeploy.engine.spec" in graph["stereodeploy.engine.sgm"] & graph["stereodeploy.engine.filters"]


def test_importing_the_package_and_the_cli_loads_no_framework() -> None:
    code = ("import sys, stereodeploy, stereodeploy.cli.app, stereodeploy.frameworks; "
            "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'tf2onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------------ frameworks


@pytest.mark.parametrize("key", sorted(frameworks.FRAMEWORKS))
def test_every_piece_of_a_framework_record_resolves(key: str) -> None:
    fw = frameworks.FRAMEWORKS[key]
    if fw.missing("export"):
        pytest.skip(f"{fw.label} is not installed")
    for attribute in ("stepper", "exporter", "native_features", "backend", "device"):
        assert callable(fw.load(attribute)), attribute
    device, description = fw.resolve_device("cpu")
    assert description == "cpu" and "cpu" in str(device).lower()
    assert fw.version()


@pytest.mark.parametrize("key, use, missing, named", [
    ("tf", "export", "tf2onnx", "tf2onnx"),
    ("tf", "train", "tensorflow", "TensorFlow"),
    ("tf", "backend", "keras", "Keras"),
    ("torch", "backend", "torch", "PyTorch"),
])
def test_a_missing_package_names_itself_and_the_extra(monkeypatch, key: str, use: str, missing: str,
                                                      named: str) -> None:
    monkeypatch.setattr(frameworks, "_installed", lambda module: module != missing)
    fw = frameworks.FRAMEWORKS[key]
    with pytest.raises(UserError, match=rf"{named}.*\({missing}\), which is not installed: "
                                        rf"pip install 'stereodeploy\[{fw.extra}\]'"):
        fw.require(use)
    monkeypatch.setattr(frameworks, "_installed", lambda module: True)
    fw.require(use)  # nothing missing: no error


def test_names_and_choices_follow_the_registry() -> None:
    from stereodeploy.cli.options import BackendName, Framework
    from stereodeploy.engine.backends import backend_names
    from stereodeploy.study.compare import RUNTIMES

    keys = list(frameworks.FRAMEWORKS)
    assert [f.value for f in Framework] == keys
    assert [b.value for b in BackendName] == list(backend_names()) == ["onnx", *keys]
    assert [r[0] for r in RUNTIMES] == [frameworks.label(k) for k in keys] + [
        f"ONNX ({frameworks.label(k)})" for k in keys]
    assert frameworks.label("onnx") == "onnx" and frameworks.label("tf") == "TensorFlow"
    with pytest.raises(UserError, match="unknown framework 'jax': use torch or tf"):
        frameworks.get("jax")


# ------------------------------------------------------------------------------------------------ small contracts


def test_match_config_is_hashable_and_keeps_its_overrides() -> None:
    from stereodeploy.config import MatchConfig

    a = MatchConfig.preset("full", 64, {"P2": 42.3, "P1": 2, "lr_threshold": 2.1})
    b = MatchConfig(max_disp=64, sgm=True, lr_check=True, subpixel=True, median=True, bilateral=True,
                    overrides={"lr_threshold": 2.1, "P1": 2.0, "P2": 42.3})
    assert a == b and hash(a) == hash(b) and len({a, b, MatchConfig.preset("none", 64)}) == 2
    assert dict(a.overrides) == {"P1": 2.0, "P2": 42.3, "lr_threshold": 2.1}
    assert a.spec.sgm.P2 == 42.3 and a.spec.lr_threshold == 2.1 and a.spec.blur_sigma == 6.0  # middlebury's blur


@pytest.mark.parametrize("kwargs, message", [
    ({"max_disp": 0}, "max disparity must be a whole number of at least 1, got 0"),
    ({"max_disp": 2.5}, "max disparity must be a whole number"),
    ({"sgm_preset": "kitti2019"}, "unknown preset 'kitti2019': use one of kitti2012, kitti2015, middlebury"),
    ({"overrides": {"P3": 1.0}}, "unknown pipeline setting.* P3: use P1, P2, Q1, Q2, V, D, blur_sigma"),
    ({"overrides": {"P2": 1.0}}, "SGM needs P2 >= P1"),
    ({"overrides": {"blur_t": -1}}, "blur_t must be a positive number, got -1"),
    ({"overrides": {"lr_threshold": "x"}}, "pipeline settings must be numbers"),
])
def test_match_config_checks_everything_once_with_one_error(kwargs: dict, message: str) -> None:
    from stereodeploy.config import MatchConfig
    from stereodeploy.errors import UsageError

    with pytest.raises(UsageError, match=message) as info:
        MatchConfig(**kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="postprocess must be 'none' or 'full', not 'some'"):
        MatchConfig.preset("some", 16)


def test_framework_free_feature_model_equals_the_torch_export() -> None:
    torch_net = pytest.importorskip("stereodeploy.nets.torch_net", reason="needs PyTorch (torch)")
    import numpy as np

    from stereodeploy.config import NetworkConfig
    from stereodeploy.deploy.export import parity_input, run_onnx
    from stereodeploy.nets.onnx_net import to_onnx_model
    from stereodeploy.nets.weights import init_weights

    network = NetworkConfig(layers=3, maps=8, kernel=3)
    weights = init_weights(network, 3)
    image = parity_input(40, 64)
    native = torch_net.native_features(network, weights, image)
    for opset in (13, 17, 18):
        assert np.abs(run_onnx(to_onnx_model(network, weights, opset), image) - native).max() < 1e-5
