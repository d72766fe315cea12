# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Manifest schema, validation and defaults for SwiftDeploy.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports so that the unit tests can exercise every rule directly.

Every error is one sentence that names the field path, the bad value and the fix, so a user
never has to read code or a traceback to correct a manifest.
"""

from __future__ import annotations

import copy
import datetime
import difflib
import ipaddress
import math
import re
import unicodedata

from ansible_collections.swiftdeploy.stack.plugins.module_utils import _manifest_service as service
from ansible_collections.swiftdeploy.stack.plugins.module_utils._rollout import BatchError, parse_batch

# Every pattern below is matched with fullmatch() and written with ASCII classes only (no \w, \d
# or $, which accept Unicode look-alikes or stop before a trailing newline), under re.ASCII.

# Docker's reference grammar (distribution/reference), written out so that a bad image name is
# caught before Docker answers with a less helpful message.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = r"(?:%s(?:\.%s)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?" % (_DOMAIN_PART, _DOMAIN_PART)
_IMAGE_RE = re.compile(
    r"(?:%s/)?%s(?:/%s)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
    % (_DOMAIN, _COMPONENT, _COMPONENT), re.ASCII)
# Network and volume names as the Docker engine accepts them.
_DOCKER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", re.ASCII)
# A compose project name: lower case, as `docker compose` requires.
_STACK_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}", re.ASCII)
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", re.ASCII)
# A CA bundle's absolute path on the controller, without control characters.
_CA_PATH_RE = re.compile(r"/[^\x00-\x1f\x7f]{1,4095}")
_URL_RE = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~/-]*)?", re.ASCII)
# What Docker and compose accept as a restart policy; on-failure may carry a retry count.
_RESTART_RE = re.compile(r"no|always|unless-stopped|on-failure(?::[1-9][0-9]{0,3})?", re.ASCII)
# A port written as a string of digits, as Ansible's int type accepts it (ASCII digits only:
# int() would also read '\uff18\uff10' or '8_080').
_PORT_TEXT_RE = re.compile(r"[0-9]{1,5}", re.ASCII)
# A Docker memory size: a whole number with an optional unit (bytes, KiB, MiB, GiB).
_MEMORY_RE = re.compile(r"([0-9]{1,12})([bkmg]?)", re.ASCII | re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
# Docker refuses a memory limit below 6 MiB.
_MEMORY_MINIMUM = 6 * 1024 ** 2
# The contact is shown in nginx's JSON error bodies, so besides letters (any script: the
# nginx_json filter writes them as ASCII escapes) it holds only the characters an e-mail address
# or URL needs: no quote, brace, semicolon, `$`, backslash or control character can reach
# nginx.conf through it, and no invisible or bidirectional-override character can disguise it.
_CONTACT_ASCII = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._+:/ -")
_CONTACT_MAX = 128

# The example app (app/swiftdeploy_app.py, HISTORY_SECONDS) keeps a metrics snapshot a second
# for this long; a canary window reaches back that far at most.
APP_HISTORY_SECONDS = 600
# How long a sticky-session cookie keeps a client on its release by default (an hour).
STICKY_MAX_AGE = 3600
# How long the edge nginx keeps an idle client connection open unless nginx.keepalive_timeout
# says otherwise; without the edge the public listener closes every connection (docs/keepalive.md).
EDGE_KEEPALIVE_TIMEOUT = 60
# A string longer than this is refused before any pattern runs on it.
_MAX_TEXT = 255
# At most this many problems are listed; a manifest with more is not worth reading further.
MAX_ERRORS = 20
# Width of a value shown in a message.
_SHOW_WIDTH = 80

MODES = ("stable", "canary")
MODE_SWITCHES = ("signal", "none")
# Where a canary's figures come from: nginx's edge log, or the app's own /metrics.
CANARY_METRICS = ("edge", "app")
NETWORK_DRIVERS = ("bridge",)
OPA_MODES = ("embedded", "sidecar", "external")
DEFAULT_OPA_IMAGE = "openpolicyagent/opa:1.10.1-static"


class Field(object):
    """One manifest key: its type rule, default, and help for the fix."""

    def __init__(self, kind, required=False, default=None, check=None, fix=None, choices=None, minimum=None,
                 maximum=None, children=None, item=None, max_length=_MAX_TEXT, digits=False, rule=None):
        self.kind = kind
        self.required = required
        self.default = default
        self.check = check
        self.fix = fix
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum
        self.children = children
        self.item = item
        self.max_length = max_length
        # A string of ASCII digits is read as the whole number it spells (ports only).
        self.digits = digits
        # rule(path, value, errors) -> the normalised value: free-form maps and lists.
        self.rule = rule


def _port(required=False, default=None):
    return Field("int", required=required, default=default, minimum=1, maximum=65535, digits=True,
                 fix="use a TCP port number from 1 to 65535")


def _image(required=False, default=None):
    # Docker allows 255 characters of name, 128 of tag and a 71-character digest.
    return Field("str", required=required, default=default, check=_IMAGE_RE, max_length=512,
                 fix="use a Docker image reference such as 'nginx:1.27' or 'registry.example.com:5000/team/app:1.2.0' "
                     "(lower-case repository, optional tag)")


def _docker_name(what):
    return Field("str", check=_DOCKER_NAME_RE,
                 fix="use a Docker %s name of letters, digits, '_', '.' and '-', starting with a letter or digit"
                     % what)


def _controller_file(what, example):
    return Field("str", check=_CA_PATH_RE, max_length=4096,
                 fix="use the absolute path on the controller of the PEM %s file, such as '%s'" % (what, example))


def _is_contact(text):
    """Letters of any script, and the ASCII an e-mail address or URL needs; nothing else."""
    if not 1 <= len(text) <= _CONTACT_MAX:
        return False
    for char in text:
        if char in _CONTACT_ASCII:
            continue
        if ord(char) < 0x80 or unicodedata.category(char)[0] not in "LM":
            return False
    return True


def _is_memory_size(text):
    match = _MEMORY_RE.fullmatch(text)
    return bool(match) and int(match.group(1)) * _MEMORY_UNITS[match.group(2).lower()] >= _MEMORY_MINIMUM


def _batch(path, value, errors):
    """fleet.batch: a number, a percentage or a list of them, as Ansible's serial; null: none."""
    try:
        return parse_batch(value, path, "manifest field '%s'") or None
    except BatchError as exc:
        errors.append("%s" % exc)
        return None


