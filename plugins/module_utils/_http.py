# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one small HTTP client SwiftDeploy uses to talk to OPA and to scrape metrics.

This is a private module_utils file: its API may change without notice. Requests to a server
(HTTPS, a host name, custom headers: a central OPA) go through Ansible's own
ansible.module_utils.urls (open_url), so TLS verification, a CA bundle, headers and redirects
behave as in every other Ansible HTTP client. The stack's own plain-HTTP endpoints on an IP
address, polled many times a converge, go straight through urllib, which is twenty times cheaper
a request. It is part of every module payload, so it runs on any managed host.

Every failure is raised as HttpError with a kind a caller can branch on and a message a user
can act on:

  unreachable   no connection (refused, unknown host name, no route, reset before an answer)
  timeout       no answer within the timeout
  http_status   an answer with a status other than 2xx (the message carries up to 200
                characters of the body)
  bad_json      post_json got an answer that is not a JSON object
  bad_url       the URL is not an http(s) URL
"""

from __future__ import annotations

import errno
import http.client
import ipaddress
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request

# ansible.module_utils.urls is imported where a request needs it: compiling it costs a module
# that only polls the stack's own endpoints (every stack_lock and stack_converge) tens of ms.

# An answer larger than this is not something OPA or a metrics endpoint would send us.
MAX_BODY_BYTES = 16 * 1024 * 1024
BODY_EXCERPT_CHARS = 200

_LOOPBACK_NAMES = ("localhost", "ip6-localhost")


class HttpError(Exception):
    """An HTTP exchange failed; `kind` says how, `message` says what to do about it."""

    def __init__(self, kind, message, status=None):
        super(HttpError, self).__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


def post_json(url, payload, timeout, service="the server", headers=None, validate_certs=True, ca_path=None):
    """POST `payload` as JSON to `url`; return the JSON object the server answers with.

    A redirect is never followed: a decision must come from the server asked, so a 3xx answer is
    an HttpError like any other status."""
    try:
        data = json.dumps(payload, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError("post_json: the payload cannot be sent as JSON (%s)" % exc)
    sent = {"Content-Type": "application/json", "Accept": "application/json"}
    sent.update(headers or {})
    body = _exchange(url, timeout, service, data=data, method="POST", headers=sent, validate_certs=validate_certs,
                     ca_path=ca_path, follow_redirects="none")
    text = body.decode("utf-8", "replace")
    try:
        answer = json.loads(text)
    except ValueError as exc:
        raise HttpError("bad_json", "%s answered with invalid JSON (%s): %s"
                        % (url, exc, _excerpt(text) or "an empty body"))
    if not isinstance(answer, dict):
        raise HttpError("bad_json", "%s answered with JSON that is not an object: %s"
                        % (url, _excerpt(text)))
    return answer


def get_text(url, timeout, service="the server"):
    """GET `url` and return the body as text (UTF-8, undecodable bytes replaced)."""
    return _exchange(url, timeout, service).decode("utf-8", "replace")


def _exchange(url, timeout, service, data=None, method="GET", headers=None, validate_certs=True, ca_path=None,
              follow_redirects="urllib2"):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError("bad_url", "%r is not an http(s) URL; use one such as http://127.0.0.1:8181" % (url,))
    if _stack_endpoint(parts) and not headers and follow_redirects == "urllib2":
        # The stack's own endpoints (nginx's admin listener, a slot's health) on loopback or a
        # container's address, polled many times a converge: plain HTTP with nothing for TLS,
        # headers or credentials to do, so straight through urllib (about 1 ms a request, where
        # open_url spends about 20 ms setting up each one), never through a proxy.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(url, data=data, method=method)
        return _answer(url, timeout, service, lambda: opener.open(request, timeout=timeout))
    # Imported here: compiling ansible.module_utils.urls costs tens of ms, which a module that only
    # polls the stack's own endpoints (every stack_lock and stack_converge) need not pay.
    from ansible.module_utils.urls import (  # pylint: disable=import-outside-toplevel
        ConnectionError as UrlsConnectionError,
        SSLValidationError,
        open_url,
    )
    # A loopback OPA could never be reached through a proxy from the environment, so loopback
    # addresses always go direct. No ~/.netrc credentials are ever sent.
    return _answer(url, timeout, service, lambda: open_url(
        url, data=data, headers=headers, method=method, timeout=timeout, use_proxy=not _is_loopback(parts.hostname),
        validate_certs=validate_certs, ca_path=ca_path, follow_redirects=follow_redirects, use_netrc=False,
        http_agent="swiftdeploy"), tls_errors=(SSLValidationError,), connection_errors=(UrlsConnectionError,))


def _answer(url, timeout, service, opening, tls_errors=(), connection_errors=()):
    """The body of the response opening() gives, every failure mapped to an HttpError."""
    try:
        with opening() as response:
            return _read(response)
    except tls_errors as exc:
        raise HttpError("unreachable", "cannot connect to %s: TLS failed (%s); check the certificate, the CA "
                        "bundle (ca_path) and the URL's scheme" % (url, _first_line(exc)))
    except urllib.error.HTTPError as exc:
        body = _read_error_body(exc)
        raise HttpError("http_status", "%s answered HTTP %d %s: %s"
                        % (url, exc.code, exc.reason, _excerpt(body) or "(empty body)"), status=exc.code)
    except urllib.error.URLError as exc:
        raise _connection_error(url, exc.reason, timeout, service)
    except (socket.timeout, OSError) as exc:
        # A timeout or reset while reading the status line or the body is raised as is, not
        # wrapped in URLError.
        raise _connection_error(url, exc, timeout, service)
    except http.client.HTTPException as exc:
        raise HttpError("unreachable", "%s did not answer with valid HTTP (%s: %s); is it really %s?"
                        % (url, type(exc).__name__, exc, service))
    except connection_errors as exc:
        raise HttpError("unreachable", "cannot connect to %s: %s; is %s running?" % (url, _first_line(exc), service))


def _stack_endpoint(parts):
    """A plain-HTTP URL of an IP address (loopback, or a container's on a Docker network): what
    the stack's own endpoints are, as opposed to a named or TLS server such as a central OPA."""
    if parts.scheme != "http":
        return False
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        return parts.hostname in _LOOPBACK_NAMES
    return True


def _is_loopback(hostname):
    return hostname in _LOOPBACK_NAMES or hostname.startswith("127.") or hostname == "::1"


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read(response):
    body = response.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise HttpError("http_status", "%s answered with more than %d bytes; that is not an answer we expect"
                        % (response.geturl(), MAX_BODY_BYTES), status=response.status)
    return body


def _read_error_body(exc):
    try:
        return exc.read(BODY_EXCERPT_CHARS * 4).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):  # the status alone is still worth reporting
        return ""


