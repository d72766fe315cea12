"""HTTPS (nginx.tls) against the real Docker engine, real nginx and real clients.

Certificates are made here with `cryptography`: a CA and two server certificates it signs for
localhost and 127.0.0.1. HTTPS is checked with the real curl binary (`curl --cacert`), and the
load during a certificate rotation with Python's ssl module verifying against the same CA.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import time

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import http_get  # tests/integration/helpers.py
from traffic import ClientMix, Traffic  # tests/integration/traffic.py

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NAME = "tlsit"
PORT = 18743
ADMIN_PORT = 18745
REDIRECT_PORT = 18748
CURL = shutil.which("curl")


def docker(*args):
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60, check=False)


def pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def certificate(issuer_name, issuer_key, subject, key, days, ca=False, start=None):
    start = start or datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=days)))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Pki:
    """A CA (ca.crt) and server pairs it signs, written to a directory of the test."""

    def __init__(self, root):
        self.root = root
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = certificate(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tlsit CA")]), self.ca_key,
                              "tlsit CA", self.ca_key, 365, ca=True)
        self.ca_file = root / "ca.crt"
        self.ca_file.write_text(pem(self.ca))

    def server(self, name, days=90, start=None):
        """(cert path, key path, fingerprint, key text) of a new pair."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(self.ca.subject, self.ca_key, "localhost", key, days, start=start)
        cert_path, key_path = self.root / ("%s.crt" % name), self.root / ("%s.key" % name)
        cert_path.write_text(pem(cert))
        key_path.write_text(pem(key))
        key_path.chmod(0o600)
        return cert_path, key_path, cert.fingerprint(hashes.SHA256()).hex(), pem(key)


def key_marks(key_text):
    """Substrings that betray the key: its base64 body in one piece and each of its lines."""
    body = [line for line in key_text.splitlines() if line and not line.startswith("-----")]
    return ["".join(body)] + body


def served_fingerprint(ca_file, port=PORT):
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def plain_get(port, path="/"):
    return http_get(port, path)


def files_holding(root, marks, skip=()):
    """Files under root (not skip) whose text contains one of marks."""
    found = []
    for directory, _dirs, names in os.walk(root):
        for name in names:
            path = pathlib.Path(directory) / name
            if path in skip or path.is_symlink():
                continue
            text = path.read_bytes().decode("utf-8", "replace")
            if any(mark in text for mark in marks):
                found.append(str(path))
    return found


class Stack:
    def __init__(self, root, write_manifest, run_playbook):
        self.root = root
        self.project = root / "project"
        self._write_manifest = write_manifest
        self._run = run_playbook

    def manifest(self, **tls):
        values = {"stack": NAME, "nginx.port": PORT, "nginx.admin_port": ADMIN_PORT,
                  "network.name": "%s-net" % NAME, "services.log_volume": "%s-logs" % NAME,
                  "contact": "oncall@%s.example" % NAME, "nginx.tls": dict(tls, enabled=True)}
        return self._write_manifest(self.root / "manifest.yml", values)

    def run(self, playbook, *args, **kwargs):
        return self._run(playbook, "-e", "swiftdeploy_manifest=%s" % (self.root / "manifest.yml"),
                         "-e", "swiftdeploy_project_dir=%s" % self.project, *args, **kwargs)

    def tls_vars(self, cert_path, key_path):
        """A vars file giving the pair as variables, as an AWX credential injects them."""
        path = self.root / "tls-vars.yml"
        path.write_text(yaml.safe_dump({"swiftdeploy_tls_cert": cert_path.read_text(),
                                        "swiftdeploy_tls_key": key_path.read_text()}))
        path.chmod(0o600)
        return "@%s" % path


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory, write_manifest, run_playbook, app_image):
    root = tmp_path_factory.mktemp("tls")
    stack = Stack(root, write_manifest, run_playbook)
    stack.pki = Pki(root)
    stack.first = stack.pki.server("first")
    stack.second = stack.pki.server("second")
    cert, key, _fingerprint, _text = stack.first
    stack.manifest(cert_file=str(cert), key_file=str(key))
    stack.deploy = stack.run("deploy", "-vvv")
    assert stack.deploy.rc == 0, stack.deploy.describe()
    yield stack
    teardown = stack.run("teardown", "-e", "clean=true")
    assert teardown.rc == 0, teardown.describe()


