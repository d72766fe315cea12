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

bash "$root/images/build-base-image.sh" "$base_image" "$mirror" | sed "s/^/[build-images] /"

# The app image is rebuilt whenever app/ changes: its label records the hash of the sources.
app_hash=$(cd "$root/app" && find . -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z \
  | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
built_hash=$(docker image inspect -f '{{ index .Config.Labels "org.swiftdeploy.source-hash" }}' "$app_image" 2>/dev/null || true)
if [ "$built_hash" != "$app_hash" ]; then
  log "building $app_image from app/"
  docker build -q --build-arg "BASE_IMAGE=$base_image" --label "org.swiftdeploy.source-hash=$app_hash" \
    -t "$app_image" "$root/app" >/dev/null 2>&1 || docker build --build-arg "BASE_IMAGE=$base_image" -t "$app_image" "$root/app"
else
  log "$app_image present and up to date with app/"
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
