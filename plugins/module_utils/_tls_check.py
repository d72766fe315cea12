# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The checks a stack's TLS certificate and key pass on the controller before anything is deployed.

This is a private module_utils file: its API may change without notice. No Ansible imports; it
needs the `cryptography` library, which only the controller has to have (the managed host gets
the files through _tls_files.py, standard library only).

check_pair() reads a certificate file's text and a key's text and either returns what a run
needs to know (fingerprint, file stem, expiry, names, warnings) or raises TlsCheckError with
every problem found, each one sentence naming where the value came from (a manifest field or a
play variable) and the fix. The key's text never appears in a message.
"""

from __future__ import annotations

import datetime
import ipaddress

from ansible_collections.swiftdeploy.stack.plugins.module_utils._tls_files import (
    TlsFileError,
    certificates,
    fingerprint,
    pem_blocks,
    stem,
)

try:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtensionOID, NameOID
    HAS_CRYPTOGRAPHY = True
    CRYPTOGRAPHY_ERROR = None
except ImportError as exc:  # reported by check_pair, with the fix
    HAS_CRYPTOGRAPHY = False
    CRYPTOGRAPHY_ERROR = str(exc)

# A certificate or key file is a few KiB; a chain of ten certificates stays far below this.
MAX_PEM_BYTES = 256 * 1024
_KEY_LABELS = ("PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY")
# RSA below this is refused by current clients (and by OpenSSL's default security level 2).
MIN_RSA_BITS = 2048


class TlsCheckError(ValueError):
    """Every problem found with a certificate and key, one sentence each."""

    def __init__(self, errors):
        self.errors = list(errors)
        super(TlsCheckError, self).__init__("\n".join(self.errors))


def _text_problem(text, where, what):
    """Why text cannot be a PEM file at all, or None."""
    if not isinstance(text, str) or not text.strip():
        return "%s is empty; give the %s as PEM text" % (where, what)
    if len(text) > MAX_PEM_BYTES:
        return "%s is %d characters long, more than a %s file ever is (%d); give the right file" \
            % (where, len(text), what, MAX_PEM_BYTES)
    try:
        text.encode("ascii")
    except UnicodeEncodeError:
        return "%s is not ASCII text, so it is not PEM; give the %s in PEM form (openssl x509 -outform PEM)" \
            % (where, what)
    return None


def _utc(moment):
    """A certificate's validity bound as an aware UTC datetime, on any cryptography release."""
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _names(cert):
    """The DNS names and IP addresses a certificate is valid for (its SAN, else its CN)."""
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        return [str(name) for name in san.get_values_for_type(x509.DNSName)] + \
            [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        return [str(attribute.value) for attribute in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def covers(names, host):
    """Whether a certificate valid for `names` is valid for `host` (an IP address or DNS name;
    a wildcard covers exactly one label)."""
    host = host.lower().rstrip(".")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for name in names:
        name = name.lower().rstrip(".")
        if address is not None:
            try:
                if ipaddress.ip_address(name) == address:
                    return True
            except ValueError:
                pass
            continue
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _load_key(key_text, key_where, errors):
    labels = [label for label, _der in pem_blocks(key_text)]
    if "ENCRYPTED PRIVATE KEY" in labels or "Proc-Type: 4,ENCRYPTED" in key_text:
        errors.append("%s is encrypted with a passphrase, which nginx cannot be given here; store it decrypted "
                      "(openssl pkey -in KEY -out KEY.plain) and protect the file or variable instead (Vault, an AWX "
                      "credential)" % key_where)
        return None
    if not any(label in _KEY_LABELS for label in labels):
        errors.append("%s holds no PEM private key (a '-----BEGIN PRIVATE KEY-----' block); give the private key "
                      "that belongs to the certificate" % key_where)
        return None
    try:
        return serialization.load_pem_private_key(key_text.encode("ascii"), password=None)
    except (ValueError, TypeError) as exc:
        # The library's message never quotes the key's bytes.
        errors.append("%s is not a private key that can be read (%s); give the certificate's private key in PEM "
                      "form" % (key_where, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
    except UnsupportedAlgorithm as exc:
        errors.append("%s cannot be read (%s); give an RSA, EC or Ed25519 private key in PEM form"
                      % (key_where, type(exc).__name__))
    return None


def check_pair(cert_text, key_text, cert_where, key_where, now=None, warn_days=30, hosts=()):
    """Check a certificate file's text and its key's text; return what a run needs to know.

    cert_where / key_where say where each came from, for the messages (e.g. "nginx.tls.cert_file
    '/etc/tls/shop.pem'" or "the variable swiftdeploy_tls_key"). now: an aware datetime (default:
    the current time). hosts: names the stack is reached by; one the certificate does not cover
    is a warning, as a load balancer or DNS name may front the host.

    Returns {fingerprint, stem, subject, issuer, names, not_before, not_after, days_left,
    chain_length, warnings}; raises TlsCheckError listing every problem."""
    if not HAS_CRYPTOGRAPHY:
        raise TlsCheckError(["the Python library cryptography is needed on the controller to check %s (%s); "
                             "install it where ansible-playbook runs: pip install cryptography"
                             % (cert_where, CRYPTOGRAPHY_ERROR)])
    now = now or datetime.datetime.now(datetime.timezone.utc)
    errors = []
    for text, where, what in ((cert_text, cert_where, "certificate"), (key_text, key_where, "private key")):
        problem = _text_problem(text, where, what)
        if problem:
            errors.append(problem)
    if errors:
        raise TlsCheckError(errors)
    cert = None
    try:
        ders = certificates(cert_text)
        cert = x509.load_der_x509_certificate(ders[0])
        for der in ders[1:]:
            x509.load_der_x509_certificate(der)
    except TlsFileError as exc:
        errors.append("%s is not a PEM certificate: %s; give the server certificate in PEM form, leaf first, then "
                      "any intermediates" % (cert_where, exc))
    except ValueError as exc:
        errors.append("%s holds a certificate that cannot be parsed (%s); give the server certificate in PEM form"
                      % (cert_where, str(exc).splitlines()[0] if str(exc) else "invalid DER"))
    if any(label in _KEY_LABELS or label == "ENCRYPTED PRIVATE KEY" for label, _der in _safe_blocks(cert_text)):
        errors.append("%s contains a private key; keep the key out of the certificate file and give it separately"
                      % cert_where)
    key = _load_key(key_text, key_where, errors)
    if cert is None:
        raise TlsCheckError(errors)
    warnings = []
    not_before, not_after = _utc(_validity(cert, "before")), _utc(_validity(cert, "after"))
    days_left = (not_after - now).total_seconds() / 86400.0
    shown_after = not_after.strftime("%Y-%m-%d %H:%M UTC")
    if not_after <= now:
        errors.append("%s expired on %s; renew it and give the new certificate and key" % (cert_where, shown_after))
    elif days_left < warn_days:
        warnings.append("%s expires on %s, in %d days (less than nginx.tls.expiry_warn_days, %d); renew it soon"
                        % (cert_where, shown_after, int(days_left), warn_days))
    if not_before > now:
        errors.append("%s is not valid before %s; check the controller's clock, or wait until then"
                      % (cert_where, not_before.strftime("%Y-%m-%d %H:%M UTC")))
    public = cert.public_key()
    if getattr(public, "key_size", None) and type(public).__name__.startswith("RSA") \
            and public.key_size < MIN_RSA_BITS:
        errors.append("%s has an RSA key of %d bits, which current clients refuse; issue one with at least %d bits "
                      "or an EC key" % (cert_where, public.key_size, MIN_RSA_BITS))
    if key is not None and _public_der(key.public_key()) != _public_der(public):
        errors.append("%s does not belong to %s (their public keys differ); give the key the certificate was "
                      "issued for, or the certificate of this key" % (key_where, cert_where))
    names = _names(cert)
    for host in hosts:
        if host and not covers(names, host):
            warnings.append("%s is valid for %s, not for %s, the address this play reaches the host by; clients "
                            "that use that name will refuse it unless a name the certificate covers leads there"
                            % (cert_where, ", ".join(names) or "no name at all", host))
    if errors:
        raise TlsCheckError(errors)
    return {
        "fingerprint": fingerprint(cert_text),
        "stem": stem(cert_text),
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "names": names,
        "not_before": not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "days_left": int(days_left),
        "chain_length": len(ders),
        "warnings": warnings,
    }


def _safe_blocks(text):
    try:
        return pem_blocks(text)
    except TlsFileError:
        return []


def _validity(cert, which):
    """not_valid_before/after as UTC (the *_utc properties arrived in cryptography 42)."""
    name = "not_valid_%s" % which
    return getattr(cert, name + "_utc", None) or getattr(cert, name)


def _public_der(public_key):
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
