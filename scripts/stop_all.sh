#!/usr/bin/env bash
# Stop what scripts/start_all.sh started: the launcher stops every service (and their ffmpeg).
set -euo pipefail
cd "$(dirname "$0")/.."
STORAGE=${STORAGE_DIR:-shared_storage}
PIDFILE="$STORAGE/run/platform.pid"
[ -f "$PIDFILE" ] || { echo "not running (no $PIDFILE)"; exit 0; }
pid=$(cat "$PIDFILE")
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
fi
rm -f "$PIDFILE"
echo "platform stopped"
