#!/usr/bin/env bash
# Print the base image to build the platform's images on (the Dockerfile's BASE_IMAGE):
# the official Python image when it is here or can be pulled, otherwise a Debian bookworm
# image made on this machine from Debian's own packages (debootstrap, then `docker import`),
# for networks where the registry cannot be reached. The local image is made once and kept.
# The same for the postgres profile's image: the official one, else Debian's PostgreSQL on it.
#   BASE_IMAGE=$(scripts/docker_base.sh)                 # official if pullable, else local
#   BASE_IMAGE=$(scripts/docker_base.sh --local)         # always the local one
#   POSTGRES_IMAGE=$(scripts/docker_base.sh --postgres)  # postgres:16, else built locally
# Environment: OFFICIAL_BASE, LOCAL_BASE (tag made), OFFICIAL_POSTGRES, LOCAL_POSTGRES,
# DEBIAN_MIRROR, PULL_TIMEOUT (seconds), BASE_IMAGE (for --postgres: the base to build on).
# Progress goes to stderr; stdout is the image name alone.
set -euo pipefail

OFFICIAL_BASE=${OFFICIAL_BASE:-python:3.11-slim-bookworm}
LOCAL_BASE=${LOCAL_BASE:-videoplatform-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
OFFICIAL_POSTGRES=${OFFICIAL_POSTGRES:-postgres:16}
LOCAL_POSTGRES=videoplatform-postgres:bookworm  # docker-compose.yml's postgres-debian
PULL_TIMEOUT=${PULL_TIMEOUT:-60}
# What every image of the platform needs: Python with venv, ffmpeg/ffprobe, the CA bundle.
PACKAGES=(python3 python3-venv ffmpeg ca-certificates)
HERE=$(cd "$(dirname "$0")" && pwd)
say() { echo "docker_base: $*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

here_or_pulled() {  # here_or_pulled <image>: true when it is here, or could be pulled now
  have_image "$1" && return 0
  say "pulling $1"
  timeout "$PULL_TIMEOUT" docker pull -q "$1" >&2 2>/dev/null
}

apt_sources() {  # apt_sources <root>: Debian's suites, so images on this base can apt-get too
  printf 'deb %s %s main\n' "$DEBIAN_MIRROR" bookworm "$DEBIAN_MIRROR" bookworm-updates \
    "${DEBIAN_MIRROR%/debian}/debian-security" bookworm-security >"$1/etc/apt/sources.list"
}

in_root() {  # in_root <root> <command...>: run in the new system, as a Dockerfile's RUN would
  chroot "$1" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "${@:2}"
}

make_root() {  # make_root <root>: Debian minbase + PACKAGES, without docs and GPU drivers
  say "debootstrap bookworm from $DEBIAN_MIRROR into $1"
  debootstrap --variant=minbase bookworm "$1" "$DEBIAN_MIRROR" >&2
  apt_sources "$1"
  # The same trimming rules as the Dockerfile's, in place before the big packages unpack.
  cp "$HERE/../docker/dpkg-slim.cfg" "$1/etc/dpkg/dpkg.cfg.d/slim"
  cp "$HERE/../docker/apt-slim.conf" "$1/etc/apt/apt.conf.d/90slim"
  cp /etc/resolv.conf "$1/etc/resolv.conf"
  say "installing ${PACKAGES[*]}"
  in_root "$1" apt-get update -qq >&2
  in_root "$1" apt-get install -y -qq "${PACKAGES[@]}" >&2
  in_root "$1" apt-get clean
  rm -rf "$1"/var/lib/apt/lists/* "$1"/var/log/*.log "$1"/tmp/*
  # What debootstrap unpacked before those rules were in place.
  rm -rf "$1"/usr/share/man/* "$1"/usr/share/info/*
  find "$1/usr/share/doc" -type f ! -name copyright -delete
  find "$1/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  # The runtime mounts its own resolv.conf over this one.
  : >"$1/etc/resolv.conf"
}

make_local() {
  command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
  }
  local root
  root=$(mktemp -d /var/tmp/videoplatform-base.XXXXXX)
  # shellcheck disable=SC2064  # the folder is known now, removed whatever happens next
  trap "rm -rf '$root'" EXIT
  make_root "$root"
  say "importing as $LOCAL_BASE"
  # /dev, /proc and /sys are the runtime's; the rest becomes the image's one layer.
  tar -C "$root" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -c . | docker import \
    -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' -m "Debian bookworm minbase + ${PACKAGES[*]} (scripts/docker_base.sh)" \
    - "$LOCAL_BASE" >&2
}

base_image() {  # base_image [--local]
  if [ "${1:-}" != "--local" ] && here_or_pulled "$OFFICIAL_BASE"; then
    echo "$OFFICIAL_BASE"
    return
  fi
  if have_image "$LOCAL_BASE"; then
    say "using $LOCAL_BASE (made earlier)"
  else
    say "$OFFICIAL_BASE cannot be pulled: making $LOCAL_BASE from Debian's packages"
    make_local
  fi
  echo "$LOCAL_BASE"
}

postgres_image() {
  if here_or_pulled "$OFFICIAL_POSTGRES"; then
    echo "$OFFICIAL_POSTGRES"
    return
  fi
  if ! have_image "$LOCAL_POSTGRES"; then
    local base=${BASE_IMAGE:-}
    [ -n "$base" ] || base=$(base_image)
    say "$OFFICIAL_POSTGRES cannot be pulled: building $LOCAL_POSTGRES on $base"
    BASE_IMAGE=$base docker compose -f "$HERE/../docker-compose.yml" \
      --profile build-postgres build postgres-debian >&2
  fi
  echo "$LOCAL_POSTGRES"
}

case "${1:-}" in
  --postgres) postgres_image ;;
  *) base_image "$@" ;;
esac
