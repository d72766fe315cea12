#!/usr/bin/env bash
# The whole test suite, in order of speed: static checks, unit tests, integration tests against
# the real Docker engine, then Molecule. Stops at the first failing stage.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH=$root/.venv/bin:$PATH
export ANSIBLE_CONFIG=$root/ansible.cfg ANSIBLE_COLLECTIONS_PATH=$root/.collections

stage() { printf '\n===== %s =====\n' "$*"; }

stage "ansible-lint (production profile)"
bash scripts/lint.sh
stage "ansible-test sanity"
bash scripts/sanity.sh
stage "pytest: unit and integration"
pytest -q -p no:cacheprovider tests
stage "molecule: default"
molecule test -s default