def _resources(memory, cpus, pids):
    """A container's limits; the defaults fit what the stack runs in it."""
    return Field("dict", default={}, children={
        "memory": Field("str", default=memory, check=_is_memory_size, max_length=32,
                        fix="use a Docker memory size of at least 6m, a whole number with the unit b, k, m or g, "
                            "e.g. \"256m\""),
        "cpus": Field("number", default=cpus, minimum=0.01, maximum=1024,
                      fix="use the number of CPUs the container may use, above 0, e.g. 0.5 (from 0.01 to 1024)"),
        "pids": Field("int", default=pids, minimum=16, maximum=4194304,
                      fix="use the most processes and threads the container may run, a whole number from 16 "
                          "to 4194304"),
    })


_CANARY_HOSTS_RE = re.compile(r"([0-9]{1,5})(%?)", re.ASCII)
# A fleet canary starts on at most this many hosts by number (a percentage covers any fleet).
_CANARY_HOSTS_MAX = 10000


def _canary_hosts(path, value, errors):
    """canary.hosts: a whole number of hosts, or a percentage of the fleet written "P%"; null for every host."""
    match = _CANARY_HOSTS_RE.fullmatch(value) if isinstance(value, str) else None
    if value is None:  # written empty: the default, every host
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= _CANARY_HOSTS_MAX:
        return value
    if match and not match.group(2) and 1 <= int(match.group(1)) <= _CANARY_HOSTS_MAX:
        return int(match.group(1))
    if match and match.group(2) and 1 <= int(match.group(1)) <= 100:
        return "%d%%" % int(match.group(1))
    errors.append("manifest field '%s': %s is not a number of hosts or a percentage of the fleet; use a whole "
                  "number of hosts from 1 to %d (e.g. 1) or a percentage from 1%% to 100%% in quotes (e.g. \"50%%\"), "
                  "or remove it to start the canary on every host." % (path, _show(value), _CANARY_HOSTS_MAX))
    return None


# Latency histogram bounds in seconds, as the app and nginx's edge log both bucket requests.
LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_CANARY_STEPS_MAX = 20
# An automated rollout runs one include per look (promote_auto.yml): at most this many.
MAX_LOOKS = 3600


