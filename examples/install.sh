#!/usr/bin/env bash
# Install what the example clients and their tests need: the npm packages of examples/node and examples/web
# (exact versions from their package-lock.json files) and, for the browser test, Debian's chromium.
#
#   bash examples/install.sh            # npm packages, and chromium if apt-get is there and it is missing
#   bash examples/install.sh --no-apt   # npm packages only
#
# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's package already holds the CPU binaries for Linux, macOS and
# Windows (bin/napi-v6/<os>/<arch>/); its install script would only download the CUDA / TensorRT providers,
# which machines without internet cannot fetch and the examples do not use.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
(cd "$here/node" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund)
(cd "$here/web" && npm ci --no-audit --no-fund)
if [[ "${1:-}" != "--no-apt" ]] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
