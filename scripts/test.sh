#!/usr/bin/env bash
# The whole test suite: static checks, unit and integration tests against the real Docker engine,
# the oldest ansible-core, then Molecule. Every stage runs even when an earlier one fails, so one
# run shows every problem; the exit status is non-zero when any stage failed.
#
# Stages that cannot interfere run side by side (the machine has 2 cores and most integration
# tests wait): the tests on the fleet beside the static checks and the tests on this machine's
# engine, except those that assert on wall-clock time, which run after them, alone. A stage run
# in the background writes its output to a log that is printed whole, with the same stage lines,
# once the foreground stages beside it are done; a failed background stage is named among the
# FAILED stages like any other.
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

background=$(mktemp -d)
trap 'rm -rf "$background"' EXIT
background_jobs=()
# in_background LABEL COMMAND...: run COMMAND (stage calls) in the background; its output and the
# names of its failed stages are kept until join_background.
in_background() {
  local label=$1 job=$background/${#background_jobs[@]}
  shift
  printf '\n===== %s: started in the background (its output follows when it is done) =====\n' "$label"
  {
    local before=${#failed[@]}
    "$@"
    printf '%s\n' "${failed[@]:before}" >"$job.failed"
  } >"$job.log" 2>&1 </dev/null &
  background_jobs+=("$!:$job:$label")
}
# join_background: wait for every background job, print its output, count its failed stages.
join_background() {
  local entry pid job label name waited=$SECONDS
  for entry in "${background_jobs[@]}"; do
    pid=${entry%%:*} job=${entry#*:} label=${job#*:} job=${job%%:*}
    wait "$pid"
    printf '\n===== %s (background; waited %d s for it after the foreground stages) =====\n' \
      "$label" $((SECONDS - waited))
    cat "$job.log"
    if [ -f "$job.failed" ]; then
      while IFS= read -r name; do
        if [ -n "$name" ]; then failed+=("$name"); fi
      done <"$job.failed"
    else
      failed+=("$label (ended before reporting)")
    fi
  done
  background_jobs=()
}

# The images both pytest processes below use, built here once rather than by both at once.
stage "test images (fleet host, third-party app)" \
  bash -c 'python tests/integration/fleet.py image && python tests/fixtures/thirdparty_app/thirdparty_images.py'

# The tests on the fleet (pytest marker `fleet`, set on every test that needs the fleet fixture)
# and Molecule's fleet scenario run beside the static checks and the tests on this machine's
# engine: the fleet's stacks run in the fleet hosts' own dockerds, at the hosts' own addresses,
# so the two share no stack, port, project directory or lock, and both mostly wait (on SSH,
# health checks, canary windows).
# ansible-test sanity (CPU only, in its own copy of the collection) and the oldest-core stage
# (its own stack `mincore` on ports 18080/18082) follow them in the same background process: the
# local-engine tests in the foreground are the longest stage, and these fit beside them.
fleet_stages() {
  stage "pytest: fleet" pytest -q -p no:cacheprovider --durations=15 -m fleet tests
  stage "molecule: fleet" molecule test -s fleet
  stage "ansible-test sanity" bash scripts/sanity.sh
  # meta/runtime.yml's requires_ansible, proved: sanity, unit tests and a lifecycle under the
  # oldest ansible-core it allows, in .venv-min.
  stage "oldest ansible-core (requirements-min.txt)" bash scripts/test-min.sh
  # Local-engine tests on a stack and ports of their own that assert no wall-clock time (marker
  # `beside`): this process has time to spare while the foreground's local tests run.
  stage "pytest: local tests beside the others" pytest -q -p no:cacheprovider --durations=5 \
    --basetemp="$background/beside" -m "beside and not fleet" tests
}
in_background "pytest: fleet, molecule: fleet, sanity, oldest ansible-core, local tests beside" fleet_stages
stage "ansible-lint (production profile)" bash scripts/lint.sh
stage "pytest: unit and integration" pytest -q -p no:cacheprovider --durations=30 -m "not fleet and not timing and not beside" tests
join_background

# Tests that assert on wall-clock time (marker `timing`: progress lines, a canary judged before
# it is a window old, lock heartbeats) and the Molecule scenarios on this engine, with nothing
# beside them: the second process's load made them miss their times.
stage "pytest: timing-sensitive integration" pytest -q -p no:cacheprovider --durations=10 -m "timing and not fleet and not beside" tests
stage "molecule: default" molecule test -s default
stage "molecule: canary" molecule test -s canary
stage "molecule: auto" molecule test -s auto

if [ ${#failed[@]} -gt 0 ]; then
  printf '\nFAILED stages: %s\n' "${failed[*]}"
  exit 1
fi
printf '\nAll stages passed.\n'