def _canary_steps(path, value, errors):
    """canary.steps: ascending whole percentages from 1 to 99 (the rollout then goes to 100); null: none."""
    if value is None:
        return None
    ok = (isinstance(value, list) and 1 <= len(value) <= _CANARY_STEPS_MAX
          and all(isinstance(step, int) and not isinstance(step, bool) and 1 <= step <= 99 for step in value)
          and all(low < high for low, high in zip(value, value[1:])))
    if not ok:
        errors.append("manifest field '%s': %s is not a list of ascending canary weights; use 1 to %d whole "
                      "percentages from 1 to 99 in ascending order, e.g. [5, 25, 50] (the rollout then goes to 100)."
                      % (path, _show(value), _CANARY_STEPS_MAX))
        return None
    return list(value)


def _latency_bound(path, value, errors):
    """analysis.latency_bound_seconds: one of the histogram's bounds; null: chosen from the baseline."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and float(value) in LATENCY_BOUNDS:
        return float(value)
    errors.append("manifest field '%s': %s is not a latency bucket bound; use one of %s (seconds), or remove it "
                  "to choose the bound from the baseline's latency before the canary starts."
                  % (path, _show(value), ", ".join("%g" % bound for bound in LATENCY_BOUNDS)))
    return None


def _analysis_baseline(path, value, errors):
    """analysis.baseline: the live stable slot, or a fresh one started beside the canary."""
    if value in ("stable", "fresh"):
        return value
    errors.append("manifest field '%s': %s is not allowed; use 'stable' (the live stable slot is the baseline) or "
                  "'fresh' (a third slot runs the stable release beside the canary, at its weight)."
                  % (path, _show(value)))
    return "stable"


SCHEMA = {
    "stack": Field("str", default="swiftdeploy", check=_STACK_NAME_RE,
                   fix="use a lower-case name of letters, digits, '_' and '-' (at most 63 characters); "
                       "it names the compose project"),
    "services": Field("dict", required=True, children={
        "image": _image(required=True),
        "port": _port(required=True),
        "mode": Field("str", default="stable", choices=MODES),
        "version": Field("str", default="1.0.0", check=_VERSION_RE,
                         fix="use a version of letters, digits, '.', '_', '+' and '-', quoted in YAML, e.g. \"1.0.0\""),
        # How a canary rolled forward learns it is stable: its MODE_FILE again on SIGHUP
        # (signal), or not at all (none: only nginx's routing changes). docs/app-contract.md.
        "mode_switch": Field("str", default="signal", choices=MODE_SWITCHES),
        "restart_policy": Field("str", default="unless-stopped", check=_RESTART_RE,
                                fix="use one of: no, always, unless-stopped, on-failure, or on-failure:N to restart "
                                    "at most N times (1 to 9999)"),
        # None: '<stack>-logs', filled in once the stack's name is known.
        "log_volume": _docker_name("volume"),
        # A single-threaded asyncio server: one CPU is all it can use; 64 processes leave room
        # for the health check Docker runs inside it every second.
        "resources": _resources("256m", 1.0, 64),
        # A team's own service (_manifest_service.py, docs/manifest.md "Your own service").
        "env": Field("dict", default={}, rule=service.check_env),
        "secrets": Field("list", default=[], rule=service.check_secrets),
        "command": Field("list", rule=service.check_command),
        "user": Field("str", default="10001:10001", check=service.is_user, max_length=21,
                      fix="use a numeric uid:gid other than root's, e.g. \"20000:20000\""),
        "tmpfs": Field("list", default=[{"path": "/tmp", "size": service.DEFAULT_TMPFS_SIZE}],
                       rule=service.check_tmpfs),
        "healthcheck": Field("dict", default={}, children={
            "path": Field("str", default="/healthz", check=service.HEALTH_PATH_RE,
                          fix="use an absolute path of letters, digits and . _ ~ / -, e.g. \"/ready\""),
            "interval": Field("number", default=1, minimum=0.1, maximum=3600,
                              fix="use a number of seconds from 0.1 to 3600"),
            "timeout": Field("number", default=2, minimum=0.1, maximum=600,
                             fix="use a number of seconds from 0.1 to 600"),
            "retries": Field("int", default=3, minimum=1, maximum=100, fix="use a whole number from 1 to 100"),
            "start_period": Field("number", default=0, minimum=0, maximum=3600,
                                  fix="use a number of seconds from 0 to 3600"),
            # false: the image has no HEALTHCHECK (nothing inside to run one); the stack asks the
            # path from outside only, and compose must not wait for a Docker health status.
            "docker": Field("bool", default=True),
        }),
    }),
    "nginx": Field("dict", required=True, children={
        "image": _image(required=True),
        "port": _port(required=True),
        "proxy_timeout": Field("int", default=30, minimum=1, maximum=3600,
                               fix="use a whole number of seconds from 1 to 3600"),
        "admin_port": _port(default=8082),
        # None: EDGE_KEEPALIVE_TIMEOUT with the edge, 0 without, filled in once nginx.edge is known.
        "keepalive_timeout": Field("int", minimum=0, maximum=300,
                                   fix="use a whole number of seconds from 0 (no client keep-alive) to 300"),
        # An nginx in front of the routing one that owns the public port(s) and is never reloaded by
        # a switch, so client keep-alive survives weight changes and promotions (docs/keepalive.md).
        "edge": Field("bool", default=True),
        # worker_processes is auto: one worker a host CPU, so the PID limit leaves room for
        # hosts with many CPUs; one CPU proxies far more than the one-CPU app behind it can serve.
        "resources": _resources("256m", 1.0, 256),
        # HTTPS on nginx.port (docs/tls.md). The certificate and key are files on the controller,
        # or the play variables swiftdeploy_tls_cert / swiftdeploy_tls_key when a file is not named.
        "tls": Field("dict", default={}, children={
            "enabled": Field("bool", default=False),
            "cert_file": _controller_file("certificate", "/etc/swiftdeploy/tls/shop.crt"),
            "key_file": _controller_file("private key", "/etc/swiftdeploy/tls/shop.key"),
            "redirect_port": _port(),
            "hsts_max_age": Field("int", default=0, minimum=0, maximum=63072000,
                                  fix="use a number of seconds from 0 (no Strict-Transport-Security header) to "
                                      "63072000 (two years), e.g. 31536000"),
            "expiry_warn_days": Field("int", default=30, minimum=0, maximum=365,
                                      fix="use a whole number of days from 0 to 365"),
        }),
    }),
    "opa": Field("dict", default={}, children={
        "image": _image(default=DEFAULT_OPA_IMAGE),
        "port": _port(default=8181),
        "mode": Field("str", default="embedded", choices=OPA_MODES),
        "url": Field("str", check=_URL_RE, max_length=2048,
                     fix="use an http(s) URL of the OPA server such as 'https://opa.example.com:8181'"),
        "timeout": Field("number", default=5, minimum=0.1, maximum=60,
                         fix="use a number of seconds from 0.1 to 60"),
        # The sidecar answers a handful of small queries a deploy; Go's threads fit in 128.
        "resources": _resources("256m", 0.5, 128),
        "allow_http": Field("bool", default=False),
        "ca_path": Field("str", check=_CA_PATH_RE,
                         fix="use the absolute path on the controller of a PEM file of CA certificates, "
                             "such as '/etc/pki/opa-ca.pem'"),
    }),
    "network": Field("dict", default={}, children={
        # None: '<stack>-net', filled in once the stack's name is known.
        "name": _docker_name("network"),
        "driver_type": Field("str", default="bridge", choices=NETWORK_DRIVERS),
    }),
    "contact": Field("str", required=True, check=_is_contact,
                     fix="use an e-mail address or URL of letters, digits and @ . _ + : / - (at most 128 characters); "
                         "quotes, braces, semicolons, '$' and line breaks are not allowed"),
    "canary": Field("dict", default={}, children={
        "weight": Field("int", default=10, minimum=1, maximum=100,
                        fix="use the percentage of traffic for the canary, a whole number from 1 to 100"),
        "image": _image(),
        "version": Field("str", check=_VERSION_RE,
                         fix="use a version of letters, digits, '.', '_', '+' and '-', quoted in YAML, e.g. \"1.1.0\""),
        "window_seconds": Field("int", default=30, minimum=5, maximum=APP_HISTORY_SECONDS,
                                fix="use a whole number of seconds from 5 to %d, as the app keeps its per-second "
                                    "metrics for %d s and a longer window could not be measured"
                                    % (APP_HISTORY_SECONDS, APP_HISTORY_SECONDS)),
        "metrics": Field("str", default="edge", choices=CANARY_METRICS),
        # A fleet canary's hosts (docs/fleet-canary.md): None, every host of the play.
        "hosts": Field("any", rule=_canary_hosts),
        # Sticky sessions (docs/sticky-sessions.md): a cookie keeps a client on its release.
        "sticky": Field("bool", default=False),
        # None: STICKY_MAX_AGE, filled in once canary.sticky is known to be on.
        "sticky_max_age": Field("int", minimum=60, maximum=604800,
                                fix="use how long a client keeps its release, a whole number of seconds from 60 to "
                                    "604800 (a week)"),
        # promote.yml -e mode=auto (docs/auto-rollout.md): the weights, then 100.
        "steps": Field("any", rule=_canary_steps),
        "interval_seconds": Field("int", default=30, minimum=1, maximum=600,
                                  fix="use the seconds between two judgements of an automated rollout, a whole "
                                      "number from 1 to 600"),
        "max_duration_seconds": Field("int", default=1800, minimum=10, maximum=86400,
                                      fix="use the longest an automated rollout may take, a whole number of seconds "
                                          "from 10 to 86400"),
    }),
    # The comparison of a canary with its live baseline (docs/analysis.md, docs/auto-rollout.md).
    "analysis": Field("dict", default={}, children={
        "alpha": Field("number", default=0.01, minimum=0.0001, maximum=0.2,
                       fix="use the highest acceptable rate of false rollbacks, from 0.0001 to 0.2, e.g. 0.01"),
        "min_canary_requests": Field("int", default=1000, minimum=1, maximum=10000000,
                                     fix="use the fewest canary requests an automated rollout may promote on, "
                                         "1 or more, e.g. 1000"),
        "latency_bound_seconds": Field("any", rule=_latency_bound),
        "baseline": Field("str", default="stable", rule=_analysis_baseline),
    }),
    "policy": Field("dict", default={}, children={
        "fail_open": Field("bool", default=False),
        "thresholds": Field("dict", default={}, children={
            "min_disk_free_gb": Field("number", default=5.0, minimum=0, maximum=1000000,
                                      fix="use a number of gigabytes, 0 or more"),
            "max_cpu_load": Field("number", default=16.0, minimum=0, maximum=100000,
                                  fix="use the highest acceptable 1-minute load average, 0 or more"),
            "min_mem_free_percent": Field("number", default=10.0, minimum=0, maximum=100,
                                          fix="use a percentage from 0 to 100"),
            "max_error_rate_percent": Field("number", default=1.0, minimum=0, maximum=100,
                                            fix="use a percentage from 0 to 100"),
            "max_p99_latency_ms": Field("number", default=500.0, minimum=0, maximum=600000,
                                        fix="use a number of milliseconds, 0 or more"),
            "min_requests": Field("int", default=20, minimum=1, maximum=10000000,
                                  fix="use the smallest number of canary requests a decision may rest on, 1 or more"),
        }),
    }),
    "chaos": Field("dict", default={}, children={
        "allow_from": Field("list", default=[], item="cidr", max_length=256),
    }),
    # A rolling deploy's default batch size, as Ansible's serial (docs/fleet-rollout.md).
    "fleet": Field("dict", default={}, children={
        "batch": Field("any", rule=_batch),
    }),
}


class ManifestError(Exception):
    """Raised with every problem found, so a user can fix them all in one pass."""

    def __init__(self, errors):
        self.errors = list(errors)
        super(ManifestError, self).__init__("\n".join(self.errors))


def _show(value):
    """Render a value the way the user wrote it, in at most 80 characters however long or deep it is."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null (empty)"
    else:
        text = _brief(value, _SHOW_WIDTH + 1)
    return text if len(text) <= _SHOW_WIDTH else text[:_SHOW_WIDTH - 3] + "..."


