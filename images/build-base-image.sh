#!/usr/bin/env bash
# Build swiftdeploy/debian-base:bookworm (Debian bookworm minbase + python3) with debootstrap, for
# Docker hosts that cannot pull a base image. Idempotent: an existing image is left alone.
# Usage: build-base-image.sh [IMAGE] [MIRROR]
set -euo pipefail
image=${1:-swiftdeploy/debian-base:bookworm}
mirror=${2:-${DEBIAN_MIRROR:-http://deb.debian.org/debian}}

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image present"
  exit 0
fi
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
rootfs=$(mktemp -d /var/tmp/swiftdeploy-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log=$(mktemp /var/tmp/swiftdeploy-debootstrap.XXXXXX.log)
if ! debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$rootfs" "$mirror" >"$log" 2>&1; then
  tail -20 "$log" >&2
  echo "debootstrap failed; full log in $log" >&2
  exit 1
fi
rm -f "$log"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "built $image"