def test_https_answers_with_the_stacks_certificate(tls_stack):
    """curl --cacert <CA> https://127.0.0.1:<port>/ with the real curl binary."""
    assert CURL, "curl is needed for this test (apt-get install curl)"
    out = subprocess.run([CURL, "-sS", "--fail", "--cacert", str(tls_stack.pki.ca_file), "-o", "/dev/null",
                          "-w", "%{http_code} %{scheme}", "https://127.0.0.1:%d/" % PORT],
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0 and out.stdout == "200 HTTPS", out
    # Without the CA the certificate is refused: the check above is a real verification.
    untrusted = subprocess.run([CURL, "-sS", "-o", "/dev/null", "https://127.0.0.1:%d/" % PORT],
                               capture_output=True, text=True, timeout=30, check=False)
    assert untrusted.returncode == 60, untrusted
    assert served_fingerprint(tls_stack.pki.ca_file) == tls_stack.first[2]
    assert "is healthy at https://localhost:%d/" % PORT in tls_stack.deploy.stdout


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_tls12_and_tls13_are_both_offered(tls_stack, version):
    context = ssl.create_default_context(cafile=str(tls_stack.pki.ca_file))
    context.minimum_version = context.maximum_version = getattr(ssl.TLSVersion, version)
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.version() == version.replace("_", ".")


def test_validate_runs_nginx_t_with_the_pair(tls_stack, validate_checks):
    run = tls_stack.run("validate")
    assert run.rc == 0, run.describe()
    assert (5, "✔", "nginx.conf passes nginx -t") in validate_checks(run.stdout), run.stdout


def test_without_a_redirect_port_plain_http_is_not_served(tls_stack):
    status, _headers, body = plain_get(PORT)
    assert status == 400 and b"plain HTTP request was sent to HTTPS port" in body
    with pytest.raises(ConnectionRefusedError):
        plain_get(REDIRECT_PORT)
    # The edge (nginx.edge, on by default) publishes the public port and terminates TLS.
    published = docker("port", "%s-edge-1" % NAME).stdout
    assert "8080/tcp -> 0.0.0.0:%d" % PORT in published and "8083" not in published
    # The admin listener stays plain HTTP on the host's loopback, on the routing nginx.
    assert plain_get(ADMIN_PORT, "/healthz")[0] == 200
    assert "8081/tcp -> 127.0.0.1:%d" % ADMIN_PORT in docker("port", "%s-nginx-1" % NAME).stdout


def test_the_key_is_private_to_nginx_and_nowhere_else(tls_stack):
    _cert, _key, fingerprint, key_text = tls_stack.first
    tls_dir = tls_stack.project / "nginx" / "tls"
    stem = next(path.stem for path in tls_dir.glob("*.key"))
    key_file = tls_dir / ("%s.key" % stem)
    info = key_file.stat()
    assert (oct(info.st_mode & 0o7777), info.st_uid, info.st_gid) == ("0o600", 101, 101)
    assert oct(tls_dir.stat().st_mode & 0o7777) == "0o700" and tls_dir.stat().st_uid == 101
    assert (tls_dir / ("%s.crt" % stem)).stat().st_mode & 0o777 == 0o644
    marks = key_marks(key_text)
    assert files_holding(tls_stack.project, marks, skip={key_file}) == []
    assert files_holding(tls_stack.project, marks) == [str(key_file)]
    output = tls_stack.deploy.output
    assert "ansible-playbook" in output and "<localhost> EXEC" in output  # -vvv it was
    assert not any(mark in output for mark in marks)
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in output
    # Only nginx's own user reads it inside the containers.
    for service in ("edge", "nginx"):
        assert docker("exec", "-u", "10001", "%s-%s-1" % (NAME, service), "cat",
                      "/etc/nginx/swiftdeploy/tls/%s.key" % stem).returncode != 0
    assert fingerprint in json.dumps([json.loads(line) for line in
                                      (tls_stack.project / "history.jsonl").read_text().splitlines()])


def test_check_mode_with_a_new_certificate_changes_nothing(tls_stack):
    cert, key, _fingerprint, key_text = tls_stack.second
    tls_stack.manifest()
    run = tls_stack.run("deploy", "-e", tls_stack.tls_vars(cert, key), check=True)
    assert run.rc == 0, run.describe()
    assert not any(mark in run.output for mark in key_marks(key_text))
    assert served_fingerprint(tls_stack.pki.ca_file) == tls_stack.first[2]
    assert len(list((tls_stack.project / "nginx" / "tls").glob("*.key"))) == 1


def test_rotating_the_certificate_reloads_the_edge_in_place_without_a_failed_request(tls_stack, parse_recap):
    """The second pair, given as variables this time (as an AWX credential would), under load of
    every kind of client (traffic.ClientMix): the edge (nginx.edge, on by default) loads the new
    edge.conf in place, so its port never closes. Clients that open a connection per request and
    urllib3's keep-alive clients (busy, and idle at the reload) lose nothing; a bare http.client
    keep-alive connection, which never retries, is only measured (docs/keepalive.md)."""
    cert, key, fingerprint, key_text = tls_stack.second
    tls_stack.manifest()
    edge = docker("ps", "-q", "--filter", "name=^%s-edge-1$" % NAME).stdout.strip()
    assert edge, "the edge is on by default"
    with ClientMix(PORT, ca_file=tls_stack.pki.ca_file) as clients:
        time.sleep(1.0)
        run = tls_stack.run("deploy", "-vvv", "-e", tls_stack.tls_vars(cert, key))
        time.sleep(1.0)  # the idle clients' next requests, on connections the old workers closed
    print(clients.summary())
    assert run.rc == 0, run.describe()
    for kind in ("close", "urllib3", "urllib3-idle"):
        assert sum(clients.outcomes[kind].values()) > 5, clients.summary()
        assert clients.failures(kind) == {}, clients.summary()
    assert served_fingerprint(tls_stack.pki.ca_file) == fingerprint
    # The same container loaded the new pair: its port was never closed.
    assert docker("ps", "-q", "--filter", "name=^%s-edge-1$" % NAME).stdout.strip() == edge
    assert not any(mark in run.output for mark in key_marks(key_text))
    events = [json.loads(line) for line in (tls_stack.project / "history.jsonl").read_text().splitlines()]
    rotated = [event for event in events if event["event"] == "tls_certificate"]
    assert [event["details"]["fingerprint"] for event in rotated] == [tls_stack.first[2], fingerprint]
    # The slots the converge left running come with every event it records (which image ran when).
    assert set(rotated[-1]["details"]) == {"fingerprint", "not_after", "names", "changed", "slots"}
    converge = run.stdout.split("Bring the stack through the states", 1)[1].split("PLAY RECAP")[0]
    assert "reload edge" in converge and "wait edge" in converge and "compose up" not in converge
    # The replaced pair stays until nginx.conf no longer names it: the next run removes it.
    tls_dir = tls_stack.project / "nginx" / "tls"
    assert len(list(tls_dir.glob("*.key"))) == 2
    again = tls_stack.run("deploy", "-e", tls_stack.tls_vars(cert, key))
    assert again.rc == 0, again.describe()
    assert len(list(tls_dir.glob("*.key"))) == 1
    assert files_holding(tls_stack.project, key_marks(tls_stack.first[3])) == []
    assert parse_recap(tls_stack.run("deploy", "-e", tls_stack.tls_vars(cert, key)).stdout)["localhost"]["changed"] == 0


def test_the_redirect_port_sends_plain_http_to_https(tls_stack):
    cert, key, _fingerprint, _text = tls_stack.second
    tls_stack.manifest(redirect_port=REDIRECT_PORT)
    run = tls_stack.run("deploy", "-e", tls_stack.tls_vars(cert, key))
    assert run.rc == 0, run.describe()
    status, headers, _body = plain_get(REDIRECT_PORT, "/healthz?x=1")
    assert status == 308 and headers["Location"] == "https://127.0.0.1:%d/healthz?x=1" % PORT
    assert CURL
    followed = subprocess.run([CURL, "-sS", "-L", "--fail", "--cacert", str(tls_stack.pki.ca_file),
                               "-w", "%{url_effective}", "-o", "/dev/null", "http://127.0.0.1:%d/" % REDIRECT_PORT],
                              capture_output=True, text=True, timeout=30, check=False)
    assert followed.returncode == 0 and followed.stdout == "https://127.0.0.1:%d/" % PORT, followed


def test_a_canary_and_its_rollback_keep_serving_https(tls_stack):
    """promote and rollback converge through the same path: the pair and nginx.conf stay HTTPS."""
    cert, key, fingerprint, key_text = tls_stack.second
    tls_vars = tls_stack.tls_vars(cert, key)
    with Traffic(PORT, threads=2, warm_up=0.5, ca_file=tls_stack.pki.ca_file) as traffic:
        canary = tls_stack.run("promote", "-e", "mode=canary", "-e", "weight=50", "-e", tls_vars)
        assert canary.rc == 0, canary.describe()
        assert served_fingerprint(tls_stack.pki.ca_file) == fingerprint
        back = tls_stack.run("rollback", "-e", "reason=tls test", "-e", tls_vars)
        assert back.rc == 0, back.describe()
    assert traffic.successes > 10 and traffic.failures() == {}, traffic.failures()
    assert traffic.canary > 0
    assert served_fingerprint(tls_stack.pki.ca_file) == fingerprint
    assert not any(mark in canary.output + back.output for mark in key_marks(key_text))


def test_an_expired_certificate_is_refused_before_anything_is_deployed(tmp_path, write_manifest, run_playbook):
    pki = Pki(tmp_path)
    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
    cert, key, _fingerprint, _text = pki.server("old", days=10, start=start)
    stack = Stack(tmp_path, write_manifest, run_playbook)
    values = {"stack": "tlsitexp", "nginx.port": 18753, "nginx.admin_port": 18755, "contact": "oncall@tlsit.example",
              "nginx.tls": {"enabled": True, "cert_file": str(cert), "key_file": str(key)}}
    write_manifest(tmp_path / "manifest.yml", values)
    run = stack.run("deploy")
    assert run.rc != 0
    assert "nginx.tls.cert_file '%s' expired on " % cert in run.stdout, run.stdout
    assert "renew it and give the new certificate and key" in run.stdout
    assert not stack.project.exists()
    assert docker("ps", "-aq", "--filter", "label=com.docker.compose.project=tlsitexp").stdout.strip() == ""


def test_validate_reports_a_refused_pair_as_its_nginx_check_with_the_others(
        tmp_path, write_manifest, run_playbook, validate_checks):
    pki = Pki(tmp_path)
    cert, _key, _fingerprint, _text = pki.server("one")
    _cert, other_key, _fingerprint, _text = pki.server("other")
    stack = Stack(tmp_path, write_manifest, run_playbook)
    write_manifest(tmp_path / "manifest.yml", {
        "stack": "tlsitval", "nginx.port": 18757, "nginx.admin_port": 18759, "contact": "oncall@tlsit.example",
        "nginx.tls": {"enabled": True, "cert_file": str(cert), "key_file": str(other_key)}})
    run = stack.run("validate")
    assert run.rc != 0
    checks = validate_checks(run.stdout)
    # All five are reported (the pair does not stop the run early), only the nginx check fails.
    assert [(number, mark) for number, mark, _name in checks] == [(1, "✔"), (2, "✔"), (3, "✔"), (4, "✔"), (5, "✘")]
    assert "not checked: the TLS certificate and key are refused (nginx.tls):" in run.stdout, run.stdout
    assert "does not belong to" in run.stdout and "Validation FAILED" in run.stdout
    assert not stack.project.exists()