def _brief(value, room):
    """repr(value), or a prefix of it longer than `room`: only as much of the value is read as is
    shown, so a 1 MiB string or a structure nested 10,000 deep costs no more than a short one."""
    if room <= 0:
        return "..."
    if isinstance(value, str):
        return repr(str(value[:room]))
    if isinstance(value, (bytes, bytearray)):
        return repr(bytes(value[:room]))
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 256:
            # Python refuses to write out an int of more than 4300 digits; none is needed here.
            return "an integer of about %d digits" % int(value.bit_length() * math.log10(2))
        return repr(int(value))
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, dict):
        opening, closing, items = "{", "}", value.items()
    elif isinstance(value, (list, tuple)):
        opening, closing, items = "[", "]", value
    elif isinstance(value, (set, frozenset)):
        opening, closing, items = "{", "}", value
    else:
        return "<%s>" % type(value).__name__
    parts, used = [opening], 1
    for item in items:
        if used >= room:
            parts.append("...")
            return "".join(parts)
        text = ", " if used > 1 else ""
        if isinstance(value, dict):
            key = _brief(item[0], room - used - len(text))
            text += key + ": " + _brief(item[1], room - used - len(text) - len(key) - 2)
        else:
            text += _brief(item, room - used - len(text))
        parts.append(text)
        used += len(text)
    parts.append(closing)
    return "".join(parts)


