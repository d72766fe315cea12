#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian bookworm machine with no registry access:
# Docker engine + Compose v2, the virtualenv, the collections Ansible needs (from PyPI's
# `ansible` package, since Galaxy is unreachable), ansible-test's offline bootstrap, and the
# locally built images. A second run changes nothing and takes a few seconds.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=$root/.venv
collections=$root/.collections/ansible_collections
ansible_pkg_version=12.3.0

log() { printf '[setup] %s\n' "$*"; }

bash scripts/setup-host.sh

# The interpreter the virtualenv is made from runs every playbook and, on the local host, every
# module: prefer the distribution's build (Debian's is compiled with PGO and LTO; on this machine
# it runs ansible-playbook 12-15 % faster than a pyenv build of the same 3.11: docs/converge.md,
# "What a promote's time is made of").
# SWIFTDEPLOY_PYTHON chooses another one.
python=${SWIFTDEPLOY_PYTHON:-}
if [ -n "$python" ]; then
  python_path=$(command -v "$python") || { echo "[setup] SWIFTDEPLOY_PYTHON: $python is not an interpreter on PATH; give the path of a Python 3.11 or newer, or unset it" >&2; exit 2; }
  python=$python_path
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "[setup] SWIFTDEPLOY_PYTHON: $python is older than 3.11, which ansible-core 2.19 needs; give a newer one, or unset it" >&2; exit 2; }
elif /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  python=/usr/bin/python3
else
  python=$(command -v python3)
fi
venv_hash() { { cat requirements.txt requirements-dev.txt; "$1" -c 'import sys; print(sys.executable, sys.version)'; } | sha256sum | cut -d' ' -f1; }

req_hash=$(venv_hash "$python")
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$req_hash" ]; then
  log "creating the virtualenv in .venv from $python"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv"; then
    # Debian without python3-venv: the first python3 on PATH instead, unless it was asked for.
    fallback=$(command -v python3)
    if [ -n "${SWIFTDEPLOY_PYTHON:-}" ] || [ "$fallback" = "$python" ]; then
      echo "[setup] $python cannot make a virtualenv; install its venv module (Debian: apt-get install python3-venv) or set SWIFTDEPLOY_PYTHON to another interpreter" >&2
      exit 2
    fi
    log "$python cannot make a virtualenv (no python3-venv?); using $fallback"
    python=$fallback
    req_hash=$(venv_hash "$python")
    rm -rf "$venv"
    "$python" -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements-dev.txt
  echo "$req_hash" > "$venv/.requirements.sha256"
else
  log "virtualenv up to date"
fi

marker=$root/.collections/.ansible-$ansible_pkg_version
if [ ! -f "$marker" ]; then
  log "extracting community.docker, community.library_inventory_filtering_v1, ansible.posix and awx.awx from ansible==$ansible_pkg_version"
  dl=$(mktemp -d)
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$dl" "ansible==$ansible_pkg_version"
  rm -rf "$root/.collections"
  mkdir -p "$collections"
  "$venv/bin/python" - "$dl"/ansible-*.whl "$collections" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
wanted = ("community/docker/", "community/library_inventory_filtering_v1/", "ansible/posix/", "awx/awx/")
prefix = "ansible_collections/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        rel = name[len(prefix):] if name.startswith(prefix) else None
        if rel and rel.startswith(wanted):
            zf.extract(name, dest + "/..")
PY
  rm -rf "$dl"
  touch "$marker"
else
  log "collections present"
fi
# The collection itself, so playbooks resolve swiftdeploy.stack.* from this checkout.
mkdir -p "$collections/swiftdeploy"
ln -sfn "$root" "$collections/swiftdeploy/stack"

# ansible-test fetches a pip bootstrap script from the internet; give it an offline one.
bash scripts/setup-ansible-test.sh "$venv"

bash scripts/build-images.sh
log "done"
