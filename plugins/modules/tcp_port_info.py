#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tcp_port_info
short_description: Tell whether a TCP port can be bound on the managed host
version_added: 0.1.0
description:
  - Tries to bind a TCP socket to O(address) and O(port) on the managed host and reports
    whether the port is free. Nothing is left listening.
  - Used by the validate playbook for the "nginx port free" check, so the check runs where the
    stack will run, never on the controller.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
  - swiftdeploy.stack.attributes.info_module
options:
  port:
    description: The TCP port to test.
    type: int
    required: true
  address:
    description: The local address to bind; C(0.0.0.0) tests every IPv4 address, as Docker publishes.
    type: str
    default: 0.0.0.0
attributes:
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Is 8080 free?
  swiftdeploy.stack.tcp_port_info:
    port: 8080
  register: port8080
"""

RETURN = r"""
free:
  description: Whether the port could be bound.
  returned: always
  type: bool
  sample: false
reason:
  description: Why the port could not be bound; empty when it is free.
  returned: always
  type: str
  sample: "[Errno 98] Address already in use"
"""

import socket

from ansible.module_utils.basic import AnsibleModule


def probe(address, port):
    """Return (free, reason) for a TCP bind attempt, without leaving anything listening."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR so a port in TIME_WAIT after a stopped stack still counts as free, as it
        # would for Docker.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        return True, ""
    except OSError as exc:
        return False, str(exc)
    finally:
        sock.close()


def main():
    module = AnsibleModule(
        argument_spec={
            "port": {"type": "int", "required": True},
            "address": {"type": "str", "default": "0.0.0.0"},
        },
        supports_check_mode=True,
    )
    port = module.params["port"]
    if not 1 <= port <= 65535:
        module.fail_json(msg="port: %d is not a TCP port; use a number from 1 to 65535." % port)
    free, reason = probe(module.params["address"], port)
    module.exit_json(changed=False, free=free, reason=reason)


if __name__ == "__main__":
    main()
