"""Small helpers several integration test files share (import them: `from helpers import ...`).

  http_get(port, path="/", host="127.0.0.1")
      one GET on a fresh connection: (status, headers as a dict, body bytes)
  version_served(port, host="127.0.0.1")
      (status, the "version" of the JSON body of /): which release a stack serves
  failing_image(parent, tag, percent)
      a context manager: `parent` (a third-party-style app image) with FAIL_PERCENT=`percent`
      baked in, as `tag`, built when missing or stale (thirdparty_images.build_failing) and
      removed at the end
"""

from __future__ import annotations

import contextlib
import http.client
import json
import pathlib
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "thirdparty_app"))
import thirdparty_images  # noqa: E402  pylint: disable=wrong-import-position


def http_get(port, path="/", host="127.0.0.1"):
    """One GET on a fresh connection: (status, headers as a dict, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def version_served(port, host="127.0.0.1"):
    """(status, version) of the release that answers / on host:port."""
    status, _headers, body = http_get(port, host=host)
    return status, json.loads(body)["version"]


@contextlib.contextmanager
def failing_image(parent, tag, percent):
    """`parent` answering `percent` of every 100 requests to / with a 500, as `tag`, for the
    `with` block; removed after it."""
    try:
        thirdparty_images.build_failing(tag, parent, percent)
    except thirdparty_images.BuildError as exc:
        pytest.fail(str(exc))
    try:
        yield tag
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, check=False)
