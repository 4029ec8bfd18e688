#!/usr/bin/env bash
# Brings the ONNX Runtime shared library that the `ort` feature loads at run time into the
# git-ignored folder target/onnxruntime/, from the pinned PyPI wheel (no build-time download):
#   target/onnxruntime/libonnxruntime.so.1.32.0   from onnxruntime==1.32.0 (cp311, manylinux
#                                                  x86_64), sha256-checked
#   target/onnxruntime/libonnxruntime.so          symlink to it (the name corestream looks for)
# The library needs only libstdc++ and libc. Idempotent: an extracted library is kept.
# Needs python3 with pip. Prints the library's path on stdout (progress goes to stderr).
set -euo pipefail
cd "$(dirname "$0")/.."

version=1.32.0
wheel=onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl
sha256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
dir=target/onnxruntime
lib="$dir/libonnxruntime.so.$version"

if [ ! -s "$lib" ]; then
    echo "fetching onnxruntime==$version (PyPI wheel) into $dir" >&2
    mkdir -p "$dir"
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # Platform flags pin the cp311 manylinux x86_64 wheel whatever python3 runs pip.
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux_2_28_x86_64 \
        --dest "$work" "onnxruntime==$version" >&2
    if [ ! -f "$work/$wheel" ]; then
        echo "error: pip did not download $wheel (got: $(ls "$work"))" >&2
        exit 1
    fi
    got="$(sha256sum "$work/$wheel" | cut -d' ' -f1)"
    if [ "$got" != "$sha256" ]; then
        echo "error: $wheel has sha256 $got, expected $sha256" >&2
        exit 1
    fi
    python3 - "$work/$wheel" "onnxruntime/capi/libonnxruntime.so.$version" "$lib" <<'PY'
import os, shutil, sys, zipfile
archive, member, dest = sys.argv[1:]
with zipfile.ZipFile(archive) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
os.replace(dest + ".part", dest)
PY
fi
ln -sfn "libonnxruntime.so.$version" "$dir/libonnxruntime.so"
echo "$PWD/$dir/libonnxruntime.so"
