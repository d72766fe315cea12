"""HTTPS: the controller's checks of a certificate and key, and the files nginx reads them from."""

import datetime
import hashlib
import os
import stat

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from ansible_collections.swiftdeploy.stack.plugins.action.tls_info import source
from ansible_collections.swiftdeploy.stack.plugins.module_utils._tls_check import TlsCheckError, check_pair, covers
from ansible_collections.swiftdeploy.stack.plugins.module_utils._tls_files import (
    TlsFileError,
    fingerprint,
    needs_write,
    normalised,
    referenced_stems,
    stale_files,
    stem,
    write_private,
)

from tls_material import NOW, cert_pem, key_pem, make_ca, make_leaf, new_key

CERT = "nginx.tls.cert_file '/etc/tls/shop.crt'"
KEY = "nginx.tls.key_file '/etc/tls/shop.key'"
CA = make_ca()
KEY_OBJ, LEAF = make_leaf(CA)
GOOD_CERT, GOOD_KEY = cert_pem(LEAF), key_pem(KEY_OBJ)
UNTIL = (NOW + datetime.timedelta(days=89)).strftime("%Y-%m-%d %H:%M UTC")


def check(cert=GOOD_CERT, key=GOOD_KEY, **kwargs):
    kwargs.setdefault("now", NOW)
    return check_pair(cert, key, CERT, KEY, **kwargs)


def errors_of(cert=GOOD_CERT, key=GOOD_KEY, **kwargs):
    with pytest.raises(TlsCheckError) as caught:
        check(cert, key, **kwargs)
    return caught.value.errors


