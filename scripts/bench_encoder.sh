#!/usr/bin/env bash
# `make bench-encoder`: Candle (benches/encoder.rs) and PyTorch (benches/encoder_torch.py) side
# by side on this CPU — forward 32 × 128, train step 32 + 32 × 128, train step at the shape of
# real review pairs (32 × 256 padded + 32 × 110), encode 2,000 item texts —
# at 1 thread and at all cores, each part in its own process (so its peak RSS is its own), plus
# Candle with glibc's malloc defaults for forward and train step (the allocator's "before").
# Prints a Markdown table; the raw lines go to $CARGO_TARGET_DIR/bench-data/encoder_results.jsonl.
#
# PyTorch comes from a venv under ~/.cache/recsys/pyref (made here when missing: torch 2.11,
# transformers, sentence-transformers from PyPI; a few GB). BENCH_THREADS overrides "1 and all".
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/recsys/target}"
PYREF="${PYREF:-$HOME/.cache/recsys/pyref}"
PY="$PYREF/bin/python"
if ! "$PY" -c "import torch, transformers, sentence_transformers" 2>/dev/null; then
  echo "bench-encoder: installing PyTorch into $PYREF (once)" >&2
  python3 -m venv "$PYREF"
  "$PY" -m pip install --quiet torch==2.11.0 transformers==5.24.0 sentence-transformers==6.2.0
fi
out="$CARGO_TARGET_DIR/bench-data/encoder_results.jsonl"
mkdir -p "$(dirname "$out")"
: > "$out"
cargo bench --bench encoder --no-run 2>&1 | tail -1 >&2
threads="${BENCH_THREADS:-1 $(nproc)}"
run() { # side threads part [env...]
  local side=$1 t=$2 part=$3; shift 3
  echo "bench-encoder: $side, $t thread(s), $part $*" >&2
  if [ "$side" = candle ]; then
    # all cores: the program's own default (RAYON_NUM_THREADS unset), as users run it
    local threads_env=(RAYON_NUM_THREADS="$t")
    [ "$t" = "$(nproc)" ] && threads_env=(-u RAYON_NUM_THREADS)
    env "${threads_env[@]}" "$@" cargo bench -q --bench encoder -- "$part" 2>/dev/null | grep '^RESULT ' | cut -c8- >> "$out"
  else
    env "$@" OMP_NUM_THREADS="$t" "$PY" benches/encoder_torch.py --threads "$t" "$part" 2>/dev/null | grep '^RESULT ' | cut -c8- >> "$out"
  fi
}
for t in $threads; do
  for part in forward train_step train_step_long encode; do
    run candle "$t" "$part"
    run pytorch "$t" "$part"
  done
  for part in forward train_step; do
    run candle "$t" "$part" RECSYS_MALLOC_DEFAULTS=1
  done
done
python3 - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def get(side, part, t, defaults=False):
    for r in rows:
        if r["side"] == side and r["part"] == part and r["threads"] == t and r.get("malloc_defaults", False) == defaults:
            return r
torch_v = next((r["torch"] for r in rows if r["side"] == "pytorch"), "?")
print(f"| part | threads | Candle | PyTorch {torch_v} | Candle / PyTorch time | Candle, glibc malloc defaults | peak RSS Candle / PyTorch |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for t in sorted({r["threads"] for r in rows}):
    for part, what in [("forward", "forward 32 × 128"), ("train_step", "train step 32 + 32 × 128 (fwd + bwd)"),
                       ("train_step_long", "train step 32 × 256 (padded) + 32 × 110"), ("encode", "encode 2,000 item texts")]:
        c, p, d = get("candle", part, t), get("pytorch", part, t), get("candle", part, t, True)
        if not c or not p:
            continue
        fmt = (lambda r: f"{r['texts_per_s']:.1f} texts/s") if part == "encode" else (lambda r: f"{r['median_s']*1000:.0f} ms")
        print(f"| {what} | {t} | {fmt(c)} | {fmt(p)} | {c['median_s']/p['median_s']:.2f} × | {fmt(d) if d else '-'} | "
              f"{c['peak_rss_mb']/1024:.2f} / {p['peak_rss_mb']/1024:.2f} GB |")
EOF
