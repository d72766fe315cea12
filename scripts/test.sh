#!/usr/bin/env bash
# The whole test suite, in order of speed: static checks, unit and integration tests against the
# real Docker engine, then Molecule. Every stage runs even when an earlier one fails, so one run
# shows every problem; the exit status is non-zero when any stage failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
export PATH=$root/.venv/bin:$PATH
export ANSIBLE_CONFIG=$root/ansible.cfg ANSIBLE_COLLECTIONS_PATH=$root/.collections

failed=()
stage() {
  local name=$1
  shift
  printf '\n===== %s =====\n' "$name"
  local started=$SECONDS
  if "$@"; then
    printf '===== %s: passed in %d s =====\n' "$name" $((SECONDS - started))
  else
    printf '===== %s: FAILED in %d s =====\n' "$name" $((SECONDS - started))
    failed+=("$name")
  fi
}

stage "ansible-lint (production profile)" bash scripts/lint.sh
stage "ansible-test sanity" bash scripts/sanity.sh
stage "pytest: unit and integration" pytest -q -p no:cacheprovider --durations=30 tests
stage "molecule: default" molecule test -s default
stage "molecule: canary" molecule test -s canary
stage "molecule: fleet" molecule test -s fleet
# meta/runtime.yml's requires_ansible, proved: sanity, unit tests and a lifecycle under the oldest
# ansible-core it allows, in .venv-min.
stage "oldest ansible-core (requirements-min.txt)" bash scripts/test-min.sh

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nFAILED stages: %s\n' "${failed[*]}"
  exit 1
fi
printf '\nAll stages passed.\n'
