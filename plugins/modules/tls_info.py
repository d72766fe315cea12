#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tls_info
short_description: Check a stack's TLS certificate and key on the controller before a deploy
version_added: 0.2.0
description:
  - Reads the certificate and private key of the manifest's C(nginx.tls), either from the files
    that O(cert_file) and O(key_file) name on the controller or from the texts O(cert) and O(key)
    (the play variables C(swiftdeploy_tls_cert) and C(swiftdeploy_tls_key)), never both.
  - "Refuses, naming the field or variable and the fix: a certificate that is not PEM or cannot
    be parsed, a private key in the certificate file, a key that is not PEM, is encrypted or does
    not belong to the certificate, an RSA key under 2048 bits, a certificate that has expired or
    is not valid yet."
  - "Warns (and goes on): a certificate that expires within O(warn_days) days, one that does not
    cover a name of O(hosts)."
  - Returns the certificate's SHA-256 fingerprint (what the history records) and its file stem
    (what nginx.conf names); the key's text is never returned or shown.
  - This is an action plugin; the files are read on the controller, never on the managed host.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
  - swiftdeploy.stack.attributes.info_module
  - swiftdeploy.stack.attributes.controller_action
options:
  cert_file:
    description: Path on the controller of the PEM certificate file (leaf first, then any intermediates).
    type: str
  key_file:
    description: Path on the controller of the PEM private key file, unencrypted.
    type: str
  cert:
    description: The PEM certificate as text, when O(cert_file) is not given.
    type: str
  key:
    description: The PEM private key as text, when O(key_file) is not given. Never logged.
    type: str
  warn_days:
    description: Warn when the certificate expires within this many days.
    type: int
    default: 30
  hosts:
    description: Names or addresses clients reach the stack by; one the certificate does not cover is a warning.
    type: list
    elements: str
    default: []
requirements:
  - The Python library C(cryptography) on the controller.
notes:
  - See C(docs/tls.md) in the collection.
seealso:
  - module: swiftdeploy.stack.tls_files
"""

EXAMPLES = r"""
- name: Check the certificate and key
  swiftdeploy.stack.tls_info:
    cert_file: /etc/swiftdeploy/tls/shop.crt
    key_file: /etc/swiftdeploy/tls/shop.key
    hosts: [shop.example.com]
  register: swiftdeploy_tls

- name: Check a certificate and key given as variables (an AWX credential injects them)
  swiftdeploy.stack.tls_info:
    cert: "{{ swiftdeploy_tls_cert }}"
    key: "{{ swiftdeploy_tls_key }}"
"""

RETURN = r"""
fingerprint:
  description: SHA-256 of the leaf certificate (DER), lower-case hex.
  returned: success
  type: str
  sample: 3f0c5c8a0e4d4b0f9d2f6b2f5a1c7e9d8b6a4c2e0f1d3b5a7c9e1f3a5b7c9d1e
stem:
  description: The name the pair's files get on the host (C(<stem>.crt), C(<stem>.key)); a digest of every certificate of the file.
  returned: success
  type: str
  sample: 9a1c0e33b5d27f4e
subject:
  description: The leaf certificate's subject (RFC 4514).
  returned: success
  type: str
  sample: CN=shop.example.com
issuer:
  description: The leaf certificate's issuer (RFC 4514).
  returned: success
  type: str
  sample: CN=Example CA
names:
  description: The DNS names and IP addresses the certificate is valid for (its subject alternative names, else its common name).
  returned: success
  type: list
  elements: str
  sample: [shop.example.com, 192.0.2.10]
not_before:
  description: Start of validity, UTC.
  returned: success
  type: str
  sample: "2026-12-01T00:00:00Z"
not_after:
  description: End of validity, UTC.
  returned: success
  type: str
  sample: "2027-03-01T00:00:00Z"
days_left:
  description: Whole days until RV(not_after).
  returned: success
  type: int
  sample: 84
chain_length:
  description: How many certificates the file holds.
  returned: success
  type: int
  sample: 2
errors:
  description: Every problem found, one sentence each.
  returned: failure
  type: list
  elements: str
  sample:
    - "nginx.tls.key_file '/etc/tls/old.key' does not belong to nginx.tls.cert_file '/etc/tls/shop.crt' (their public keys differ); ..."
"""
