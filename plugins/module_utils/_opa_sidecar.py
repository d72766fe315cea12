# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The OPA sidecar's token and address, on the managed host.

This is a private module_utils file: its API may change without notice. No Ansible imports.

The sidecar runs OPA with --authentication=token --authorization=basic: its system.authz policy
(roles/swiftdeploy/files/opa_system_authz.rego) allows only the two decision queries, and only
with the stack's token. The token is generated here, on the host, into <project>/opa/token.json
(the directory mode 0700, the file mode 0600 and owned by OPA's uid, so that OPA can read it and
no other user or container can), and is read back here by the module that asks for a decision.
It never travels to the controller and is never part of a task result.

The sidecar publishes no port on the host: the client finds the stack's own OPA container through
the Docker engine (the compose project's `opa` service, checked by its labels) and speaks to its
address on the OPA network, so there is no host port that another process could take first and
answer on.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time

from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError
from ansible_collections.swiftdeploy.stack.plugins.module_utils._http import HttpError, get_text
from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import write_atomic

OPA_UID = 65532
OPA_PORT = 8181
OPA_SERVICE = "opa"
TOKEN_DIR = "opa"
TOKEN_FILE = "token.json"
TOKEN_BYTES = 32
MIN_TOKEN_CHARS = 32


class SidecarError(Exception):
    """The sidecar cannot be used: the message says why and what to do."""


def token_path(project_dir):
    return os.path.join(project_dir, TOKEN_DIR, TOKEN_FILE)


def _read_token_file(path):
    """The token in `path`, or raise SidecarError; refuses a link or anything but a file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise SidecarError("the OPA sidecar's token file %s does not exist; deploy the stack (opa.mode: sidecar) "
                           "to create it" % path)
    except OSError as exc:
        raise SidecarError("cannot read the OPA sidecar's token file %s (%s)" % (path, exc.strerror))
    if not stat.S_ISREG(info.st_mode):
        raise SidecarError("the OPA sidecar's token file %s is not a regular file (a link or something else); "
                           "remove it and deploy again" % path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as handle:
            document = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise SidecarError("cannot read the OPA sidecar's token file %s (%s); remove it and deploy again"
                           % (path, getattr(exc, "strerror", None) or type(exc).__name__))
    token = document.get("swiftdeploy_sidecar", {}).get("token") if isinstance(document, dict) else None
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS:
        raise SidecarError("the OPA sidecar's token file %s holds no usable token; remove it and deploy again" % path)
    return token


def read_token(project_dir):
    """The stack's sidecar token, read on the host."""
    return _read_token_file(token_path(project_dir))


def ensure_token(project_dir, uid=OPA_UID, check_mode=False):
    """Make sure <project>/opa/token.json holds a token, with mode 0600 and owned by `uid`, in a
    directory of mode 0700. Returns True when something was (or, in check mode, would be)
    changed. An existing valid token is kept: OPA reads it once, when it starts."""
    directory = os.path.join(project_dir, TOKEN_DIR)
    path = token_path(project_dir)
    changed = False
    if os.path.islink(directory) or (os.path.exists(directory) and not os.path.isdir(directory)):
        raise SidecarError("%s is not a directory (a link or a file); remove it and deploy again" % directory)
    if not os.path.isdir(directory):
        if check_mode:
            return True
        os.makedirs(directory, mode=0o700)
        changed = True
    if stat.S_IMODE(os.stat(directory).st_mode) != 0o700:
        if check_mode:
            return True
        os.chmod(directory, 0o700)
        changed = True
    try:
        _read_token_file(path)
        valid = True
    except SidecarError:
        valid = False
    if not valid:
        if check_mode:
            return True
        _write_new_token(path, uid)
        return True
    info = os.lstat(path)
    if stat.S_IMODE(info.st_mode) != 0o600 or info.st_uid != uid or info.st_gid != uid:
        if check_mode:
            return True
        os.chown(path, uid, uid, follow_symlinks=False)
        os.chmod(path, 0o600)
        changed = True
    return changed


def _write_new_token(path, uid):
    document = json.dumps({"swiftdeploy_sidecar": {"token": secrets.token_urlsafe(TOKEN_BYTES)}}).encode("utf-8")
    write_atomic(path, document, 0o600, uid, uid)


def find_sidecar(engine, project_dir, stack, network):
    """{id, address, url} of the stack's own OPA container, or raise SidecarError.

    The container must be the one running container of the compose project's `opa` service,
    carry the stack's labels and be on the OPA network only; its address there is where the
    token may be sent. Nothing else is trusted with it."""
    try:
        entries = [entry for entry in engine.ps(project_dir) if entry.get("Service") == OPA_SERVICE]
    except EngineError as exc:
        raise SidecarError("cannot list stack %s's containers to find its OPA sidecar: %s" % (stack, exc))
    running = [entry for entry in entries if entry.get("State") == "running"]
    if len(running) != 1:
        raise SidecarError("the OPA sidecar of stack %s is not running (%d running opa containers in %s); "
                           "it did not start or has stopped" % (stack, len(running), project_dir))
    try:
        details = engine.inspect(running[0].get("ID") or running[0].get("Name"))
    except EngineError as exc:
        raise SidecarError("cannot inspect the OPA sidecar: %s" % exc)
    labels = (details.get("Config") or {}).get("Labels") or {}
    expected = {"com.docker.compose.project": stack, "com.docker.compose.service": OPA_SERVICE,
                "org.swiftdeploy.stack": stack, "org.swiftdeploy.role": OPA_SERVICE}
    wrong = sorted(key for key, value in expected.items() if labels.get(key) != value)
    if wrong:
        raise SidecarError("container %s is not stack %s's OPA sidecar (labels %s differ); the token is not sent to it"
                           % (details.get("Name", "?").lstrip("/"), stack, ", ".join(wrong)))
    if not (details.get("State") or {}).get("Running"):
        raise SidecarError("the OPA sidecar of stack %s is not running" % stack)
    networks = (details.get("NetworkSettings") or {}).get("Networks") or {}
    if sorted(networks) != [network]:
        raise SidecarError("the OPA sidecar of stack %s is on the networks %s, not on %s alone; the token is not sent "
                           "to it" % (stack, ", ".join(sorted(networks)) or "(none)", network))
    address = (networks[network] or {}).get("IPAddress")
    if not address:
        raise SidecarError("the OPA sidecar of stack %s has no address on the network %s: it is stopping or "
                           "restarting (see its log: docker logs %s)" % (stack, network,
                                                                         details.get("Name", "?").lstrip("/")))
    return {"id": details.get("Id"), "address": address, "url": "http://%s:%d" % (address, OPA_PORT)}


def check_running(engine, container_id, stack):
    """Raise SidecarError when the container has stopped or is restarting (a crash loop)."""
    try:
        state = engine.inspect(container_id).get("State") or {}
    except EngineError as exc:
        raise SidecarError("the OPA sidecar of stack %s is gone: %s" % (stack, exc))
    if state.get("Restarting") or not state.get("Running"):
        raise SidecarError("the OPA sidecar of stack %s stopped before it became healthy (exit code %s%s); "
                           "see docker logs %s" % (stack, state.get("ExitCode"),
                                                   ", %s" % state["Error"] if state.get("Error") else "",
                                                   container_id[:12]))


def wait_healthy(url, timeout, still_running=None, clock=time.monotonic, sleep=time.sleep):
    """Poll OPA's /health until it answers 200 or `timeout` seconds pass; SidecarError then, or
    as soon as `still_running()` raises it (a sidecar that exits is not waited for)."""
    deadline = clock() + timeout
    last = "no answer yet"
    while True:
        try:
            get_text(url + "/health", min(2.0, max(timeout, 0.1)), service="OPA")
            return
        except HttpError as exc:
            last = exc.message
        if still_running is not None:
            still_running()
        if clock() >= deadline:
            raise SidecarError("the OPA sidecar did not become healthy within %g s: %s" % (timeout, last))
        sleep(0.5)