def _key_text(key):
    """A key as it goes into a field path: as written when it is a short printable name."""
    if isinstance(key, str) and 0 < len(key) <= 40 and key.isprintable() and "'" not in key:
        return key
    text = _show(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return type(value).__name__


_EXPECTED = {
    "int": "a whole number",
    "number": "a number",
    "str": "a string",
    "bool": "true or false",
    "dict": "a mapping of keys",
    "list": "a list",
}


def _check_type(path, field, value, errors):
    """Return True when value has the field's type; otherwise record why not."""
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool)
        and not (isinstance(value, float) and not math.isfinite(value)),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "dict": isinstance(value, dict),
        "list": isinstance(value, list),
        "any": True,
    }[field.kind]
    if ok:
        return True
    hint = field.fix or ("use one of: %s" % ", ".join(field.choices) if field.choices else "")
    shown = _show(value)
    if field.kind == "str" and isinstance(value, (int, float)) and not isinstance(value, bool) \
            and len(shown) <= 40 and not shown.startswith("an "):
        hint = "quote it in YAML, e.g. \"%s\"" % shown
    message = "manifest field '%s': %s is %s, expected %s" % (path, shown, _type_name(value), _EXPECTED[field.kind])
    errors.append(message + ("; %s." % hint if hint else "."))
    return False


