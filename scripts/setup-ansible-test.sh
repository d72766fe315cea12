#!/usr/bin/env bash
# ansible-test bootstraps pip in its virtualenvs with a script it downloads from a host that is
# unreachable here. It looks in its cache first, so place a stand-in there that bootstraps pip
# from the interpreter's bundled ensurepip and then installs what ansible-test asked for from
# PyPI, which is reachable.
set -euo pipefail
venv=${1:?usage: setup-ansible-test.sh VENV}
pip_version=$("$venv/bin/python" - <<'PY'
import re, pathlib, ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
print(re.search(r"default_packages = dict\(\s*pip='([^']+)'", src.read_text()).group(1))
PY
)
cache=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
mkdir -p "$(dirname "$cache")"
cat > "$cache.tmp" <<'PY'
"""Offline stand-in for get-pip.py, written by SwiftDeploy's scripts/setup-ansible-test.sh."""
import subprocess
import sys

# get-pip.py understands --no-setuptools / --no-wheel; pip itself does not.
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
if "--no-setuptools" in sys.argv[1:]:
    subprocess.check_call([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "setuptools"])
PY
if ! cmp -s "$cache.tmp" "$cache"; then mv "$cache.tmp" "$cache"; else rm -f "$cache.tmp"; fi
