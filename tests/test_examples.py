"""The example clients in other languages, run for real: the Node.js example (onnxruntime-node), the browser
page (onnxruntime-web in headless Chromium) and the C++ example (onnxruntime's C++ API, built here with CMake),
each on a real pair, against the Python engine's full pipeline or Python onnxruntime on the same file; and each
refusing a pair too large for its memory, by the file's sidecar.

They need the npm packages of examples/, Debian's chromium, and for C++ a compiler, CMake, libpng and the headers
examples/install.sh lays in examples/cpp/onnxruntime (``bash examples/install.sh``). Without them the tests skip
on a developer's machine and fail in CI (``CI`` set), so CI cannot pass without running them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MAX_DISP = 24  # tsukuba's ndisp
SCENE = "tsukuba"  # 384x288, small and fast; one of the shipped model's training scenes (models/README.md), which
# does not matter here: the clients are checked against the Python engine on the same pair, not for accuracy


def require(ok: bool, what: str) -> None:
    if ok:
        return
    message = f"{what} is missing: run `bash examples/install.sh`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def scene(shared_data: Path) -> Path:
    return shared_data / "middlebury" / SCENE


@pytest.fixture(scope="module")
def matcher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    from stereodeploy.deploy.export_matcher import export_matcher

    return export_matcher(None, tmp_path_factory.mktemp("matcher") / "matcher.onnx", max_disp=MAX_DISP,
                          postprocess="full", preset="middlebury").path


@pytest.fixture(scope="module")
def engine_result(scene: Path) -> np.ndarray:
    from stereodeploy.data.io import read_image
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.engine.shipped import default_model_path

    matcher = StereoMatcher.from_file(default_model_path(), max_disp=MAX_DISP, postprocess="full")
    return matcher(read_image(scene / "im0.png"), read_image(scene / "im1.png"))


def assert_agrees(pfm: Path, engine: np.ndarray, scene: Path) -> None:
    from stereodeploy.data.io import read_pfm
    from stereodeploy.study.evaluate import error_rate

    ours, truth = read_pfm(pfm), read_pfm(scene / "disp0GT.pfm")
    assert ours.shape == engine.shape and np.isfinite(ours).all()
    assert abs(error_rate(ours, truth) - error_rate(engine, truth)) <= 0.3
    assert np.mean(np.abs(ours - engine) > 0.5) < 0.05  # not bit for bit: the engine may change


@pytest.mark.slow
def test_node_example_matches_the_engine(scene, matcher_file, engine_result, tmp_path):
    node = shutil.which("node")
    require(node is not None, "node")
    require((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "examples/node/node_modules")
    out = tmp_path / "disp.pfm"
    run = subprocess.run([node, str(EXAMPLES / "node" / "match.mjs"), "--model", str(matcher_file),
                          "--left", str(scene / "im0.png"), "--right", str(scene / "im1.png"), "--out", str(out)],
                         check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert f"{out}: 384x288 disparity in" in run.stdout
    assert_agrees(out, engine_result, scene)


def test_node_example_says_what_is_wrong(matcher_file, tmp_path):
    node = shutil.which("node")
    require(node is not None, "node")
    require((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "examples/node/node_modules")
    from stereodeploy.data.io import write_png

    narrow = tmp_path / "narrow.png"
    write_png(narrow, np.zeros((30, MAX_DISP, 3), np.uint8))  # not wider than the max disparity
    run = subprocess.run([node, str(EXAMPLES / "node" / "match.mjs"), "--model", str(matcher_file), "--left",
                          str(narrow), "--right", str(narrow), "--out", str(tmp_path / "d.pfm")],
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and f"image width must be greater than the max disparity {MAX_DISP}" in run.stderr
    assert not (tmp_path / "d.pfm").exists()


@pytest.mark.slow
def test_browser_page_matches_the_engine(scene, matcher_file, engine_result, tmp_path):
    from stereodeploy.deploy.serve import make_server

    node, chromium = shutil.which("node"), shutil.which("chromium")
    require(node is not None, "node")
    require(chromium is not None, "chromium (Debian package)")
    require((EXAMPLES / "web" / "node_modules" / "puppeteer-core").is_dir(), "examples/web/node_modules")
    server = make_server(0, matcher_file)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = tmp_path / "disp.pfm"
        run = subprocess.run([node, str(EXAMPLES / "web" / "test" / "drive.mjs"), "--chromium", chromium,
                              "--url", f"http://127.0.0.1:{server.server_address[1]}/",
                              "--left", str(scene / "im0.png"), "--right", str(scene / "im1.png"), "--out", str(out)],
                             check=False, capture_output=True, text=True, timeout=900)
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["isolated"] is True  # the headers of serve-demo made SharedArrayBuffer (threads) available
    assert report["status"].startswith("384x288: ")
    assert_agrees(out, engine_result, scene)


def test_serve_demo_headers_and_paths(matcher_file):
    import urllib.request

    from stereodeploy.deploy.serve import make_server

    require((EXAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "examples/web/node_modules")
    server = make_server(0, matcher_file)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(base + "/") as page:
            assert page.headers["Cross-Origin-Opener-Policy"] == "same-origin"
            assert page.headers["Cross-Origin-Embedder-Policy"] == "require-corp"
            assert b"app.mjs" in page.read()
        with urllib.request.urlopen(base + "/ort/ort-wasm-simd-threaded.wasm") as wasm:
            assert wasm.headers["Content-Type"] == "application/wasm"
        with urllib.request.urlopen(base + "/model.onnx.json") as sidecar:
            assert json.load(sidecar)["metadata"]["stereodeploy.max_disp"] == str(MAX_DISP)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/ort/../../../pyproject.toml")
    finally:
        server.shutdown()
        server.server_close()


def test_serve_demo_command_says_what_is_missing(tmp_path):
    from typer.testing import CliRunner

    from stereodeploy.cli.app import app

    require((EXAMPLES / "web" / "node_modules" / "onnxruntime-web").is_dir(), "examples/web/node_modules")
    result = CliRunner().invoke(app, ["serve-demo", "--port", "0", "--model", str(tmp_path / "missing.onnx")])
    assert result.exit_code == 1 and "missing.onnx does not exist" in result.output


@pytest.mark.slow
def test_node_example_reads_jpeg(scene, matcher_file, tmp_path):
    """JPEG through jpeg-js: about the answer of the same JPEG decoded by Pillow (decoders round differently)."""
    node = shutil.which("node")
    require(node is not None, "node")
    require((EXAMPLES / "node" / "node_modules" / "jpeg-js").is_dir(), "examples/node/node_modules")
    import onnxruntime as ort
    from PIL import Image

    from stereodeploy.data.io import read_pfm

    paths = []
    for name in ("im0", "im1"):
        path = tmp_path / f"{name}.jpg"
        Image.open(scene / f"{name}.png").convert("RGB").save(path, quality=95)
        paths.append(path)
    out = tmp_path / "disp.pfm"
    run = subprocess.run([node, str(EXAMPLES / "node" / "match.mjs"), "--model", str(matcher_file), "--left",
                          str(paths[0]), "--right", str(paths[1]), "--out", str(out)],
                         check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    session = ort.InferenceSession(str(matcher_file), providers=["CPUExecutionProvider"])
    pillow = session.run(["disparity"], {"left": np.asarray(Image.open(paths[0])),
                                         "right": np.asarray(Image.open(paths[1]))})[0]
    assert np.mean(np.abs(read_pfm(out) - pillow) > 0.5) < 0.05


def test_the_scene_s_description_is_true():
    """The comment above SCENE says it is in the shipped model's training data: the model's own metadata agrees."""
    from stereodeploy.contract import load_onnx, read_meta
    from stereodeploy.engine.shipped import default_model_path

    path = default_model_path()
    assert SCENE in read_meta(load_onnx(path), str(path)).training_data["frames"]


def need_gib(height: int, width: int) -> str:
    """The need the examples must compute for the test's matcher file, by Python's copy of the memory model
    (0.35 GiB for 384x288 at 24 disparities: one strip, the whole image)."""
    from stereodeploy.deploy.export_matcher import default_strips, memory_props, peak_bytes

    return f"{peak_bytes(memory_props(MAX_DISP, 'full', default_strips(MAX_DISP)), height, width) / 2**30:.2f}"


def test_node_example_refuses_a_pair_too_large_for_its_memory(scene, matcher_file, tmp_path):
    node = shutil.which("node")
    require(node is not None, "node")
    require((EXAMPLES / "node" / "node_modules" / "onnxruntime-node").is_dir(), "examples/node/node_modules")
    run = subprocess.run([node, str(EXAMPLES / "node" / "match.mjs"), "--model", str(matcher_file), "--left",
                          str(scene / "im0.png"), "--right", str(scene / "im1.png"), "--out", str(tmp_path / "d.pfm"),
                          "--max-memory-mb", "100"], check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr
    assert f"a 384x288 pair needs about {need_gib(288, 384)} GiB with this file (max disparity 24), more than the " \
           "0.10 GiB allowed: downscale the images or export a file with a smaller --max-disp" in run.stderr
    assert not (tmp_path / "d.pfm").exists()


@pytest.mark.slow
def test_browser_page_refuses_a_pair_too_large_for_wasm(matcher_file, tmp_path):
    """3000 x 1800 at 24 disparities needs more than 4 GiB by the sidecar's memory model: refused before running."""
    from stereodeploy.data.io import write_png
    from stereodeploy.deploy.serve import make_server

    node, chromium = shutil.which("node"), shutil.which("chromium")
    require(node is not None, "node")
    require(chromium is not None, "chromium (Debian package)")
    require((EXAMPLES / "web" / "node_modules" / "puppeteer-core").is_dir(), "examples/web/node_modules")
    big = tmp_path / "big.png"
    write_png(big, np.zeros((1800, 3000, 3), np.uint8))
    server = make_server(0, matcher_file)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = subprocess.run([node, str(EXAMPLES / "web" / "test" / "drive.mjs"), "--chromium", chromium,
                              "--url", f"http://127.0.0.1:{server.server_address[1]}/", "--left", str(big),
                              "--right", str(big), "--out", str(tmp_path / "d.pfm")],
                             check=False, capture_output=True, text=True, timeout=600)
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode != 0
    assert "a 3000x1800 pair needs about" in run.stderr and "more than the 4 GiB WebAssembly can address" in run.stderr
    assert not (tmp_path / "d.pfm").exists()


