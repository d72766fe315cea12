# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""A stack's TLS certificate and key as files nginx reads: names, PEM blocks, the pair on disk.

This is a private module_utils file: its API may change without notice. No Ansible imports and
nothing beyond the standard library, so it runs on any managed host (the checks that need the
`cryptography` library run on the controller, in _tls_check.py).

A pair is stored as <stem>.crt and <stem>.key, the stem derived from the certificate file's
certificates. nginx.conf names the stem, so a new certificate is a changed nginx.conf: the
converge tests it with `nginx -t` and reloads nginx gracefully, exactly as for a routing change,
and the pair it replaces stays on disk until nginx.conf no longer names it.
"""

from __future__ import annotations

import base64
import binascii
import errno
import hashlib
import os
import re

from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import write_atomic

CERT_SUFFIX = ".crt"
KEY_SUFFIX = ".key"
CERT_MODE = 0o644
KEY_MODE = 0o600
DIR_MODE = 0o700
# 16 hex digits of SHA-256: unique among the pairs one stack ever holds, short in nginx.conf.
STEM_LENGTH = 16
_STEM_RE = re.compile(r"[0-9a-f]{%d}" % STEM_LENGTH, re.ASCII)
_PEM_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,64})-----\r?\n(.*?)-----END \1-----", re.ASCII | re.DOTALL)
# How nginx.conf names a pair (the role's template): .../tls/<stem>.crt and .key.
_REFERENCE_RE = re.compile(r"/tls/([0-9a-f]{%d})\.(?:crt|key)\b" % STEM_LENGTH, re.ASCII)


class TlsFileError(ValueError):
    """A certificate or key text that cannot be stored, or a pair that cannot be written."""


def pem_blocks(text):
    """[(label, DER bytes)] of the PEM blocks in text, in order; TlsFileError for a block whose
    body is not base64."""
    blocks = []
    for match in _PEM_RE.finditer(text):
        body = "".join(line.strip() for line in match.group(2).splitlines()
                       if line.strip() and ":" not in line)  # skip RFC 1421 headers (Proc-Type: ...)
        try:
            blocks.append((match.group(1), base64.b64decode(body, validate=True)))
        except (binascii.Error, ValueError):
            raise TlsFileError("the PEM block %s is not valid base64" % match.group(1))
    return blocks


def certificates(text):
    """The DER of each CERTIFICATE block, leaf first; TlsFileError when there is none."""
    ders = [der for label, der in pem_blocks(text) if label == "CERTIFICATE"]
    if not ders:
        raise TlsFileError("it holds no PEM certificate (a '-----BEGIN CERTIFICATE-----' block)")
    return ders


def fingerprint(text):
    """SHA-256 of the leaf certificate's DER, lower-case hex: what the history records."""
    return hashlib.sha256(certificates(text)[0]).hexdigest()


def stem(text):
    """The file stem of a certificate file: a digest of all its certificates, so a changed
    chain under the same leaf is a new pair too."""
    digest = hashlib.sha256()
    for der in certificates(text):
        digest.update(hashlib.sha256(der).digest())
    return digest.hexdigest()[:STEM_LENGTH]


def normalised(text):
    """PEM text as written to disk: one trailing newline, no carriage returns."""
    return text.replace("\r\n", "\n").strip() + "\n"


def referenced_stems(conf_text):
    """The stems an nginx.conf names."""
    return set(_REFERENCE_RE.findall(conf_text or ""))


def stale_files(names, keep):
    """The file names of a TLS directory to remove: pairs whose stem is not in keep. Files that
    are not a pair's are left alone."""
    stale = []
    for name in sorted(names):
        base, suffix = os.path.splitext(name)
        if suffix in (CERT_SUFFIX, KEY_SUFFIX) and _STEM_RE.fullmatch(base) and base not in keep:
            stale.append(name)
    return stale


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


def needs_write(path, content, mode, uid, gid):
    """Whether the file at path differs from content or has another mode or owner."""
    if read_bytes(path) != content.encode("ascii"):
        return True
    info = os.lstat(path)
    return (info.st_mode & 0o7777) != mode or (uid is not None and info.st_uid != uid) \
        or (gid is not None and info.st_gid != gid)


def write_private(path, content, mode, uid, gid):
    """Write content to path atomically: a new file created with `mode` (so the key is never
    readable by others, not even for an instant), owned by uid:gid, synced, then renamed over
    path. Not through atomic_move, which gives a new file the umask's mode before it could be
    narrowed again."""
    write_atomic(path, content.encode("ascii"), mode, uid, gid)
