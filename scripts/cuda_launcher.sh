#!/usr/bin/env bash
# bin/recsys of the CUDA bundle (`make build-cuda`): runs bin/recsys.bin with the CUDA libraries
# it was linked against (libcuda.so.1, libcublas.so.13, libcublasLt.so.13, libcurand.so.10,
# libnvrtc.so.13) found on this machine, in this order:
#   $RECSYS_CUDA_LIBS (directories, colon-separated), $LD_LIBRARY_PATH, the dynamic linker's cache
#   (ldconfig -p: the NVIDIA driver's libcuda), $CUDA_HOME/lib64 and /usr/local/cuda/lib64, and
#   the nvidia-* wheels of the first python3 that has them (a PyTorch cu13 install ships them);
# then the bundle's lib/ (libxgboost, libcudart) and, last, lib/stubs for whatever is still
# missing: the program starts everywhere, `--device cpu` works, and `--device cuda` on a machine
# without a driver or GPU ends with one sentence saying so.
# RECSYS_CUDA_LIBS_VERBOSE=1 prints where each library was found; RECSYS_CUDA_LDD=1 runs ldd instead.
set -euo pipefail
here="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
libs=(libcuda.so.1 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13)
dirs=()
IFS=: read -r -a cand <<< "${RECSYS_CUDA_LIBS:-}:${LD_LIBRARY_PATH:-}"
cache=$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null || true) | sed -n 's/.*=> \(.*\)\/[^/]*$/\1/p' | sort -u)
for d in $cache "${CUDA_HOME:-/nonexistent}/lib64" /usr/local/cuda/lib64; do cand+=("$d"); done
if command -v python3 >/dev/null 2>&1; then
  while IFS= read -r d; do cand+=("$d"); done < <(python3 - 2>/dev/null <<'EOF' || true
import glob, os
try:
    import nvidia
except Exception:
    raise SystemExit
for root in list(nvidia.__path__):
    for d in sorted(glob.glob(os.path.join(root, "*", "lib"))):
        print(d)
EOF
)
fi
report=""
for lib in "${libs[@]}"; do
  found=""
  for d in "${cand[@]}"; do
    [ -n "$d" ] && [ -e "$d/$lib" ] && { found="$d"; break; }
  done
  if [ -n "$found" ]; then
    case ":${dirs[*]:-}:" in *" $found "*|*":$found "*|*" $found:"*|":$found:") ;; *) dirs+=("$found") ;; esac
    report+="  $lib: $found"$'\n'
  else
    report+="  $lib: stub (not found on this machine)"$'\n'
  fi
done
path=""
for d in "${dirs[@]}"; do path+="$d:"; done
export LD_LIBRARY_PATH="${path}$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}:$here/lib/stubs"
[ "${RECSYS_CUDA_LIBS_VERBOSE:-0}" = 1 ] && printf 'recsys (CUDA bundle): libraries\n%s' "$report" >&2
# RECSYS_CUDA_LDD=1: ldd of the binary under this library path instead of running it
[ "${RECSYS_CUDA_LDD:-0}" = 1 ] && exec ldd "$here/bin/recsys.bin"
exec "$here/bin/recsys.bin" "$@"
