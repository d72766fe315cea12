#!/usr/bin/env bash
# The "oldest ansible-core" stage: prove meta/runtime.yml's requires_ansible by running, under
# the oldest ansible-core it allows (requirements-min.txt), that ansible-core's own
# `ansible-test sanity`, the unit tests, the action-group and no-warnings tests, and one
# lifecycle of a stack of its own (deploy, promote to canary, promote to stable, teardown).
#
# It builds .venv-min from requirements-min.txt when that file or the interpreter changed (a
# hash marker, as scripts/setup.sh does for .venv), from the interpreter .venv was made from.
# Run scripts/setup.sh (make setup) first: it starts Docker, builds the images and links the
# collection into .collections.
#
#   scripts/test-min.sh [PYTEST OPTIONS...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=$root/.venv-min

log() { printf '[test-min] %s\n' "$*"; }

if [[ ! -x $root/.venv/bin/python ]]; then
  echo "[test-min] $root/.venv is missing; run scripts/setup.sh (make setup) first" >&2
  exit 2
fi
python=$("$root/.venv/bin/python" -c 'import sys; print(sys._base_executable)')
req_hash=$({ cat requirements-min.txt; "$python" -c 'import sys; print(sys.executable, sys.version)'; } | sha256sum | cut -d' ' -f1)
if [[ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$req_hash" ]]; then
  log "creating .venv-min from $python and requirements-min.txt"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements-min.txt
  echo "$req_hash" > "$venv/.requirements.sha256"
else
  log ".venv-min up to date"
fi
log "ansible-core $("$venv/bin/python" -c 'import ansible; print(ansible.__version__)')"

export SWIFTDEPLOY_VENV=$venv
export PATH=$venv/bin:$PATH
export ANSIBLE_CONFIG=$root/ansible.cfg ANSIBLE_COLLECTIONS_PATH=$root/.collections

status=0
step() {
  local name=$1 started=$SECONDS
  shift
  log "$name"
  if "$@"; then
    log "$name: passed in $((SECONDS - started)) s"
  else
    log "$name: FAILED in $((SECONDS - started)) s"
    status=1
  fi
}

step "ansible-test sanity" bash scripts/sanity.sh
step "pytest: unit, action group, no warnings, lifecycle" \
  pytest -q -p no:cacheprovider tests/unit tests/integration/test_action_group.py \
    tests/integration/test_no_python_warnings.py tests/integration/test_oldest_core_lifecycle.py "$@"
exit $status
