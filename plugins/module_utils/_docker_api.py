# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The Docker Engine API on the local unix socket, for the small calls a converge repeats.

This is a private module_utils file: its API may change without notice. No Ansible imports;
the standard library only.

Each `docker inspect`, `docker kill`, `docker stop` or `docker rm` starts the docker CLI, a Go
program that reads its configuration and contexts before it makes one API request: 10 to 20 ms
for `docker inspect` on a quiet 2-CPU host, where the request itself takes about 1 ms, and
more once the module's process spawn is counted (nginx's reload action: 0.05 s against
0.02 s). stack_converge makes these calls while traffic switches (a health poll, a reload
signal, a slot's removal), so it makes them here when, and only when, the docker CLI would talk
to the same engine through the same socket: no DOCKER_HOST other than a unix socket, no
DOCKER_CONTEXT, no current context in the CLI's configuration. Anything else (a remote engine,
an ssh or tcp context, Docker Desktop's own socket) stays with the CLI.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import urllib.parse

DEFAULT_SOCKET = "/var/run/docker.sock"


class DockerApiError(Exception):
    """An API call that failed; `status` is the HTTP status (None: no answer at all)."""

    def __init__(self, message, status=None):
        super(DockerApiError, self).__init__(message)
        self.status = status


def local_socket(environ=None, home=None):
    """The unix socket the docker CLI would use, or None when it would use something else (or
    when that cannot be told): then the caller keeps using the CLI."""
    environ = os.environ if environ is None else environ
    if environ.get("DOCKER_CONTEXT", "") not in ("", "default"):
        return None
    host = environ.get("DOCKER_HOST", "")
    if host:
        if not host.startswith("unix://"):
            return None
        path = host[len("unix://"):]
    else:
        config_dir = environ.get("DOCKER_CONFIG") or os.path.join(home or os.path.expanduser("~"), ".docker")
        try:
            with open(os.path.join(config_dir, "config.json")) as handle:
                config = json.load(handle)
        except (OSError, ValueError):
            config = {}
        if not isinstance(config, dict):
            return None
        if config.get("currentContext") not in (None, "", "default"):
            return None
        path = DEFAULT_SOCKET
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return None
    except OSError:
        return None
    return path


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        http.client.HTTPConnection.__init__(self, "localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class DockerApi(object):
    """inspect, kill, stop and remove containers, and the images' IDs and the data root, through
    the engine's socket."""

    def __init__(self, path, timeout=30.0):
        self.path = path
        self.timeout = timeout

    def request(self, method, url, query=None, timeout=None):
        """(status, parsed JSON body or None). DockerApiError when the engine cannot be reached
        or answers with an error (its own message, such as "No such container: x")."""
        if query:
            url += "?" + urllib.parse.urlencode(query)
        conn = _UnixConnection(self.path, timeout or self.timeout)
        try:
            conn.request(method, url, headers={"Host": "docker"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DockerApiError("the Docker engine at %s did not answer %s %s: %s" % (self.path, method, url, exc))
        finally:
            conn.close()
        body = None
        if data:
            try:
                body = json.loads(data.decode("utf-8", "replace"))
            except ValueError:
                body = None
        if response.status >= 400:
            message = body.get("message") if isinstance(body, dict) else None
            raise DockerApiError(message or "%s %s answered HTTP %d" % (method, url, response.status),
                                 status=response.status)
        return response.status, body

    @staticmethod
    def _container(container):
        return "/containers/%s" % urllib.parse.quote(container, safe="")

    def inspect(self, container):
        """`docker inspect <container>`: the container's JSON."""
        return self.request("GET", self._container(container) + "/json")[1] or {}

    def kill(self, container, signal_name):
        """`docker kill --signal <signal_name> <container>`."""
        self.request("POST", self._container(container) + "/kill", {"signal": signal_name})

    def stop(self, container, seconds):
        """`docker stop --time <seconds> <container>`: SIGTERM (the image's stop signal), then
        SIGKILL after `seconds`. A container that is already stopped is fine (HTTP 304)."""
        self.request("POST", self._container(container) + "/stop", {"t": int(seconds)}, timeout=self.timeout + seconds)

    def remove(self, container):
        """`docker rm --volumes <container>` of a stopped container."""
        self.request("DELETE", self._container(container), {"v": "1"})

    def image_id(self, image):
        """`docker image inspect --format {{.Id}} <image>`: its ID, or None when the engine has
        no such image (HTTP 404)."""
        try:
            body = self.request("GET", "/images/%s/json" % urllib.parse.quote(image, safe="/:@"))[1]
        except DockerApiError as exc:
            if exc.status == 404:
                return None
            raise
        return (body or {}).get("Id") or None

    def root_dir(self):
        """`docker info --format {{.DockerRootDir}}`, or None when the engine does not say."""
        return (self.request("GET", "/info")[1] or {}).get("DockerRootDir") or None
