# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Host resource figures for the infrastructure policy, and what else the gates ask the host.

This is a private module_utils file: its API may change without notice. No Ansible imports.
"""

from __future__ import annotations

import os

from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError, open_engine
from ansible_collections.swiftdeploy.stack.plugins.module_utils._http import HttpError, get_text

DEFAULT_DOCKER_ROOT = "/var/lib/docker"


def parse_meminfo(text):
    """Return (total_kib, available_kib) from /proc/meminfo text.

    MemAvailable is the kernel's own estimate of memory a new workload can use without
    swapping; older kernels lack it, and then free + buffers + cached stands in for it.
    """
    values = {}
    for line in text.splitlines():
        name, _sep, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0])
    if "MemTotal" not in values or values["MemTotal"] <= 0:
        raise ValueError("/proc/meminfo has no usable MemTotal line")
    available = values.get("MemAvailable")
    if available is None:
        available = values.get("MemFree", 0) + values.get("Buffers", 0) + values.get("Cached", 0)
    return values["MemTotal"], available


def disk_free_gb(path):
    """Free space for unprivileged writers on the filesystem holding path, in GB (10^9 bytes)."""
    stat = os.statvfs(path)
    return round(stat.f_bavail * stat.f_frsize / 1e9, 2)


def collect(path, meminfo_path="/proc/meminfo"):
    """The three figures the infrastructure policy checks, plus context for the history."""
    with open(meminfo_path) as handle:
        total, available = parse_meminfo(handle.read())
    return {
        "disk_free_gb": disk_free_gb(path),
        "disk_path": path,
        "cpu_load_1m": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count() or 1,
        "mem_free_percent": round(100.0 * available / total, 2),
        "mem_total_mb": round(total / 1024.0, 1),
    }


def probe(url, timeout=5):
    """{ok, status, error} of one GET of a health URL."""
    try:
        get_text(url, timeout, service="the health endpoint")
        return {"ok": True, "status": None, "error": None}
    except HttpError as exc:
        return {"ok": False, "status": exc.status, "error": exc.message}


def measure(path=None, images=(), health_urls=(), engine=None):
    """Everything a gate asks the Docker host, in one go: {resources, images_missing, image_ids,
    health}.

    resources: collect() of path, by default the Docker data root (`docker info`), where images
    and containers land. images_missing: the images the engine does not have; image_ids: each
    image's ID, None when absent. health: probe()
    of each URL. The engine (open_engine() when none is given) asks about the images and the
    data root: through the engine's socket when the CLI would use it (about 1 ms each), else
    side by side, where each costs a CLI start, about 0.1 s, and a deploy asks for four.
    Raises OSError/ValueError when the figures cannot be read and ValueError when images are
    asked for without a docker CLI (collect() raises OSError for a path that does not exist).
    """
    if engine is None and (images or not path):
        try:
            engine = open_engine()
        except EngineError as exc:
            if images:
                raise ValueError("%s; without it the host cannot say which images are there" % exc)
    found = engine.survey(images, root_dir=not path) if engine is not None else {"images": {}, "root_dir": None}
    health = dict((url, probe(url)) for url in health_urls)
    path = path or found["root_dir"] or DEFAULT_DOCKER_ROOT
    return {"resources": collect(path), "images_missing": [image for image in images if found["images"].get(image) is None],
            "image_ids": dict((image, found["images"].get(image)) for image in images), "health": health}
