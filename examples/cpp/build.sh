#!/usr/bin/env bash
# Build examples/cpp/build/yuzu_onnx_host with the system g++ (C++17).
#
# Headers: $ORT_INCLUDE_DIR (the folder holding onnxruntime_cxx_api.h), by default the trixie
#          libonnxruntime-dev unpacked by tools/install_host_deps.sh into build/deps/.
# Library: $ORT_LIB_DIR (holding libonnxruntime.so*), by default onnxruntime/capi/ of the
#          onnxruntime Python wheel found by $PYTHON (default: python3).
# The binary gets an rpath, so it runs without LD_LIBRARY_PATH.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="$HERE/build"
PY="${PYTHON:-python3}"
mkdir -p "$BUILD"

INC="${ORT_INCLUDE_DIR:-$BUILD/deps/onnxruntime-dev/usr/include/onnxruntime}"
if [ ! -f "$INC/onnxruntime_cxx_api.h" ]; then
  echo "error: onnxruntime_cxx_api.h not found in $INC" >&2
  echo "       run tools/install_host_deps.sh, or set ORT_INCLUDE_DIR" >&2
  exit 2
fi
if [ -z "${ORT_LIB_DIR:-}" ]; then
  ORT_LIB_DIR="$("$PY" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')"
fi
LIB="$(ls "$ORT_LIB_DIR"/libonnxruntime.so* 2>/dev/null | grep -v providers | sort | tail -1 || true)"
if [ -z "$LIB" ]; then
  echo "error: no libonnxruntime.so* in $ORT_LIB_DIR (set ORT_LIB_DIR)" >&2
  exit 2
fi
LIB="$(readlink -f "$LIB")"

# The headers' C API version must not be newer than what the library offers.
hdr_api="$(sed -n 's/^#define ORT_API_VERSION \([0-9]*\).*/\1/p' "$INC/onnxruntime_c_api.h")"
lib_ver="$(basename "$LIB" | sed -n 's/^libonnxruntime\.so\.\([0-9][0-9.]*\)$/\1/p')"
if [ -n "$lib_ver" ]; then
  lib_api="$(echo "$lib_ver" | cut -d. -f2)"
  if [ "$hdr_api" -gt "$lib_api" ]; then
    echo "error: headers use ORT_API_VERSION $hdr_api but $LIB offers only API $lib_api" >&2
    exit 2
  fi
  echo "headers: ORT_API_VERSION $hdr_api ($INC); library: $lib_ver ($LIB)"
else
  echo "headers: ORT_API_VERSION $hdr_api ($INC); library: $LIB (version unknown, not checked)"
fi

# The wheel ships libonnxruntime.so.1.X.Y with SONAME libonnxruntime.so.1 but no such link:
# make the links in build/lib and put both folders in the rpath.
soname="$(objdump -p "$LIB" 2>/dev/null | sed -n 's/^ *SONAME *//p' || true)"
mkdir -p "$BUILD/lib"
ln -sf "$LIB" "$BUILD/lib/libonnxruntime.so"
[ -n "$soname" ] && ln -sf "$LIB" "$BUILD/lib/$soname"

set -x
g++ -std=c++17 -O2 -Wall -Wextra -o "$BUILD/yuzu_onnx_host" "$HERE/main.cpp" \
  -I"$INC" -L"$BUILD/lib" -lonnxruntime \
  -Wl,-rpath,"$BUILD/lib" -Wl,-rpath,"$(dirname "$LIB")"
