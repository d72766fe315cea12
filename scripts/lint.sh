#!/usr/bin/env bash
# Run ansible-lint on the whole collection with the production profile, offline, as configured in
# .ansible-lint at the repository root. Any violation, warnings included (strict), fails it.
#
#   scripts/lint.sh [ANSIBLE-LINT OPTIONS...] [PATHS...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH=$root/.venv/bin:$PATH
export ANSIBLE_CONFIG=$root/ansible.cfg ANSIBLE_COLLECTIONS_PATH=$root/.collections
exec ansible-lint --config-file "$root/.ansible-lint" "$@"
