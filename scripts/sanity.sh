#!/usr/bin/env bash
# Run `ansible-test sanity` on the collection, offline.
#
# ansible-test only works on a tree at .../ansible_collections/<namespace>/<name>, so the files
# git would ship (tracked, plus untracked-but-not-ignored: a clean CI clone has the same set)
# are copied into a scratch ansible_collections/swiftdeploy/stack, next to community.docker,
# our one collection dependency. The scratch tree is removed on exit.
#
# The per-test virtualenvs ansible-test builds (pylint, yamllint, validate-modules, ...) live in
# ~/.ansible/test/venv and are reused by later runs, so only the first run installs anything.
# ansible-test bootstraps pip in them with a script it would download from a host that is not
# reachable here; scripts/setup-ansible-test.sh puts an offline stand-in into its cache first.
#
#   scripts/sanity.sh [ANSIBLE-TEST SANITY OPTIONS...]   e.g. --test validate-modules
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# SWIFTDEPLOY_VENV: another virtualenv's ansible-test (scripts/test-min.sh: the oldest ansible-core).
venv=${SWIFTDEPLOY_VENV:-$root/.venv}
export PATH=$venv/bin:$PATH
export ANSIBLE_COLLECTIONS_PATH=$root/.collections
# ansible.cfg points at the repository's inventory and collections; the sanity tests must see
# only the scratch tree.
unset ANSIBLE_CONFIG

bash "$root/scripts/setup-ansible-test.sh" "$venv"
# Without shellcheck on PATH ansible-test skips its shellcheck test with only a warning.
if ! command -v shellcheck >/dev/null; then
  echo "sanity.sh: shellcheck is missing, so the shellcheck sanity test cannot run; install it" \
       "(apt-get install shellcheck)." >&2
  exit 1
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/swiftdeploy-sanity.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
collections=$scratch/ansible_collections
tree=$collections/swiftdeploy/stack
mkdir -p "$tree"

# Files deleted in the work tree but still in the index are skipped, so the copy matches what a
# commit of the current work tree would contain.
(cd "$root" && git ls-files -z --cached --others --exclude-standard --deduplicate) |
  (cd "$root" && while IFS= read -r -d '' path; do
     if [[ -e $path || -L $path ]]; then printf '%s\0' "$path"; fi
   done) |
  tar -C "$root" --no-recursion --null --files-from=- -cf - | tar -C "$tree" -xf -

dependency=$root/.collections/ansible_collections/community/docker
if [[ ! -d $dependency ]]; then
  echo "sanity.sh: $dependency is missing; run scripts/setup.sh (make setup) first." >&2
  exit 1
fi
mkdir -p "$collections/community"
ln -s "$dependency" "$collections/community/docker"

cd "$tree"
ansible-test sanity --local --python 3.11 --truncate 0 "$@"
