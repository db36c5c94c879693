#!/usr/bin/env bash
# `make test-compose`: the platform as containers, end to end, on this machine. Installs Docker
# Engine and Compose when missing and starts dockerd (scripts/docker_setup.sh), picks the base
# and PostgreSQL images (official ones if they can be pulled, else made from Debian's packages:
# scripts/docker_base.sh), then scripts/compose_e2e.py builds, starts the shared-nothing setup
# (PostgreSQL, SeaweedFS as S3, three workers: docker-compose.s3.yml), uploads, kills a worker
# mid-job, and tears everything down. It fails (never skips) when Docker cannot be made to run:
# `make test` ends with it, and CI runs that.
# Its traffic: the registries (build), then 127.0.0.1 and the containers' own network only.
set -euo pipefail
cd "$(dirname "$0")/.."

timed() {  # timed <name> <command...>: run it, print how long it took
  local start=$SECONDS
  "${@:2}"
  echo "compose-test: $1: $((SECONDS - start)) s"
}

timed "engine and compose" bash scripts/docker_setup.sh
start=$SECONDS
BASE_IMAGE=${BASE_IMAGE:-$(bash scripts/docker_base.sh)}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-$(BASE_IMAGE=$BASE_IMAGE bash scripts/docker_base.sh --postgres)}
echo "compose-test: base images ($BASE_IMAGE, $POSTGRES_IMAGE): $((SECONDS - start)) s"
# The host's CA bundle: trusted by the build where the network intercepts TLS.
CA_BUNDLE=${CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
[ -f "$CA_BUNDLE" ] || CA_BUNDLE=/dev/null
export BASE_IMAGE POSTGRES_IMAGE CA_BUNDLE
exec python3 scripts/compose_e2e.py
