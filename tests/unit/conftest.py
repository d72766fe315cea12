"""Make `ansible_collections.swiftdeploy.stack` importable from this checkout.

`make setup` links the checkout into .collections/ansible_collections/swiftdeploy/stack; when
that link is absent (a bare checkout) a temporary one is made so unit tests still run.
"""

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _collections_root():
    linked = os.path.join(ROOT, ".collections")
    if os.path.isdir(os.path.join(linked, "ansible_collections", "swiftdeploy", "stack")):
        return linked
    scratch = tempfile.mkdtemp(prefix="swiftdeploy-unit-")
    os.makedirs(os.path.join(scratch, "ansible_collections", "swiftdeploy"))
    os.symlink(ROOT, os.path.join(scratch, "ansible_collections", "swiftdeploy", "stack"))
    return scratch


if "ansible_collections.swiftdeploy.stack" not in sys.modules:
    sys.path.insert(0, _collections_root())
