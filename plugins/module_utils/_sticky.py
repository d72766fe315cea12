# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Sticky sessions (canary.sticky): what nginx.conf's cookie routing is rendered from, pure.

This is a private module_utils file: its API may change without notice. No Ansible imports, no
I/O, so the unit tests drive every rule as a table.

A client's cookie names a release, not a slot: `<slot>.<generation>`, where the generation is the
routing generation at which the slot's current release was first routed (the state's
`slot_generations`, stamped by _state.with_generations). Slots are reused (the next canary may
land in the slot an earlier release left), and the stamp of a slot changes whenever another
release moves into it, so a cookie from an earlier release of a slot names no live release and
its client is a new client. nginx honours only the values listed here, one a live slot; any
other value (none, stale, forged) is never echoed back, only replaced. See
docs/sticky-sessions.md.
"""

from __future__ import annotations

import re

COOKIE_PREFIX = "swiftdeploy_release_"
# The cookie's name is part of an nginx variable ($cookie_<name>), whose name nginx reads as
# letters, digits and '_' only; lower case, as the stack's name is.
COOKIE_NAME_RE = re.compile(r"[a-z0-9_]{1,96}", re.ASCII)
SLOT_RE = re.compile(r"blue|green", re.ASCII)
MAX_GENERATION = 2 ** 53
# Attributes every cookie carries: the whole site, not readable by scripts, sent on top-level
# navigation from other sites (a link into the site keeps its release) but not on their
# sub-requests.
ATTRIBUTES = "Path=/; HttpOnly; SameSite=Lax"
MIN_MAX_AGE = 60
MAX_MAX_AGE = 604800


class StickyError(ValueError):
    """A value the cookie routing cannot be rendered from; the message names it and the fix."""


def cookie_name(stack):
    """The stack's cookie: 'swiftdeploy_release_' and the stack's name with '-' written as '_', so two
    stacks on one host name (cookies ignore the port) keep a cookie each."""
    name = COOKIE_PREFIX + (stack if isinstance(stack, str) else "").replace("-", "_")
    if not COOKIE_NAME_RE.fullmatch(name) or name == COOKIE_PREFIX:
        raise StickyError("stack: %r cannot name a cookie; use a stack name of lower-case letters, digits, '_' and '-'"
                          % (stack,))
    return name


def _generation(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_GENERATION:
        raise StickyError("%s: %r is not a routing generation; it must be a whole number of 1 or more" % (where, value))
    return value


def slot_generation(live, slot):
    """The generation that names the release in `slot`: its stamp in slot_generations, or the
    state's own generation for a state written before sticky sessions were on (the release runs
    at that generation, so the value names it)."""
    stamps = live.get("slot_generations") or {}
    if slot in stamps:
        return _generation(stamps[slot], "slot_generations.%s" % slot)
    return _generation(live.get("generation"), "generation")


def release_value(slot, generation):
    """The cookie's value for the release `slot` runs since `generation`: 'green.7'."""
    if not isinstance(slot, str) or not SLOT_RE.fullmatch(slot):
        raise StickyError("slot: %r is not a slot; a slot is blue or green" % (slot,))
    return "%s.%d" % (slot, _generation(generation, "generation"))


def max_age(value):
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_MAX_AGE <= value <= MAX_MAX_AGE:
        raise StickyError("canary.sticky_max_age: %r is out of range; use a whole number of seconds from %d to %d"
                          % (value, MIN_MAX_AGE, MAX_MAX_AGE))
    return value


def set_cookie(name, value, seconds, secure):
    """The Set-Cookie header's value for a new client."""
    return "%s=%s; %s; Max-Age=%d%s" % (name, value, ATTRIBUTES, max_age(seconds), "; Secure" if secure else "")


def sticky_routing(stack, live):
    """What nginx.conf's sticky routing is rendered from, for a validated manifest and live state:
    {cookie: its name, slots: [{slot, value, set_cookie}] sorted by slot}. Each entry is a live
    slot: `value` is the only cookie value that keeps a client on it, `set_cookie` the header a
    new client routed to it is given (Secure when the public listener is HTTPS)."""
    name = cookie_name(stack.get("stack"))
    canary = stack.get("canary") or {}
    seconds = canary.get("sticky_max_age")
    secure = bool(((stack.get("nginx") or {}).get("tls") or {}).get("enabled"))
    slots = []
    for slot in sorted(live["slots"]):
        value = release_value(slot, slot_generation(live, slot))
        slots.append({"slot": slot, "value": value, "set_cookie": set_cookie(name, value, seconds, secure)})
    return {"cookie": name, "slots": slots}
