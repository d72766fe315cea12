#!/usr/bin/env bash
# Prepare the Docker host: the Debian packages the project needs, a running Docker engine and
# the Compose v2 plugin. Idempotent: with everything in place it changes nothing and returns in
# well under a second.
set -euo pipefail

log() { printf '[setup-host] %s\n' "$*"; }

compose_ok() { docker compose version >/dev/null 2>&1; }
engine_ok() { docker info >/dev/null 2>&1; }

packages=(docker.io iptables ca-certificates debootstrap openssh-server wrk iproute2 procps shellcheck rsync)

missing_packages() {
  local p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s ' "$p"
  done
}

if [ -z "$(missing_packages)" ] && engine_ok && compose_ok; then
  log "packages, engine and compose v2 already in place"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=$(missing_packages)
if [ -n "$missing" ]; then
  log "installing Debian packages: $missing"
  # shellcheck disable=SC2086
  apt_install $missing
fi

if ! compose_ok; then
  log "installing the Compose v2 plugin from Debian trixie (pinned low, nothing else upgraded)"
  if [ ! -f /etc/apt/sources.list.d/swiftdeploy-trixie.list ]; then
    echo "deb http://deb.debian.org/debian trixie main" > /etc/apt/sources.list.d/swiftdeploy-trixie.list
    printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/swiftdeploy-trixie
    apt_updated=0
  fi
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  work=$(mktemp -d); chmod 0755 "$work"
  (cd "$work" && apt-get download -qq -t trixie docker-compose >/dev/null)
  dpkg -x "$work"/docker-compose_*.deb "$work/x"
  install -D -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" \
    /usr/local/lib/docker/cli-plugins/docker-compose
  rm -rf "$work"
fi

if ! engine_ok; then
  # A daemon killed uncleanly leaves its pid file behind and the next one refuses to start.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
  fi
  if ! pgrep -x dockerd >/dev/null; then
    log "starting dockerd"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do
    engine_ok && break
    sleep 0.5
  done
  engine_ok || { log "dockerd did not answer within 30 s; see /var/log/dockerd.log"; tail -20 /var/log/dockerd.log; exit 1; }
fi
log "engine $(docker version --format '{{.Server.Version}}'), compose $(docker compose version --short)"