CPP = EXAMPLES / "cpp"


@pytest.fixture(scope="module")
def cpp_match(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/cpp built with CMake against what examples/install.sh laid in examples/cpp/onnxruntime."""
    cmake = shutil.which("cmake")
    require(cmake is not None and shutil.which("g++") is not None, "cmake and g++")
    require((CPP / "onnxruntime" / "include" / "onnxruntime_cxx_api.h").is_file(), "examples/cpp/onnxruntime")
    require((CPP / "onnxruntime" / "lib" / "libonnxruntime.so").exists(), "examples/cpp/onnxruntime/lib")
    build = tmp_path_factory.mktemp("cpp")
    for step in ([cmake, "-S", str(CPP), "-B", str(build)], [cmake, "--build", str(build)]):
        run = subprocess.run(step, check=False, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return build / "match"


@pytest.mark.slow
def test_cpp_example_matches_python(scene, matcher_file, engine_result, cpp_match, tmp_path):
    """The same file through the C++ API and Python onnxruntime: the same disparity and validity (the two
    onnxruntime builds may round differently), and the engine's answer within the usual bound."""
    import onnxruntime as ort

    from stereodeploy.data.io import read_image, read_pfm

    out, valid, conf = tmp_path / "disp.pfm", tmp_path / "valid.pgm", tmp_path / "conf.pfm"
    run = subprocess.run([str(cpp_match), "--model", str(matcher_file), "--left", str(scene / "im0.png"), "--right",
                          str(scene / "im1.png"), "--out", str(out), "--valid", str(valid), "--confidence", str(conf)],
                         check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert f"{out}: 384x288 disparity in" in run.stdout and "% valid" in run.stdout
    session = ort.InferenceSession(str(matcher_file), providers=["CPUExecutionProvider"])
    left, right = read_image(scene / "im0.png"), read_image(scene / "im1.png")
    disp, ok, confidence = session.run(["disparity", "valid", "confidence"], {"left": left, "right": right})
    assert np.mean(np.abs(read_pfm(out) - disp) > 0.5) < 0.005
    pgm = valid.read_bytes()
    assert pgm.startswith(b"P5\n384 288\n255\n")
    assert np.mean((np.frombuffer(pgm[-384 * 288:], np.uint8).reshape(288, 384) > 0) != (ok > 0)) < 0.005
    assert np.mean(np.abs(read_pfm(conf) - confidence) > 0.05) < 0.005
    assert_agrees(out, engine_result, scene)


@pytest.mark.slow
def test_cpp_example_says_what_is_wrong(scene, matcher_file, cpp_match, tmp_path):
    from stereodeploy.data.io import write_png

    base = [str(cpp_match), "--model", str(matcher_file), "--out", str(tmp_path / "d.pfm")]
    run = subprocess.run(base + ["--left", str(scene / "im0.png"), "--right", str(scene / "im1.png"),
                                 "--max-memory-mb", "100"], check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert f"a 384x288 pair needs about {need_gib(288, 384)} GiB with this file (max disparity 24), more than the " \
           "0.10 GiB allowed" in run.stderr
    narrow = tmp_path / "narrow.png"
    write_png(narrow, np.zeros((30, MAX_DISP, 3), np.uint8))
    run = subprocess.run(base + ["--left", str(narrow), "--right", str(narrow)], check=False, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1 and f"image width must be greater than the max disparity {MAX_DISP}" in run.stderr
    assert not (tmp_path / "d.pfm").exists()


@pytest.mark.slow
def test_browser_page_runs_a_kitti_frame_at_228_disparities(shared_data, tmp_path):
    """Issue 21's bar: the full pipeline at 228 disparities on a 1242 x 375 KITTI frame fits WebAssembly's 4 GiB
    (in strips; the whole image at once needed more), and agrees with the engine there."""
    from stereodeploy.data.datasets import list_frames, load_frame
    from stereodeploy.data.io import read_pfm
    from stereodeploy.deploy.export_matcher import export_matcher
    from stereodeploy.deploy.serve import make_server
    from stereodeploy.engine.matcher import StereoMatcher
    from stereodeploy.engine.shipped import default_model_path
    from stereodeploy.study.evaluate import error_rate

    node, chromium = shutil.which("node"), shutil.which("chromium")
    require(node is not None, "node")
    require(chromium is not None, "chromium (Debian package)")
    require((EXAMPLES / "web" / "node_modules" / "puppeteer-core").is_dir(), "examples/web/node_modules")
    frame = list_frames(shared_data / "kitti2015")[0]
    sample = load_frame(frame)
    model = export_matcher(None, tmp_path / "kitti.onnx", max_disp=228, postprocess="full", preset="kitti2015").path
    server = make_server(0, model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = tmp_path / "disp.pfm"
        run = subprocess.run([node, str(EXAMPLES / "web" / "test" / "drive.mjs"), "--chromium", chromium,
                              "--url", f"http://127.0.0.1:{server.server_address[1]}/", "--left", str(frame.left),
                              "--right", str(frame.right), "--out", str(out), "--timeout", "1500"],
                             check=False, capture_output=True, text=True, timeout=1600)
    finally:
        server.shutdown()
        server.server_close()
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1])["status"].startswith("1242x375: ")
    ours = read_pfm(out)
    engine = StereoMatcher.from_file(default_model_path(), max_disp=228, postprocess="full",
                                     sgm_preset="kitti2015")(sample.left, sample.right)
    assert abs(error_rate(ours, sample.disp) - error_rate(engine, sample.disp)) <= 0.3
    assert np.mean(np.abs(ours - engine) > 0.5) < 0.05