def _check_cidr(path, value, errors):
    try:
        if len(value) > 64:  # the longest IPv6 CIDR range has 43 characters
            raise ValueError(value)
        network = ipaddress.ip_network(value, strict=False)
    except (ValueError, TypeError):
        errors.append("manifest field '%s': %s is not an IP address or CIDR range; use e.g. '192.0.2.10' "
                      "or '10.0.0.0/8'." % (path, _show(value)))
        return None
    return str(network)


def _matches(check, value):
    return check(value) if callable(check) else check.fullmatch(value) is not None


def _check_value(path, field, value, errors):
    """Return True when value passes the field's rules; otherwise record every reason it does not."""
    count = len(errors)
    if field.kind == "str" and len(value) > field.max_length:
        errors.append("manifest field '%s': %s is too long (%d characters, at most %d); %s."
                      % (path, _show(value), len(value), field.max_length, field.fix or "shorten it"))
        return False
    if field.choices is not None and value not in field.choices:
        errors.append("manifest field '%s': %s is not allowed; use one of: %s." % (path, _show(value), ", ".join(field.choices)))
    if field.check is not None and not _matches(field.check, value):
        errors.append("manifest field '%s': %s is not valid; %s." % (path, _show(value), field.fix))
    if field.minimum is not None and value < field.minimum or field.maximum is not None and value > field.maximum:
        errors.append("manifest field '%s': %s is out of range; %s." % (path, _show(value), field.fix))
    return len(errors) == count


def _unknown_key(path, key, allowed, errors):
    name = _key_text(key)
    where = "manifest field '%s'" % ("%s.%s" % (path, name) if path else name)
    # A suggestion is worth its cost only for a few short keys.
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6) \
        if isinstance(key, str) and len(key) <= 40 and len(errors) < MAX_ERRORS else []
    hint = "did you mean '%s'? " % ("%s.%s" % (path, close[0]) if path else close[0]) if close else ""
    errors.append("%s: unknown key; %sremove it or use one of: %s." % (where, hint, ", ".join(sorted(allowed))))


def _validate_list(path, field, value, errors):
    if len(value) > field.max_length:
        errors.append("manifest field '%s': %s has %d entries, more than %d; list fewer addresses, or wider "
                      "CIDR ranges." % (path, _show(value), len(value), field.max_length))
        return []
    items = []
    for index, item in enumerate(value):
        item_path = "%s[%d]" % (path, index)
        if not isinstance(item, str):
            errors.append("manifest field '%s': %s is %s, expected a string such as '10.0.0.0/8'."
                          % (item_path, _show(item), _type_name(item)))
            continue
        normalised = _check_cidr(item_path, item, errors)
        if normalised is not None:
            items.append(normalised)
    return items


