"""``stereodeploy serve-demo``: the browser demo (``examples/web``) on localhost, with the cross-origin isolation
headers that onnxruntime-web needs for WebAssembly threads (``SharedArrayBuffer``):

    Cross-Origin-Opener-Policy: same-origin
    Cross-Origin-Embedder-Policy: require-corp

Paths: ``/`` the page, ``/ort/`` onnxruntime-web's ``dist`` folder (from ``examples/web/node_modules``),
``/model.onnx`` and ``/model.onnx.json`` the matcher file and its sidecar. Standard library only.
"""

from __future__ import annotations

import functools
import http.server
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from stereodeploy.errors import UserError

HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def web_root() -> Path:
    """The page's folder in a clone of the repository."""
    return Path(__file__).resolve().parents[2] / "examples" / "web"


class DemoHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with the isolation headers; ``/ort/`` and ``/model.onnx[.json]`` mapped to their files."""

    extensions_map: ClassVar[dict[str, str]] = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript",
                      ".onnx": "application/octet-stream", ".json": "application/json"}

    def __init__(self, *args, root: Path, ort_dist: Path, model: Path | None, **kwargs):  # type: ignore[no-untyped-def]
        self.ort_dist, self.model = ort_dist, model
        super().__init__(*args, directory=str(root), **kwargs)

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if self.model is not None and clean == "/model.onnx":
            return str(self.model)
        if self.model is not None and clean == "/model.onnx.json":
            return str(self.model.with_name(self.model.name + ".json"))
        if clean.startswith("/ort/"):
            target = (self.ort_dist / clean[len("/ort/"):]).resolve()
            return str(target) if target.is_relative_to(self.ort_dist.resolve()) else str(self.ort_dist / "missing")
        return super().translate_path(path)

    def end_headers(self) -> None:
        for key, value in HEADERS.items():
            self.send_header(key, value)
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # type: ignore[no-untyped-def]
        pass  # quiet: the command prints the address, the browser shows the rest


def make_server(port: int = 8000, model: Path | None = None, root: Path | None = None
                ) -> http.server.ThreadingHTTPServer:
    """A server on 127.0.0.1:``port`` (0: a free one), not yet serving; UserError if a piece is missing."""
    root = root or web_root()
    if not (root / "index.html").is_file():
        raise UserError(f"the demo page is not at {root}: serve-demo runs from a clone of the repository")
    ort_dist = root / "node_modules" / "onnxruntime-web" / "dist"
    if not ort_dist.is_dir():
        raise UserError(f"onnxruntime-web is not installed in {root}: run `npm ci` there (or examples/install.sh)")
    if model is not None and not Path(model).is_file():
        raise UserError(f"{model} does not exist: write one with `stereodeploy export-matcher --out {model}`")
    handler = functools.partial(DemoHandler, root=root, ort_dist=ort_dist,
                                model=Path(model).resolve() if model is not None else None)
    try:
        return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as err:
        raise UserError(f"cannot listen on 127.0.0.1:{port} ({err.strerror}): pass another --port") from None


def serve_demo(port: int = 8000, model: Path | None = None, announce: Callable[[str], object] = print) -> None:
    """Serve until interrupted."""
    server = make_server(port, model)
    host, bound = server.server_address[:2]
    announce(f"demo at http://{host}:{bound}/ (cross-origin isolated: wasm threads on); Ctrl+C stops it")
    if model is None:
        announce("no --model given: pick a matcher .onnx file in the page")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
