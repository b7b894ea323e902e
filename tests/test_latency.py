"""What a one-shot `stereodeploy infer` process loads and keeps (issue 20): no onnx, no scipy, no framework; one
onnxruntime session; the features of a post-processing run leave no arena block behind."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from stereodeploy.config import MatchConfig
from stereodeploy.engine.backends import OnnxBackend

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("onnx", "scipy", "ml_dtypes", "torch", "tensorflow")

# Runs `stereodeploy infer` in this process, then prints the top-level packages loaded and checks that numba
# still compiles np.dot (it imports scipy itself then) after the kernel loader refused scipy to its own thread.
_CHILD = """
import json, os, runpy, sys
sys.argv = ['stereodeploy', *sys.argv[1:]]
try:
    runpy.run_module('stereodeploy', run_name='__main__')
except SystemExit as exc:
    assert not exc.code, exc.code
loaded = sorted({m.split('.')[0] for m in sys.modules})
if os.environ.get('CHECK_DOT'):
    import numpy as np
    from numba import njit
    assert njit(lambda a: np.dot(a, a))(np.arange(3.0)) == 5.0
print(json.dumps({'loaded': loaded}))
"""


def _modules_after(command: list[object], home: Path, check_dot: bool = False) -> set[str]:
    """The top-level packages a `stereodeploy COMMAND` process has loaded when it is done."""
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(home), "OMP_NUM_THREADS": "1",
           "CHECK_DOT": "1" if check_dot else ""}
    run = subprocess.run([sys.executable, "-c", _CHILD, *map(str, command)], env=env, capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return set(json.loads(run.stdout.strip().splitlines()[-1])["loaded"])


def _infer(model: Path, scene: Path, out: Path, postprocess: str) -> list[object]:
    return ["infer", scene / "im0.png", scene / "im1.png", "--model", model, "--max-disp", 12, "--postprocess",
            postprocess, "--out", out]


def test_one_pair_wta_infer_loads_neither_onnx_nor_scipy_nor_a_framework(model_file, synthetic_dataset, tmp_path):
    loaded = _modules_after(_infer(model_file, synthetic_dataset / "scene0", tmp_path, "none"), tmp_path)
    assert (tmp_path / "im0_disp.pfm").is_file()
    assert "onnxruntime" in loaded and "numba" in loaded  # the check sees what it should
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_evaluate_loads_neither_onnx_nor_scipy_nor_a_framework(model_file, synthetic_dataset, tmp_path):
    loaded = _modules_after(["evaluate", "--data", synthetic_dataset, "--model", model_file, "--json",
                             tmp_path / "out.json", "--no-progress"], tmp_path)
    assert json.loads((tmp_path / "out.json").read_text())["images"]
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.slow
def test_one_pair_full_infer_loads_neither_onnx_nor_scipy_nor_a_framework(model_file, synthetic_dataset, tmp_path):
    loaded = _modules_after(_infer(model_file, synthetic_dataset / "scene0", tmp_path, "full"), tmp_path,
                            check_dot=True)
    assert (tmp_path / "im0_disp.pfm").is_file()
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_scipy_refusal_holds_for_the_loader_thread_only(monkeypatch):
    from stereodeploy.engine.matcher import _RefuseInThread

    refuse = _RefuseInThread("json_not_a_real_package", threading.get_ident())
    monkeypatch.setattr(sys, "meta_path", [refuse, *sys.meta_path])
    with pytest.raises(ModuleNotFoundError, match="kernel loader"):
        __import__("json_not_a_real_package.sub")
    seen: list[BaseException] = []

    def other() -> None:
        try:
            __import__("json_not_a_real_package")
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            seen.append(exc)

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    # another thread goes on to the ordinary finders, which do not find the made-up package either
    assert len(seen) == 1 and "kernel loader" not in str(seen[0])


def test_the_backend_opens_one_session_and_reads_metadata_through_it(model_file, monkeypatch):
    import onnxruntime as ort

    made: list[object] = []
    real = ort.InferenceSession

    def counting(*args, **kwargs):
        made.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", counting)
    backend = OnnxBackend(model_file)
    assert made == [str(model_file)]
    assert backend.meta.max_disp == 16 and backend.meta.network.maps == 8


def test_released_features_are_the_same_numbers_in_an_array_numpy_owns(model_file):
    backend = OnnxBackend(model_file)
    rng = np.random.default_rng(0)
    images = (rng.random((2, 1, 20, 33)) * 255).astype(np.float32)
    kept = backend.features_batch(images)
    released = backend.features_batch(images, release=True)
    assert released.shape == kept.shape == (2, 8, 20, 33)
    assert released.flags.owndata and np.array_equal(released, kept)


def test_a_wta_matcher_loads_only_the_wta_kernel_and_matches_as_before(model_file):
    from stereodeploy.data.datasets import synthetic_pair
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.engine.matching import cost_volume, winner_take_all

    backend = OnnxBackend(model_file)
    matcher = StereoMatcher(backend, MatchConfig(max_disp=12))
    matcher._loader.join()
    from stereodeploy.engine.matcher import _RefuseInThread

    assert not any(isinstance(f, _RefuseInThread) for f in sys.meta_path)  # the refusal ends with the loader
    s = synthetic_pair(height=40, width=64, max_disp=10, seed=3)
    disp = matcher(s.left, s.right)
    from stereodeploy.data.preprocess import to_gray

    fl, fr = backend.features_pair(to_gray(s.left), to_gray(s.right))
    assert np.array_equal(disp, winner_take_all(cost_volume(fl, fr, 12)))
