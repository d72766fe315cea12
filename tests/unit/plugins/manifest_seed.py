"""The manifest the manifest tests start from (the example stack's), writing one to a file, a
manifest with some fields changed, and the errors validation gives: the tests' modules in this
folder share them (`from manifest_seed import ...`)."""

import copy
import os

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._manifest import ManifestError, validate_manifest

SEED_TEXT = """\
services: {image: swift-deploy-1-node:latest, port: 3000, mode: stable, version: "1.0.0",
           restart_policy: unless-stopped, log_volume: swiftdeploy-logs}
nginx: {image: nginx:latest, port: 8080, proxy_timeout: 30}
opa: {image: openpolicyagent/opa:latest-static, port: 8181}
network: {name: swiftdeploy-net, driver_type: bridge}
contact: "ops@swiftdeploy.local"
"""


def write(directory, text, name="manifest.yml"):
    """text (str, or bytes as they are) in directory/name; the file's path."""
    path = os.path.join(str(directory), name)
    with open(path, "wb") as handle:
        handle.write(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def with_changes(base, changes):
    """A copy of the manifest `base` with {dotted path: value} set (a field removed where value is ...)."""
    data = copy.deepcopy(base)
    for path, value in changes.items():
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return data


def errors_of(data):
    """The lines validate_manifest refuses data with (it must refuse it)."""
    with pytest.raises(ManifestError) as caught:
        validate_manifest(data)
    return caught.value.errors
