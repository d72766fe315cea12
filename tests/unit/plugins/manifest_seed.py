"""The manifest the manifest tests start from (the example stack's), and writing one to a file:
the tests' modules in this folder share them (`from manifest_seed import ...`)."""

import os

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