def _validate_dict(path, schema, data, errors):
    result = {}
    for key in data:
        if key not in schema:
            _unknown_key(path, key, schema, errors)
    for key, field in schema.items():
        sub = "%s.%s" % (path, key) if path else key
        if key not in data or (data[key] is None and not field.required and field.kind == "dict"):
            if field.required:
                fix = field.fix or ("add a '%s:' section" % key if field.kind == "dict" else "add it")
                errors.append("manifest field '%s': required but missing; add it (%s)." % (sub, fix))
                continue
            if field.children is not None:
                result[key] = _validate_dict(sub, field.children, {}, errors)
            elif field.default is not None:
                result[key] = copy.deepcopy(field.default)
            else:
                result[key] = None
            continue
        value = data[key]
        if field.digits and isinstance(value, str) and _PORT_TEXT_RE.fullmatch(value):
            value = int(value)
        if not _check_type(sub, field, value, errors):
            continue
        if field.rule is not None:
            result[key] = field.rule(sub, value, errors)
        elif field.kind == "dict":
            result[key] = _validate_dict(sub, field.children, value, errors)
        elif field.kind == "list":
            result[key] = _validate_list(sub, field, value, errors)
        elif _check_value(sub, field, value, errors):
            # The range check came first, so a number is finite and small enough for a float.
            result[key] = float(value) if field.kind == "number" else value
    return result


def _stack_defaults(manifest):
    """Names that default to the stack's own, so two stacks on a host never share them by accident."""
    if manifest["network"]["name"] is None:
        manifest["network"]["name"] = "%s-net" % manifest["stack"]
    if manifest["services"]["log_volume"] is None:
        manifest["services"]["log_volume"] = "%s-logs" % manifest["stack"]


def _cross_field_rules(manifest, errors):
    """Rules that span fields: published ports that would clash, engine-specific keys."""
    # The OPA sidecar publishes no port (the host reaches it on its own network), so opa.port
    # cannot clash.
    published = [("nginx.port", manifest["nginx"]["port"]), ("nginx.admin_port", manifest["nginx"]["admin_port"])]
    tls = manifest["nginx"]["tls"]
    if tls["enabled"] and tls["redirect_port"] is not None:
        published.append(("nginx.tls.redirect_port", tls["redirect_port"]))
    for key in ("cert_file", "key_file", "redirect_port", "hsts_max_age"):
        if not tls["enabled"] and tls[key]:
            errors.append("manifest field 'nginx.tls.%s': %s is set but nginx.tls.enabled is false, so it would be "
                          "ignored; set nginx.tls.enabled: true for HTTPS, or remove it." % (key, _show(tls[key])))
    seen = {}
    for path, port in published:
        if port in seen:
            errors.append("manifest field '%s': port %d is already used by '%s'; every port published on the host "
                          "must differ, choose another one." % (path, port, seen[port]))
        else:
            seen[port] = path
    if manifest["opa"]["mode"] == "external" and not manifest["opa"]["url"]:
        errors.append("manifest field 'opa.url': required when opa.mode is 'external'; set it to the OPA server's URL, "
                      "e.g. 'https://opa.example.com:8181'.")
    if (manifest["opa"]["mode"] == "external" and (manifest["opa"]["url"] or "").lower().startswith("http://")
            and not manifest["opa"]["allow_http"]):
        errors.append("manifest field 'opa.url': %s is plain HTTP, so the decision and the token could be read or "
                      "forged on the way; use an https:// URL, or set opa.allow_http: true if OPA is reached over "
                      "a trusted network only." % _show(manifest["opa"]["url"]))
    service.cross_rules(manifest["services"], errors)
    canary = manifest["canary"]
    if not canary["sticky"] and canary["sticky_max_age"] is not None:
        errors.append("manifest field 'canary.sticky_max_age': %s is set but canary.sticky is false, so it would be "
                      "ignored; set canary.sticky: true for sticky sessions, or remove it."
                      % _show(canary["sticky_max_age"]))
    if canary["sticky_max_age"] is None:
        canary["sticky_max_age"] = STICKY_MAX_AGE
    if manifest["nginx"]["keepalive_timeout"] is None:
        manifest["nginx"]["keepalive_timeout"] = EDGE_KEEPALIVE_TIMEOUT if manifest["nginx"]["edge"] else 0
    _fresh_baseline_rules(manifest, errors)
    looks = len(canary["steps"] or [canary["weight"]]) + 1
    if canary["max_duration_seconds"] < looks * canary["interval_seconds"]:
        errors.append("manifest field 'canary.max_duration_seconds': %d s is shorter than %d looks of "
                      "canary.interval_seconds (%d s), the least an automated rollout of these steps takes; raise it "
                      "to at least %d, or shorten canary.interval_seconds."
                      % (canary["max_duration_seconds"], looks, canary["interval_seconds"],
                         looks * canary["interval_seconds"]))
    if canary["max_duration_seconds"] > MAX_LOOKS * canary["interval_seconds"]:
        errors.append("manifest field 'canary.max_duration_seconds': %d s is more than %d looks of "
                      "canary.interval_seconds (%d s); lower it to at most %d, or lengthen canary.interval_seconds."
                      % (canary["max_duration_seconds"], MAX_LOOKS, canary["interval_seconds"],
                         MAX_LOOKS * canary["interval_seconds"]))
    if canary["image"] is None:
        canary["image"] = manifest["services"]["image"]
    if canary["version"] is None:
        canary["version"] = manifest["services"]["version"]


