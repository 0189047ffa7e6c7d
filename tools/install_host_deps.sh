#!/usr/bin/env bash
# Install what the host examples and tests/test_hosts.py need, on Debian 12 (bookworm), as root.
#
#   * g++                        (examples/cpp)
#   * ONNX Runtime C/C++ headers: Debian 12 has none, so libonnxruntime-dev is downloaded from
#     Debian 13 (trixie) with a private apt state (the system's sources are not touched) and
#     unpacked with `dpkg -x` into $YUZU_DEPS_DIR (ignored). Only the headers are used; the
#     binary links the libonnxruntime.so shipped in the onnxruntime Python wheel.
#   * onnxruntime-node           (examples/node/node_modules, ONNXRUNTIME_NODE_INSTALL=skip: CPU only)
#   * onnxruntime-web dist files (examples/web/vendor/, from `npm pack`, no CDN at run time)
#   * chromium + chromium-driver (Debian packages) and selenium (PyPI) for the browser test
#
# Idempotent: every step is skipped when already done, so a second run takes about a second.
# Environment: PYTHON (python that runs the tests, default: python3), YUZU_DEPS_DIR,
# ORT_WEB_VERSION, YUZU_SKIP_BROWSER=1 (no chromium/selenium).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${YUZU_DEPS_DIR:-$REPO/examples/cpp/build/deps}"
PY="${PYTHON:-python3}"
ORT_WEB_VERSION="${ORT_WEB_VERSION:-1.30.0}"
export DEBIAN_FRONTEND=noninteractive
log() { echo "[install_host_deps] $*"; }

# ---- 1. Debian packages ---------------------------------------------------------------------
pkgs=()
command -v g++ >/dev/null || pkgs+=(g++)
command -v node >/dev/null || pkgs+=(nodejs)
command -v npm >/dev/null || pkgs+=(npm)
command -v xz >/dev/null || pkgs+=(xz-utils)
if [ "${YUZU_SKIP_BROWSER:-0}" != 1 ]; then
  command -v chromium >/dev/null || pkgs+=(chromium)
  command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  log "apt-get install ${pkgs[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

# ---- 2. ONNX Runtime headers from trixie's libonnxruntime-dev --------------------------------
HDR="$DEPS/onnxruntime-dev/usr/include/onnxruntime/onnxruntime_cxx_api.h"
if [ ! -f "$HDR" ]; then
  log "downloading libonnxruntime-dev (trixie) for the ONNX Runtime headers"
  T="$DEPS/apt-trixie"
  mkdir -p "$T/lists/partial" "$T/cache/archives/partial" "$T/etc" "$T/dl"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    >"$T/etc/sources.list"
  apt_t=(-o "Dir::Etc::SourceList=$T/etc/sources.list" -o "Dir::Etc::SourceParts=$T/etc/none"
         -o "Dir::State::Lists=$T/lists" -o "Dir::Cache=$T/cache" -o "Acquire::Languages=none"
         -o "APT::Architecture=amd64" -o "APT::Architectures=amd64" -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")
  apt-get "${apt_t[@]}" update -qq
  (cd "$T/dl" && rm -f ./*.deb && apt-get "${apt_t[@]}" download libonnxruntime-dev >/dev/null)
  deb="$(ls "$T"/dl/libonnxruntime-dev_*.deb)"
  rm -rf "$DEPS/onnxruntime-dev"
  dpkg -x "$deb" "$DEPS/onnxruntime-dev"
  basename "$deb" >"$DEPS/onnxruntime-dev/SOURCE_DEB"
  rm -rf "$T"  # the trixie lists (tens of MB) are not needed any more
  test -f "$HDR"
fi
log "ONNX Runtime headers: $(cat "$DEPS/onnxruntime-dev/SOURCE_DEB" 2>/dev/null || echo "$HDR")"

# ---- 3. onnxruntime-node ----------------------------------------------------------------------
NODE_DIR="$REPO/examples/node"
want_node="$(node -p "require('$NODE_DIR/package.json').dependencies['onnxruntime-node']")"
have_node="$(node -p "try{require('$NODE_DIR/node_modules/onnxruntime-node/package.json').version}catch(e){''}")"
if [ "$have_node" != "$want_node" ]; then
  log "npm ci in examples/node (onnxruntime-node $want_node, ONNXRUNTIME_NODE_INSTALL=skip)"
  (cd "$NODE_DIR" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error)
fi

# ---- 4. onnxruntime-web into examples/web/vendor ---------------------------------------------
VENDOR="$REPO/examples/web/vendor"
if [ "$(cat "$VENDOR/VERSION" 2>/dev/null)" != "$ORT_WEB_VERSION" ]; then
  log "npm pack onnxruntime-web@$ORT_WEB_VERSION -> examples/web/vendor"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "onnxruntime-web@$ORT_WEB_VERSION" >/dev/null && tar -xzf onnxruntime-web-*.tgz)
  rm -rf "$VENDOR" && mkdir -p "$VENDOR"
  # the wasm-only bundle and its (threaded+simd) wasm runtime; nothing else is needed
  cp "$tmp"/package/dist/ort.wasm.min.js "$tmp"/package/dist/ort-wasm-simd-threaded.mjs \
     "$tmp"/package/dist/ort-wasm-simd-threaded.wasm "$VENDOR"/
  cp "$tmp/package/LICENSE" "$VENDOR/LICENSE" 2>/dev/null || true
  echo "$ORT_WEB_VERSION" >"$VENDOR/VERSION"
  rm -rf "$tmp"
fi

# ---- 5. selenium (drives the Debian chromium through chromium-driver) ----------------------
if [ "${YUZU_SKIP_BROWSER:-0}" != 1 ] && ! "$PY" -c "import selenium" 2>/dev/null; then
  log "pip install selenium into $("$PY" -c 'import sys; print(sys.prefix)')"
  "$PY" -m pip install -q --disable-pip-version-check selenium
fi

log "done: g++ $(g++ -dumpfullversion), node $(node --version), onnxruntime-node $want_node," \
  "onnxruntime-web $ORT_WEB_VERSION${YUZU_SKIP_BROWSER:+}, $( (chromium --version 2>/dev/null || echo 'no chromium') | head -1)"
