#!/usr/bin/env bash
# The whole test suite, in order of speed: static checks, unit and integration tests against the
# real Docker engine (the fleet's beside the others), then Molecule. Every stage runs even when an earlier one fails, so one run
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
# The images both pytest processes below use, built here once rather than by both at once.
stage "test images (fleet host, third-party app)" \
  bash -c 'python tests/integration/fleet.py image && python tests/fixtures/thirdparty_app/thirdparty_images.py'

# The tests on the fleet (pytest marker `fleet`, set on every test that needs the fleet fixture)
# and Molecule's fleet scenario run in the background, beside the tests on this machine's engine:
# their stacks run in the fleet hosts' own dockerds, at the hosts' own addresses, and mostly wait
# on SSH and on canary windows. Their output goes to a log, printed whole when the foreground
# stages are done, with the same stage lines; a failed background stage is named among the
# FAILED stages like any other.
background_stages() {
  local dir=$1 before=${#failed[@]}
  stage "pytest: fleet" pytest -q -p no:cacheprovider --durations=15 -m fleet tests
  stage "molecule: fleet" molecule test -s fleet
  printf '%s\n' "${failed[@]:before}" >"$dir/failed"
  touch "$dir/done"
}
background=$(mktemp -d)
background_stages "$background" >"$background/log" 2>&1 </dev/null &
background_pid=$!
printf '\n===== pytest: fleet, then molecule: fleet: started in the background (output below, when done) =====\n'

stage "pytest: unit and integration" pytest -q -p no:cacheprovider --durations=30 -m "not fleet" tests
stage "molecule: default" molecule test -s default
stage "molecule: canary" molecule test -s canary

waited=$SECONDS
wait "$background_pid"
printf '\n===== background stages (waited %d s for them after the foreground ones) =====\n' $((SECONDS - waited))
cat "$background/log"
if [ -f "$background/done" ]; then
  while IFS= read -r name; do
    [ -n "$name" ] && failed+=("$name")
  done <"$background/failed"
else
  failed+=("background stages (pytest: fleet, molecule: fleet) ended before reporting")
fi
rm -rf "$background"
# meta/runtime.yml's requires_ansible, proved: sanity, unit tests and a lifecycle under the oldest
# ansible-core it allows, in .venv-min.
stage "oldest ansible-core (requirements-min.txt)" bash scripts/test-min.sh

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nFAILED stages: %s\n' "${failed[*]}"
  exit 1
fi
printf '\nAll stages passed.\n'
