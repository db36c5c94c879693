#!/usr/bin/env bash
# Print the base image to build the platform's images on (the Dockerfile's BASE_IMAGE):
# the official Python image when it is here or can be pulled, otherwise a Debian bookworm
# image made on this machine from Debian's own packages (debootstrap, then `docker import`),
# for networks where the registry cannot be reached. The local image is made once and kept.
#   BASE_IMAGE=$(scripts/docker_base.sh)          # official if pullable, else local
#   BASE_IMAGE=$(scripts/docker_base.sh --local)  # always the local one
# Environment: OFFICIAL_BASE, LOCAL_BASE (tag made), DEBIAN_MIRROR, PULL_TIMEOUT (seconds).
# Progress goes to stderr; stdout is the image name alone.
set -euo pipefail

OFFICIAL_BASE=${OFFICIAL_BASE:-python:3.11-slim-bookworm}
LOCAL_BASE=${LOCAL_BASE:-videoplatform-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PULL_TIMEOUT=${PULL_TIMEOUT:-60}
# What every image of the platform needs: Python with venv, ffmpeg/ffprobe, the CA bundle.
PACKAGES=(python3 python3-venv ffmpeg ca-certificates)
HERE=$(cd "$(dirname "$0")" && pwd)
say() { echo "docker_base: $*" >&2; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

official() {
  have_image "$OFFICIAL_BASE" && return 0
  say "pulling $OFFICIAL_BASE"
  timeout "$PULL_TIMEOUT" docker pull -q "$OFFICIAL_BASE" >&2 2>/dev/null
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

main() {
  if [ "${1:-}" != "--local" ] && official; then
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

main "$@"
