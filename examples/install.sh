#!/usr/bin/env bash
# Install what the example clients and their tests need: the npm packages of examples/node and examples/web
# (exact versions from their package-lock.json files), for the browser test Debian's chromium, and for the C++
# example onnxruntime's C/C++ headers (Debian's libonnxruntime-dev, into examples/cpp/onnxruntime/include) with a
# compiler, CMake and libpng. The C++ example links the onnxruntime library that onnxruntime-node's npm package
# ships (examples/cpp/onnxruntime/lib points at it), so every client runs the same onnxruntime build.
#
#   bash examples/install.sh            # all of it (apt-get for what is missing)
#   bash examples/install.sh --no-apt   # npm packages only
#
# ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's package already holds the CPU binaries for Linux, macOS and
# Windows (bin/napi-v6/<os>/<arch>/); its install script would only download the CUDA / TensorRT providers,
# which machines without internet cannot fetch and the examples do not use.
#
# The headers: Debian 12 has no onnxruntime package, Debian 13 (trixie) has libonnxruntime-dev 1.21 (MIT,
# /usr/share/doc/libonnxruntime-dev/copyright in the package). It is fetched with apt-get download through a
# private list of trixie's index (under examples/cpp/onnxruntime/apt), so the system's sources stay as they are,
# and unpacked, not installed: only its headers are used, against the newer library of the npm package.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
(cd "$here/node" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund)
(cd "$here/web" && npm ci --no-audit --no-fund)
[[ "${1:-}" == "--no-apt" ]] && exit 0
command -v apt-get >/dev/null 2>&1 || { echo "no apt-get: install chromium, g++, cmake, libpng and onnxruntime's headers yourself" >&2; exit 0; }

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
[[ -f /usr/include/png.h ]] || missing+=(libpng-dev)
if (( ${#missing[@]} )); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

ort="$here/cpp/onnxruntime"
if [[ ! -f "$ort/include/onnxruntime_cxx_api.h" ]]; then
  apt_dir="$ort/apt"
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$ort/include"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    > "$apt_dir/sources.list"
  opts=(-o "Dir::Etc::sourcelist=$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache" -o APT::Sandbox::User=root)
  apt-get -qq "${opts[@]}" update
  (cd "$apt_dir" && apt-get -qq "${opts[@]}" download libonnxruntime-dev)
  dpkg-deb -x "$apt_dir"/libonnxruntime-dev_*.deb "$apt_dir/unpacked"
  cp "$apt_dir"/unpacked/usr/include/onnxruntime/*.h "$ort/include/"
  cp "$apt_dir/unpacked/usr/share/doc/libonnxruntime-dev/copyright" "$ort/include/COPYRIGHT.debian"
  rm -rf "$apt_dir"
fi
mkdir -p "$ort/lib"
ln -sf "$here/node/node_modules/onnxruntime-node/bin/napi-v6/linux/x64/libonnxruntime.so.1" "$ort/lib/libonnxruntime.so.1"
ln -sf libonnxruntime.so.1 "$ort/lib/libonnxruntime.so"
