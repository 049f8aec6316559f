#!/usr/bin/env bash
# Start or stop the local llama-server (see scripts/llm_setup.sh / `make llm`) on loopback.
#   scripts/llm_server.sh start [SLOTS]   # prints the base URL to pass as --url; default 4 slots
#   scripts/llm_server.sh stop
# Then: recsys etl keywords --backend openai --model smollm2 --url URL --concurrency SLOTS
set -euo pipefail
DIR="${RECSYS_LLM_DIR:-$HOME/.cache/recsys/llm}"
BIN="$DIR/bin/llama-server"
MODEL="$DIR/models/SmolLM2-135M-Instruct.Q4_1.gguf"
PIDFILE="$DIR/server.pid"

case "${1:-}" in
  start)
    slots="${2:-4}"
    [ -x "$BIN" ] && [ -f "$MODEL" ] || { echo "no llama-server or model in $DIR: run \`make llm\`" >&2; exit 1; }
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
      echo "already running (pid $(cat "$PIDFILE")): $(cat "$DIR/server.url")"; exit 0
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # 4,096 tokens of context per slot
    nohup "$BIN" -m "$MODEL" --host 127.0.0.1 --port "$port" -np "$slots" -c $((4096 * slots)) \
      -t "$(nproc)" --alias smollm2 >"$DIR/server.log" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 600); do
      if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
        echo "http://127.0.0.1:$port/v1" | tee "$DIR/server.url"; exit 0
      fi
      kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -20 "$DIR/server.log" >&2; exit 1; }
      sleep 0.2
    done
    echo "llama-server did not become ready; see $DIR/server.log" >&2; exit 1 ;;
  stop)
    if [ -f "$PIDFILE" ]; then kill "$(cat "$PIDFILE")" 2>/dev/null || true; rm -f "$PIDFILE" "$DIR/server.url"; fi ;;
  *) echo "usage: $0 start [SLOTS] | stop" >&2; exit 2 ;;
esac
