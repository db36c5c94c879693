#!/usr/bin/env bash
# Start the platform in the background (installing first when needed) and return once every
# service's /health answers. Logs: shared_storage/logs/platform.log. Stop: scripts/stop_all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STORAGE=${STORAGE_DIR:-shared_storage}
PIDFILE="$STORAGE/run/platform.pid"
mkdir -p "$STORAGE/logs" "$STORAGE/run"

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "already running (pid $(cat "$PIDFILE")); scripts/stop_all.sh stops it"; exit 0
fi
bash scripts/install.sh
nohup "$VENV/bin/python" -m services.launcher >>"$STORAGE/logs/platform.log" 2>&1 </dev/null &
echo $! >"$PIDFILE"

# The launcher's own health check (no curl needed): waits up to 60 s for every /health.
if "$VENV/bin/python" -m services.launcher --wait 60; then
  echo "platform running (pid $(cat "$PIDFILE")): http://127.0.0.1:${GATEWAY_PORT:-8000}/"
  exit 0
fi
echo "not healthy after 60 s; see $STORAGE/logs/platform.log" >&2
exit 1
