#!/usr/bin/env bash
# Install everything the platform needs, idempotently: system packages when missing (ffmpeg,
# Python venv support, Node.js/npm), the Python virtual environment and the page's npm packages.
#   scripts/install.sh          runtime
#   scripts/install.sh --test   runtime + what the tests need
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
WANT_TEST=0
[ "${1:-}" = "--test" ] && WANT_TEST=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }

apt_install() {
  command -v apt-get >/dev/null || return 1
  [ -n "${APT_UPDATED:-}" ] || { as_root apt-get update -qq; APT_UPDATED=1; }
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

system_package() {  # system_package <command> <debian package> <brew formula>
  command -v "$1" >/dev/null && return 0
  echo "installing $2 (no '$1' on PATH)"
  apt_install "$2" || { command -v brew >/dev/null && brew install "$3"; } || {
    echo "please install $2 ($1) with your package manager" >&2; exit 1; }
}

system_package ffmpeg ffmpeg ffmpeg
# The browser tests drive Debian's Chromium through Playwright (no browser download).
[ "$WANT_TEST" = 1 ] && system_package chromium chromium chromium
system_package ffprobe ffmpeg ffmpeg
system_package node nodejs node
system_package npm npm node

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
fi
stamp="$VENV/.installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)-$WANT_TEST"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  if [ "$WANT_TEST" = 1 ]; then "$VENV/bin/python" -m pip install -q -e '.[test]'
  else "$VENV/bin/python" -m pip install -q -e .; fi
  rm -f "$VENV"/.installed-*; touch "$stamp"
fi

if [ ! -f frontend/node_modules/.package-lock.json ] || [ frontend/package-lock.json -nt frontend/node_modules/.package-lock.json ]; then
  (cd frontend && npm ci --no-audit --no-fund --loglevel=error)
fi
# The tus tests drive tus-js-client (npm) under Node.
tus_node=tests/tus_node
if [ "$WANT_TEST" = 1 ] && { [ ! -f $tus_node/node_modules/.package-lock.json ] ||
  [ $tus_node/package-lock.json -nt $tus_node/node_modules/.package-lock.json ]; }; then
  (cd $tus_node && npm ci --no-audit --no-fund --loglevel=error)
fi
# The cross-origin browser tests serve players (hls.js, Shaka Player, video.js) and Uppy from npm.
players=tests/browser/players
if [ "$WANT_TEST" = 1 ] && { [ ! -f $players/node_modules/.package-lock.json ] ||
  [ $players/package-lock.json -nt $players/node_modules/.package-lock.json ]; }; then
  (cd $players && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "install: ok"
