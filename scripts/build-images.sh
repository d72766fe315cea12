#!/usr/bin/env bash
# Build the images the example stack needs on a Docker host that cannot reach a registry:
#   1. swiftdeploy/debian-base:bookworm  debootstrap'ed Debian with python3 (the base of the rest)
#   2. the app image named by the manifest, from app/
#   3. an nginx image built from Debian's nginx, tagged as the manifest names it, only when that
#      image is absent and cannot be pulled (or SWIFTDEPLOY_AIRGAP=true): never a silent swap,
#      the image carries the label org.swiftdeploy.airgap=true and this script says so.
# Idempotent: images that exist are left alone, so a second run takes about a second.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
base_image=swiftdeploy/debian-base:bookworm
app_image=${SWIFTDEPLOY_APP_IMAGE:-swift-deploy-1-node:latest}
nginx_image=${SWIFTDEPLOY_NGINX_IMAGE:-nginx:latest}
airgap=${SWIFTDEPLOY_AIRGAP:-auto}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '[build-images] %s\n' "$*"; }
have() { docker image inspect "$1" >/dev/null 2>&1; }

if ! have "$base_image"; then
  command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  rootfs=$(mktemp -d /var/tmp/swiftdeploy-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrapping $base_image (about 40 s)"
  debootstrap --variant=minbase --include=python3,ca-certificates bookworm "$rootfs" "$mirror" >/var/log/swiftdeploy-debootstrap.log 2>&1 \
    || { tail -20 /var/log/swiftdeploy-debootstrap.log; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$base_image" >/dev/null
  rm -rf "$rootfs"; trap - EXIT
else
  log "$base_image present"
fi

if ! have "$app_image"; then
  log "building $app_image from app/"
  docker build -q --build-arg "BASE_IMAGE=$base_image" -t "$app_image" "$root/app" >/dev/null
else
  log "$app_image present"
fi

if have "$nginx_image"; then
  log "$nginx_image present"
else
  if [ "$airgap" != true ] && timeout 30 docker pull -q "$nginx_image" >/dev/null 2>&1; then
    log "pulled $nginx_image"
  else
    [ "$airgap" = true ] && why="SWIFTDEPLOY_AIRGAP=true" || why="pull failed"
    log "AIR-GAPPED BUILD ($why): building $nginx_image from Debian's nginx package (label org.swiftdeploy.airgap=true)"
    docker build -q --build-arg "BASE_IMAGE=$base_image" -t "$nginx_image" "$root/images/nginx-debian" >/dev/null
  fi
fi