def test_a_valid_pair_gives_what_the_run_needs():
    found = check(hosts=["localhost", "127.0.0.1"])
    assert found["fingerprint"] == LEAF.fingerprint(hashes.SHA256()).hex()
    assert found["stem"] == stem(GOOD_CERT) and len(found["stem"]) == 16
    assert found["names"] == ["localhost", "127.0.0.1"]
    assert found["not_after"] == (NOW + datetime.timedelta(days=89)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert found["days_left"] == 89
    assert found["chain_length"] == 1
    assert found["subject"] == "CN=localhost" and found["issuer"] == "CN=SwiftDeploy test CA"
    assert found["warnings"] == []
    assert GOOD_KEY not in repr(found)


def test_a_chain_is_accepted_leaf_first():
    assert check(cert=GOOD_CERT + cert_pem(CA[1]))["chain_length"] == 2


EXPIRED = make_leaf(CA, days=10, start_days=-20)
FUTURE = make_leaf(CA, start_days=2)
OTHER_KEY = key_pem(new_key())
ENCRYPTED_KEY = key_pem(KEY_OBJ, password=b"secret")
WEAK = make_leaf(CA, key=new_key("rsa", 1024))


@pytest.mark.parametrize("cert, key, expected", [
    (cert_pem(EXPIRED[1]), key_pem(EXPIRED[0]),
     ["%s expired on %s; renew it and give the new certificate and key"
      % (CERT, (NOW - datetime.timedelta(days=10)).strftime("%Y-%m-%d %H:%M UTC"))]),
    (cert_pem(FUTURE[1]), key_pem(FUTURE[0]),
     ["%s is not valid before %s; check the controller's clock, or wait until then"
      % (CERT, (NOW + datetime.timedelta(days=2)).strftime("%Y-%m-%d %H:%M UTC"))]),
    (GOOD_CERT, OTHER_KEY,
     ["%s does not belong to %s (their public keys differ); give the key the certificate was issued for, or the "
      "certificate of this key" % (KEY, CERT)]),
    ("not a certificate\n", GOOD_KEY,
     ["%s is not a PEM certificate: it holds no PEM certificate (a '-----BEGIN CERTIFICATE-----' block); give the "
      "server certificate in PEM form, leaf first, then any intermediates" % CERT]),
    ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", GOOD_KEY, None),
    ("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", GOOD_KEY,
     ["%s is not a PEM certificate: the PEM block CERTIFICATE is not valid base64; give the server certificate in "
      "PEM form, leaf first, then any intermediates" % CERT]),
    (GOOD_CERT, "not a key",
     ["%s holds no PEM private key (a '-----BEGIN PRIVATE KEY-----' block); give the private key that belongs to "
      "the certificate" % KEY]),
    (GOOD_CERT, ENCRYPTED_KEY,
     ["%s is encrypted with a passphrase, which nginx cannot be given here; store it decrypted (openssl pkey -in KEY "
      "-out KEY.plain) and protect the file or variable instead (Vault, an AWX credential)" % KEY]),
    (GOOD_CERT + GOOD_KEY, GOOD_KEY,
     ["%s contains a private key; keep the key out of the certificate file and give it separately" % CERT]),
    ("", GOOD_KEY, ["%s is empty; give the certificate as PEM text" % CERT]),
    (GOOD_CERT, " \n", ["%s is empty; give the private key as PEM text" % KEY]),
    ("caf\u00e9", GOOD_KEY,
     ["%s is not ASCII text, so it is not PEM; give the certificate in PEM form (openssl x509 -outform PEM)" % CERT]),
    (cert_pem(WEAK[1]), key_pem(WEAK[0]),
     ["%s has an RSA key of 1024 bits, which current clients refuse; issue one with at least 2048 bits or an EC key"
      % CERT]),
], ids=["expired", "not-yet-valid", "mismatched-key", "not-pem", "bad-der", "bad-base64", "key-not-pem",
        "encrypted-key", "key-in-cert-file", "empty-cert", "empty-key", "not-ascii", "weak-rsa"])
def test_a_pair_that_nginx_or_clients_would_refuse_is_refused(cert, key, expected):
    errors = errors_of(cert, key)
    if expected is None:  # a library message: only its frame is ours
        assert len(errors) == 1 and errors[0].startswith("%s holds a certificate that cannot be parsed (" % CERT)
        assert errors[0].endswith("); give the server certificate in PEM form")
    else:
        assert errors == expected
    assert not any("PRIVATE KEY-----\n" in error or GOOD_KEY.splitlines()[1] in error for error in errors)


def test_every_problem_is_listed_at_once():
    errors = errors_of(cert_pem(EXPIRED[1]), OTHER_KEY)
    assert len(errors) == 2
    assert " expired on " in errors[0] and " does not belong to " in errors[1]


@pytest.mark.parametrize("days, warn_days, warned", [(10, 30, True), (40, 30, False), (10, 0, False), (31, 30, False)])
def test_a_certificate_that_expires_soon_is_a_warning_not_a_refusal(days, warn_days, warned):
    key, cert = make_leaf(CA, days=days, start_days=0)
    found = check(cert_pem(cert), key_pem(key), warn_days=warn_days)
    expected = ["%s expires on %s, in %d days (less than nginx.tls.expiry_warn_days, %d); renew it soon"
                % (CERT, (NOW + datetime.timedelta(days=days)).strftime("%Y-%m-%d %H:%M UTC"), days, warn_days)]
    assert found["warnings"] == (expected if warned else [])


def test_a_host_the_certificate_does_not_cover_is_a_warning():
    found = check(hosts=["shop.example.com"])
    assert found["warnings"] == [
        "%s is valid for localhost, 127.0.0.1, not for shop.example.com, the address this play reaches the host by; "
        "clients that use that name will refuse it unless a name the certificate covers leads there" % CERT]


@pytest.mark.parametrize("names, host, expected", [
    (["shop.example.com"], "shop.example.com", True),
    (["shop.example.com"], "SHOP.example.com.", True),
    (["*.example.com"], "shop.example.com", True),
    (["*.example.com"], "a.shop.example.com", False),
    (["*.example.com"], "example.com", False),
    (["127.0.0.1"], "127.0.0.1", True),
    (["::1"], "0:0::1", True),
    (["localhost"], "127.0.0.1", False),
    (["127.0.0.1"], "localhost", False),
    ([], "localhost", False),
])
def test_names_a_certificate_covers(names, host, expected):
    assert covers(names, host) is expected


def test_a_certificate_without_alternative_names_is_named_by_its_common_name():
    key, cert = make_leaf(CA, names=(), common_name="legacy.example.com")
    assert check(cert_pem(cert), key_pem(key))["names"] == ["legacy.example.com"]


@pytest.mark.parametrize("path, value, expected_where, error", [
    ("/etc/tls/a.crt", "PEM", None,
     "nginx.tls.cert_file and the variable swiftdeploy_tls_cert are both set; give the certificate one way only "
     "(remove the field, or stop setting the variable)"),
    (None, "", None,
     "no certificate: nginx.tls.enabled is true, but neither nginx.tls.cert_file nor the variable swiftdeploy_tls_cert "
     "is set; name the PEM file in the manifest, or set the variable (e.g. from Vault or an AWX credential)"),
    (None, "PEM", "the variable swiftdeploy_tls_cert", None),
    ("/nonexistent/a.crt", None, "nginx.tls.cert_file '/nonexistent/a.crt'",
     "nginx.tls.cert_file '/nonexistent/a.crt' cannot be read on the controller (No such file or directory); give the "
     "path of the PEM certificate file there, readable by the user running ansible-playbook"),
])
def test_the_certificate_comes_from_a_file_or_a_variable_never_both(path, value, expected_where, error):
    errors = []
    where, _text = source(path, value, "nginx.tls.cert_file", "swiftdeploy_tls_cert", "certificate", errors)
    assert errors == ([error] if error else [])
    if expected_where:
        assert where == expected_where


# -- the files on the host ------------------------------------------------------------------------

def test_the_stem_and_fingerprint_do_not_depend_on_line_endings():
    crlf = GOOD_CERT.replace("\n", "\r\n")
    assert stem(crlf) == stem(GOOD_CERT) == stem(normalised(crlf))
    assert fingerprint(GOOD_CERT) == hashlib.sha256(LEAF.public_bytes(Encoding.DER)).hexdigest()


def test_a_new_chain_under_the_same_leaf_is_a_new_pair():
    assert stem(GOOD_CERT + cert_pem(CA[1])) != stem(GOOD_CERT)
    assert fingerprint(GOOD_CERT + cert_pem(CA[1])) == fingerprint(GOOD_CERT)


def test_a_text_without_a_certificate_has_no_stem():
    with pytest.raises(TlsFileError):
        stem(GOOD_KEY)


def test_nginx_conf_names_its_pairs():
    conf = "ssl_certificate '/etc/nginx/swiftdeploy/tls/0123456789abcdef.crt';\n" \
           "ssl_certificate_key '/etc/nginx/swiftdeploy/tls/0123456789abcdef.key';\n# tls/ffff.crt\n"
    assert referenced_stems(conf) == {"0123456789abcdef"}
    assert referenced_stems(None) == set()


@pytest.mark.parametrize("names, keep, expected", [
    (["aaaaaaaaaaaaaaaa.crt", "aaaaaaaaaaaaaaaa.key", "bbbbbbbbbbbbbbbb.crt", "bbbbbbbbbbbbbbbb.key"],
     {"bbbbbbbbbbbbbbbb"}, ["aaaaaaaaaaaaaaaa.crt", "aaaaaaaaaaaaaaaa.key"]),
    (["aaaaaaaaaaaaaaaa.crt", "bbbbbbbbbbbbbbbb.key"], {"aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"}, []),
    (["README", "dhparam.pem", "short.crt", ".aaaaaaaaaaaaaaaa.key.tmp"], set(), []),
])
def test_only_pairs_nginx_conf_no_longer_names_are_stale(names, keep, expected):
    assert stale_files(names, keep) == expected


def test_the_key_is_written_private_from_the_start(tmp_path):
    path = str(tmp_path / "k.key")
    write_private(path, normalised(GOOD_KEY), 0o600, None, None)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert open(path).read() == normalised(GOOD_KEY)
    assert not needs_write(path, normalised(GOOD_KEY), 0o600, os.getuid(), os.getgid())
    assert needs_write(path, normalised(OTHER_KEY), 0o600, None, None)
    os.chmod(path, 0o644)
    assert needs_write(path, normalised(GOOD_KEY), 0o600, None, None)
    assert os.listdir(str(tmp_path)) == ["k.key"]
