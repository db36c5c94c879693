#!/usr/bin/env bash
# Run make test's pytest passes in lanes side by side, each lane's passes one after another:
#
#   bash scripts/test_lanes.sh NAME 'COMMAND' [NAME 'COMMAND' ...]
#
# Each COMMAND runs under bash; its output comes out as it is written, every line headed by
# [NAME], and its log is kept whole in $LANE_LOGS/NAME.log (default: a fresh temporary
# folder). The script waits for every lane, says how each ended and how long it took, and
# fails when any lane failed.
#
# Why lanes: one pass keeps this 2-core machine about 74 % busy (it waits on HTTP, on polls,
# on ffmpeg starting and stopping), and the passes share nothing that another pass could
# disturb (each platform of a test has its own ports, storage folder and database, each S3
# pass its own SeaweedFS; the tests that look for processes look for their own platform's).
set -uo pipefail

if (($# == 0 || $# % 2)); then
  echo "usage: $0 NAME 'COMMAND' [NAME 'COMMAND' ...]" >&2
  exit 2
fi
LANE_LOGS=${LANE_LOGS:-$(mktemp -d -t test-lanes.XXXXXX)}
mkdir -p "$LANE_LOGS"

pids=() names=()
started=$(date +%s)
while (($#)); do
  name=$1 command=$2
  shift 2
  case $name in
    *[!A-Za-z0-9_-]* | "") echo "lane names are letters, digits, - and _: $name" >&2; exit 2 ;;
  esac
  log="$LANE_LOGS/$name.log"
  # stdbuf: pytest's progress dots reach the log and the terminal line by line, not in
  # 4 KiB blocks; sed -u heads each line with the lane's name as it arrives.
  (
    stdbuf -oL -eL bash -c "$command" 2>&1 | tee "$log" | sed -u "s/^/[$name] /"
    status=${PIPESTATUS[0]}
    took=$(($(date +%s) - started))
    if ((status == 0)); then
      echo "[$name] lane passed in $((took / 60)) min $((took % 60)) s"
    else
      echo "[$name] lane FAILED (exit $status) after $((took / 60)) min $((took % 60)) s; its whole log: $log"
    fi
    exit "$status"
  ) &
  pids+=("$!") names+=("$name")
done

# A lane's failure scrolls by while the other lane is still running; CI keeps the end of the
# output. So once every lane has ended, say again why each failed lane failed: the assertion
# lines (E ...) and pytest's short summary, or the end of its log when pytest never got there.
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" && continue
  failed=1
  name=${names[$i]} log="$LANE_LOGS/${names[$i]}.log"
  echo "[$name] ---- why lane $name failed (from $log) ----"
  if grep -q "short test summary info" "$log"; then
    grep -E "^E  " "$log" | head -n 40
    # from the last summary: a lane's passes run until one fails, so the last is the failing one
    awk '/short test summary info/ { n = 0 } { kept[++n] = $0 } END { for (i = 1; i <= n && i <= 60; i++) print kept[i] }' "$log"
  else
    tail -n 60 "$log"
  fi | sed "s/^/[$name] /"
done
# Last of all, and alone: the names of the tests that failed, so that the few lines CI keeps
# of the end of the output name them (a server a test left running can log between pytest's
# summary lines).
for i in "${!pids[@]}"; do
  name=${names[$i]} log="$LANE_LOGS/${names[$i]}.log"
  [[ -f $log ]] || continue
  grep -E "^(FAILED|ERROR) tests/" "$log" | head -n 20 | sed "s/^/[$name] failed: /"
done
exit "$failed"
