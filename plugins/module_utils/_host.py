# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Host resource figures for the infrastructure policy.

This is a private module_utils file: its API may change without notice. No Ansible imports.
"""

from __future__ import annotations

import os


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