# With a fresh baseline the canary and the baseline each get a step's weight from the stable slot.
MAX_FRESH_WEIGHT = 50


def _fresh_baseline_rules(manifest, errors):
    """analysis.baseline: fresh takes each weight twice from the stable slot (canary and baseline),
    and has no sticky-session cookie of its own (docs/auto-rollout.md, "A fresh baseline")."""
    canary = manifest["canary"]
    if manifest["analysis"]["baseline"] != "fresh":
        return
    for index, weight in enumerate(canary["steps"] or []):
        if weight > MAX_FRESH_WEIGHT:
            errors.append("manifest field 'canary.steps[%d]': %d is more than %d, but with analysis.baseline: fresh "
                          "the canary and the baseline get %d%% each, leaving the stable slot %d%%; use steps of at "
                          "most %d (the rollout then goes to 100), or analysis.baseline: stable."
                          % (index, weight, MAX_FRESH_WEIGHT, weight, 100 - 2 * weight, MAX_FRESH_WEIGHT))
    if not canary["steps"] and canary["weight"] > MAX_FRESH_WEIGHT:
        errors.append("manifest field 'canary.weight': %d is more than %d, but with analysis.baseline: fresh and no "
                      "canary.steps the rollout's one step is this weight, for the canary and the baseline each; set "
                      "canary.steps (e.g. [5, 25, 50]) or a weight of at most %d, or use analysis.baseline: stable."
                      % (canary["weight"], MAX_FRESH_WEIGHT, MAX_FRESH_WEIGHT))
    if canary["sticky"]:
        errors.append("manifest field 'analysis.baseline': 'fresh' cannot be used with canary.sticky: true (a sticky "
                      "cookie names the stable or the canary release, and the fresh baseline is neither); set "
                      "analysis.baseline: stable, or canary.sticky: false.")


def validate_manifest(data):
    """Validate a parsed manifest and return it with every default filled in.

    Raises ManifestError listing every problem found (the first MAX_ERRORS of them).
    """
    errors = []
    if data is None:
        raise ManifestError(["manifest: the file is empty; start from the example manifest.yml in the collection."])
    if not isinstance(data, dict):
        raise ManifestError(["manifest: the top level is %s, expected a mapping with the keys services, nginx and "
                             "contact; start from the example manifest.yml in the collection." % _type_name(data)])
    result = _validate_dict("", SCHEMA, data, errors)
    if not errors:
        _stack_defaults(result)
        _cross_field_rules(result, errors)
    if len(errors) > MAX_ERRORS:
        errors[MAX_ERRORS:] = ["manifest: %d more problems are not shown; fix the ones above first."
                               % (len(errors) - MAX_ERRORS)]
    if errors:
        raise ManifestError(errors)
    return result


def required_paths(schema=None, prefix=""):
    """Every field path the manifest must contain, for the 'required fields present' check."""
    schema = SCHEMA if schema is None else schema
    paths = []
    for key, field in schema.items():
        path = "%s.%s" % (prefix, key) if prefix else key
        if field.required:
            paths.append(path)
            if field.kind == "dict":
                paths.extend(required_paths(field.children, path))
    return paths