def _connection_error(url, reason, timeout, service):
    if isinstance(reason, socket.timeout) or "timed out" in str(reason):
        return HttpError("timeout", "no answer from %s within %g s; is %s overloaded or hung?"
                         % (url, timeout, service))
    if isinstance(reason, socket.gaierror):
        return HttpError("unreachable", "cannot connect to %s: the host name %r does not resolve (%s); check the URL"
                         % (url, urllib.parse.urlsplit(url).hostname, reason.strerror or reason))
    if isinstance(reason, ConnectionRefusedError):
        return HttpError("unreachable", "cannot connect to %s: connection refused; is %s running?" % (url, service))
    if isinstance(reason, ssl.SSLError):
        return HttpError("unreachable", "cannot connect to %s: TLS failed (%s); check the certificate and the URL's scheme"
                         % (url, getattr(reason, "reason", None) or reason))
    if isinstance(reason, (ConnectionResetError, ConnectionAbortedError)) or type(reason).__name__ == "RemoteDisconnected":
        return HttpError("unreachable", "cannot connect to %s: the connection was closed before an answer; is %s healthy?"
                         % (url, service))
    code = getattr(reason, "errno", None)
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return HttpError("unreachable", "cannot connect to %s: no route to host; check the address and the network"
                         % url)
    return HttpError("unreachable", "cannot connect to %s: %s; is %s running?"
                     % (url, getattr(reason, "strerror", None) or reason, service))


def _excerpt(text):
    text = " ".join(text.split())
    if len(text) > BODY_EXCERPT_CHARS:
        return text[:BODY_EXCERPT_CHARS] + "..."
    return text
