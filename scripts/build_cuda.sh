#!/usr/bin/env bash
# `make build-cuda`: the CUDA build of recsys on a machine without a GPU, and the bundle that
# carries it to one.
#   1. a CUDA 13.0 toolkit (nvcc, ptxas, cicc, headers, libcudart) from PyPI wheels into
#      $RECSYS_CUDA_HOME (default ~/.cache/recsys/cuda-13.0), outside the clone, once;
#   2. link stubs for the libraries cudarc links (libcuda, cuBLAS, cuBLASLt, cuRAND, NVRTC:
#      scripts/cuda_stubs.py) into its lib/stubs;
#   3. `cargo build --release --features cuda` into its own target dir ($CUDA_TARGET_DIR, default
#      ~/.cache/recsys/target-cuda), so the CPU build is neither rebuilt nor overwritten;
#   4. dist/recsys-cuda-<version>-sm<cap>.tar.xz: the stripped binary, bin/recsys (a launcher that
#      puts the machine's CUDA libraries ahead of the stubs), libxgboost.so, libcudart.so.13, the
#      stubs. Its size is printed; over 60 MiB is an error (the GPU machine takes 64 MiB in all).
# `scripts/build_cuda.sh --lint` runs `cargo clippy --features cuda` with the same toolkit instead.
# CUDA_COMPUTE_CAP (default 90: H100 / H200) picks the PTX / SASS target of candle's kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA="${RECSYS_CUDA_HOME:-$HOME/.cache/recsys/cuda-13.0}"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$HOME/.cache/recsys/target-cuda}"
bash "$(dirname "$0")/target_guard.sh"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13000
# Exact versions: a newer nvcc writes PTX that a 13.0 driver refuses.
WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
MAX_BYTES=$((60 * 1024 * 1024))
t0=$(date +%s)

if [ ! -x "$CUDA/bin/nvcc" ]; then
  echo "build-cuda: installing the CUDA 13.0 toolkit from PyPI wheels into $CUDA (once)" >&2
  tmp="$CUDA.tmp-$$"
  rm -rf "$tmp"
  python3 -m pip install --quiet --no-deps --disable-pip-version-check --target "$tmp/py" "${WHEELS[@]}"
  mv "$tmp/py/nvidia/cu13" "$tmp/cuda"
  ln -sf libcudart.so.13 "$tmp/cuda/lib/libcudart.so"
  rm -rf "$CUDA" && mv "$tmp/cuda" "$CUDA" && rm -rf "$tmp"
fi
"$CUDA/bin/nvcc" --version | grep -q "release 13.0" || {
  echo "build-cuda: $CUDA/bin/nvcc is not CUDA 13.0; remove $CUDA and run again" >&2; exit 1; }

# The stubs, from the symbol lists of the cudarc version in Cargo.lock.
cudarc_src=$(cargo metadata --format-version 1 --features cuda 2>/dev/null | python3 -c '
import json, sys, os
m = json.load(sys.stdin)
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "cudarc"))')
python3 scripts/cuda_stubs.py "$cudarc_src" "$CUDA/lib/stubs" >&2
export CUDA_HOME="$CUDA" PATH="$CUDA/bin:$PATH"

if [ "${1:-}" = "--lint" ]; then
  cargo clippy --release --features cuda --all-targets -- -D warnings
  exit 0
fi

echo "build-cuda: cargo build --release --features cuda (target dir $CARGO_TARGET_DIR, sm_$CUDA_COMPUTE_CAP)" >&2
cargo build --release --features cuda --bin recsys

version=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
name="recsys-cuda-$version-sm$CUDA_COMPUTE_CAP"
stage="dist/$name"
rm -rf "$stage" && mkdir -p "$stage/bin" "$stage/lib/stubs"
strip -o "$stage/bin/recsys.bin" "$CARGO_TARGET_DIR/release/recsys"
xgb=$(ls -t "$CARGO_TARGET_DIR"/release/build/xgboost_lib-sys-*/out/lib/libxgboost.so | head -1)
strip -o "$stage/lib/$(basename "$(readlink -f "$xgb")")" "$(readlink -f "$xgb")"
[ -e "$stage/lib/libxgboost.so" ] || ln -s "$(basename "$(readlink -f "$xgb")")" "$stage/lib/libxgboost.so"
cp "$CUDA/lib/libcudart.so.13" "$stage/lib/"
cp -P "$CUDA"/lib/stubs/lib*.so* "$stage/lib/stubs/"
cp scripts/cuda_launcher.sh "$stage/bin/recsys"
chmod +x "$stage/bin/recsys"
cat > "$stage/BUILD.txt" <<EOF
recsys $version, --features cuda, built $(date -u +%Y-%m-%dT%H:%M:%SZ) from $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)')
CUDA toolkit 13.0 (nvcc $("$CUDA/bin/nvcc" --version | grep -o 'V[0-9.]*' | tr -d V)), kernels for sm_$CUDA_COMPUTE_CAP; needs an NVIDIA driver for CUDA >= 13.0
Run bin/recsys (it finds the CUDA libraries: see its header); lib/stubs only stand in for missing ones.
EOF
# The bundle starts on this machine (with the stubs) and says why there is no GPU.
"$stage/bin/recsys" --version >&2
tarball="dist/$name.tar.xz"
tar -C dist -cf - "$name" | xz -T0 -9 > "$tarball.tmp-$$"
mv "$tarball.tmp-$$" "$tarball"
bytes=$(stat -c %s "$tarball")
python3 -c 'import sys; t, b, bb, s = sys.argv[1:]; print(f"build-cuda: {t}: {int(b) / 2**20:.1f} MiB (binary {int(bb) / 2**20:.0f} MiB stripped) in {s}s")' \
  "$tarball" "$bytes" "$(stat -c %s "$stage/bin/recsys.bin")" "$(( $(date +%s) - t0 ))"
if [ "$bytes" -gt "$MAX_BYTES" ]; then
  echo "build-cuda: the bundle is over 60 MiB; it would not travel to the GPU machine" >&2
  exit 1
fi
