# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Policy decisions for SwiftDeploy: ask OPA or evaluate the same Rego in-process.

This is a private module_utils file: its API may change without notice. It has no Ansible
imports. regopy is imported only by the embedded engine, so the REST path (the module on a
managed host, for the sidecar engine) needs nothing beyond the standard library.

The policies in policies/ hold every allow/deny decision. This file only fetches a decision
and, when none can be had, fails closed: decide() turns every error into a deny whose one
reason is the error, or, when the caller chose fail_open, into an allow marked as bypassed.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import re
import sys
import tempfile
import threading
import urllib.parse

from ansible_collections.swiftdeploy.stack.plugins.module_utils._http import HttpError, post_json

DOMAINS = ("infrastructure", "canary")
ENGINES = ("embedded", "sidecar", "external")

_NATIVE_LOCK = threading.Lock()


class PolicyError(Exception):
    """No usable decision. Kinds: the HttpError kinds (unreachable, timeout, http_status,
    bad_json; bad_url cannot happen once decide() has checked the URL), undefined, malformed,
    rego_error, no_policy, missing_library, bad_input, and sidecar_unavailable (from
    unavailable())."""

    def __init__(self, kind, message):
        super(PolicyError, self).__init__(message)
        self.kind = kind
        self.message = message


def decision_query(domain):
    """The Rego reference of a domain's decision, e.g. data.swiftdeploy.canary.decision."""
    return "data.swiftdeploy.%s.decision" % domain


def decision_url(base_url, domain):
    """OPA's REST address of a domain's decision under `base_url`."""
    return "%s/v1/data/swiftdeploy/%s/decision" % (base_url.rstrip("/"), domain)


def decide(engine, domain, input_dict, *, policy_dir=None, url=None, timeout=5, fail_open=False, token=None,
           ca_path=None, validate_certs=True, require_https=False):
    """Return the decision as {allow, reasons, domain, checked, engine, error, bypassed}.

    Raises ValueError for bad arguments only (a plain http:// url among them when
    require_https is true); every failure to get a decision is folded into the result (fail
    closed, or bypassed when fail_open is true). A token is sent as `Authorization: Bearer`.
    """
    if engine not in ENGINES:
        raise ValueError("engine must be one of %s, not %r" % (", ".join(ENGINES), engine))
    if domain not in DOMAINS:
        raise ValueError("domain must be one of %s, not %r" % (", ".join(DOMAINS), domain))
    if engine == "embedded" and not policy_dir:
        raise ValueError("the embedded engine needs policy_dir, the directory of the .rego files")
    if engine != "embedded":
        check_url(url, engine)
        if require_https and urllib.parse.urlsplit(url).scheme != "https":
            raise ValueError("url %r is plain HTTP: the decision and the token would travel unencrypted and could be "
                             "forged on the way; use an https:// URL, or set opa.allow_http: true in the manifest "
                             "(allow_http) if OPA is reached over a trusted network only" % (url,))
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or math.isnan(timeout) or timeout <= 0:
        raise ValueError("timeout must be a number of seconds above 0, not %r" % (timeout,))
    if not isinstance(input_dict, dict):
        raise ValueError("input must be a dict, not %s" % type(input_dict).__name__)
    try:
        check_input(input_dict)
        # Plain JSON types from here on: regopy converts only those, and Ansible hands over
        # subclasses of them.
        plain_input = json.loads(json.dumps(input_dict))
        if engine == "embedded":
            decision = evaluate_embedded(policy_dir, domain, plain_input)
        else:
            headers = {"Authorization": "Bearer %s" % token} if token else None
            decision = query_rest(url, domain, plain_input, timeout, headers=headers, ca_path=ca_path,
                                  validate_certs=validate_certs)
    except PolicyError as exc:
        return _without_decision(engine, domain, exc, fail_open)
    result = {
        "allow": decision["allow"],
        "reasons": decision["reasons"],
        "domain": decision["domain"],
        "checked": decision["checked"],
        "engine": engine,
        "error": None,
        "bypassed": False,
    }
    if "hold" in decision:
        result["hold"] = decision["hold"]
    return result


def check_url(url, engine):
    """Raise ValueError unless `url` is an http(s) base URL for the sidecar or external engine."""
    if not url:
        raise ValueError("the %s engine needs url, the base URL of OPA such as http://127.0.0.1:8181" % engine)
    parts = urllib.parse.urlsplit(url)
    try:
        if parts.port == 0:  # urlsplit checks the port only when asked for it
            parts = None
    except ValueError:
        parts = None
    if not parts or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("url must be the base URL of OPA such as http://127.0.0.1:8181 or https://opa.example.com, "
                         "not %r" % (url,))


def unavailable(engine, domain, kind, message, fail_open=False):
    """The result when the engine itself cannot be reached before any query (such as a sidecar
    that is not running): a deny, or a bypass under fail_open, as for any other failure."""
    return _without_decision(engine, domain, PolicyError(kind, message), fail_open)


def _without_decision(engine, domain, exc, fail_open):
    if fail_open:
        allow, reason = True, "policy bypassed because of an error (fail_open is true): %s" % exc.message
    else:
        allow, reason = False, exc.message
    return {
        "allow": allow,
        "reasons": [reason],
        "domain": domain,
        "checked": {},
        "engine": engine,
        "error": {"kind": exc.kind, "message": exc.message},
        "bypassed": bool(fail_open),
    }


# OPA reads a JSON number as a float64 where it must; regopy wraps integers at 2**63. Beyond
# 2**53 the two engines could read one input differently, so such an input gets no decision.
MAX_SAFE_INTEGER = 2 ** 53


def check_input(value, path="input"):
    """Raise PolicyError(bad_input) for anything JSON cannot carry (NaN, infinity, objects) and
    for integers beyond +-2**53, which not every engine reads the same."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PolicyError("bad_input", "%s has the key %s, which is not text; JSON keys must be strings"
                                  % (path, _brief_repr(key)))
            check_input(item, "%s.%s" % (path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_input(item, "%s[%d]" % (path, index))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise PolicyError("bad_input", "%s is %r, which JSON cannot carry; send a number, or null when there is no data"
                              % (path, value))
    elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SAFE_INTEGER:
        raise PolicyError("bad_input", "%s is %s, beyond +-2**53, where policy engines stop reading integers "
                                       "exactly; send a smaller number" % (path, _brief_repr(value)))
    elif not (value is None or isinstance(value, (str, int))):
        raise PolicyError("bad_input", "%s is a %s, which JSON cannot carry" % (path, type(value).__name__))


def _brief_repr(value):
    """repr(), but at most 60 characters; Python will not write out an int of more than 4300 digits."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return "an integer of %d bits" % value.bit_length()
    text = repr(int(value)) if isinstance(value, int) and not isinstance(value, bool) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def query_rest(base_url, domain, input_dict, timeout, headers=None, ca_path=None, validate_certs=True):
    """Ask OPA's REST API for the decision; return it checked, or raise PolicyError. A redirect
    is never followed (post_json): an answer must come from the OPA asked."""
    url = decision_url(base_url, domain)
    try:
        answer = post_json(url, {"input": input_dict}, timeout, service="OPA", headers=headers,
                           validate_certs=validate_certs, ca_path=ca_path)
    except HttpError as exc:
        raise PolicyError(exc.kind, exc.message)
    if "result" not in answer:
        raise PolicyError("undefined", "OPA at %s has no decision (%s is undefined); load the swiftdeploy policies "
                                       "into that OPA" % (url, decision_query(domain)))
    return check_decision(answer["result"], "OPA at %s" % url, domain)


def check_decision(decision, source, domain):
    """Return a copy of `decision` with checked and domain filled in, or raise PolicyError
    (malformed) when it lacks a boolean allow or a list of text reasons."""
    problem = None
    if not isinstance(decision, dict):
        problem = "it is %s, not an object" % _json_type(decision)
    elif not isinstance(decision.get("allow"), bool):
        problem = "'allow' is %s, not a boolean" % _json_type(decision.get("allow"), "allow" in decision)
    elif not isinstance(decision.get("reasons"), list):
        problem = "'reasons' is %s, not a list" % _json_type(decision.get("reasons"), "reasons" in decision)
    elif not all(isinstance(reason, str) for reason in decision["reasons"]):
        problem = "'reasons' holds something other than text"
    elif not isinstance(decision.get("checked", {}), dict):
        problem = "'checked' is %s, not an object" % _json_type(decision["checked"])
    if problem:
        raise PolicyError("malformed", "the decision from %s is malformed: %s; the policy must return "
                                       "{allow: boolean, reasons: [text], ...}" % (source, problem))
    checked = {
        "allow": decision["allow"],
        "reasons": list(decision["reasons"]),
        "domain": decision.get("domain", domain),
        "checked": dict(decision.get("checked", {})),
    }
    # The canary policy's "hold" (not enough data yet), given for an automated rollout only.
    if isinstance(decision.get("hold"), bool):
        checked["hold"] = decision["hold"]
    return checked


def _json_type(value, present=True):
    if not present:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a %s" % type(value).__name__


# ------------------------------------------------------------------------------------------
# The embedded engine: regopy (rego-cpp) in this process
# ------------------------------------------------------------------------------------------


def load_policy_dir(policy_dir):
    """Return ([(name, rego text)], [data.json text]) for every policy module in `policy_dir`
    except *_test.rego, and every data.json nested under the path of its directory, as OPA
    loads a directory."""
    if not os.path.isdir(policy_dir):
        raise PolicyError("no_policy", "the policy directory %s does not exist; point policy_dir at the "
                                       "collection's policies/ directory" % policy_dir)
    modules, data_docs = [], []
    for root, dirs, files in os.walk(policy_dir):
        dirs.sort()
        relative = os.path.relpath(root, policy_dir)
        prefix = [] if relative == "." else relative.split(os.sep)
        for name in sorted(files):
            path = os.path.join(root, name)
            if name.endswith(".rego") and not name.endswith("_test.rego"):
                modules.append((os.path.relpath(path, policy_dir), _read_text(path)))
            elif name == "data.json":
                data_docs.append(_data_document(path, prefix))
    if not modules:
        raise PolicyError("no_policy", "there are no .rego policy files in %s; point policy_dir at the "
                                       "collection's policies/ directory" % policy_dir)
    return modules, data_docs


def _read_text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError("no_policy", "cannot read the policy file %s (%s)" % (path, exc))


def _data_document(path, prefix):
    try:
        document = json.loads(_read_text(path))
    except ValueError as exc:
        raise PolicyError("rego_error", "the policy data %s is not valid JSON (%s)" % (path, exc))
    for key in reversed(prefix):
        document = {key: document}
    return json.dumps(document)


def evaluate_embedded(policy_dir, domain, input_dict):
    """Evaluate the domain's decision with regopy over the policies in `policy_dir`."""
    modules, data_docs = load_policy_dir(policy_dir)
    try:
        from regopy import Input, Interpreter, RegoError  # pylint: disable=import-outside-toplevel
    except ImportError as exc:
        raise PolicyError("missing_library", "the embedded policy engine needs the Python library regopy on the "
                                             "controller (%s); install it with `pip install regopy`" % exc)
    query = decision_query(domain)
    native_output = []
    with _NATIVE_LOCK:
        try:
            with _native_stdout_captured(native_output):
                interpreter = Interpreter()
                for name, text in modules:
                    interpreter.add_module(name, text)
                for text in data_docs:
                    interpreter.add_data_json(text)
                interpreter.set_input(Input(input_dict))
                output = interpreter.query(query)
                ok, text = output.ok(), str(output)
        except RegoError as exc:
            raise PolicyError("rego_error", "the policies in %s do not compile: %s"
                              % (policy_dir, native_error_summary(native_output, str(exc))))
        except ValueError:
            # regopy reports some compile errors, such as an unknown function, only at query
            # time and only as output that is not JSON.
            raise PolicyError("rego_error", "evaluating %s over the policies in %s failed: %s"
                              % (query, policy_dir, native_error_summary(
                                  native_output, "regopy reports a compile error without detail, such as a call of "
                                                 "an unknown function; `opa check` shows it")))
    if not ok:
        raise PolicyError("rego_error", "evaluating %s over the policies in %s failed (regopy gives no detail; "
                                        "a rule with conflicting values is the usual cause, `opa eval` shows it)"
                          % (query, policy_dir))
    if text == "undefined" or not output.results or not output.results[0].expressions:
        raise PolicyError("undefined", "the policies in %s have no decision (%s is undefined); check the package "
                                       "name and the decision rule" % (policy_dir, query))
    return check_decision(output.results[0].expressions[0], "%s in %s" % (query, policy_dir), domain)


_NATIVE_ERROR_RE = re.compile(r"^Errors:\n(?P<message>[^\n]+)\n-- (?P<where>[^\n]*)", re.M)
_REGO_ERRORMSG_RE = re.compile(r"\(errormsg \d+:(?P<message>[^)]*)\)")


def native_error_summary(native_output, fallback):
    """One line from rego-cpp's report on stdout ("Syntax error at p.rego:4:1"), else from the
    error it raised, which is an AST dump."""
    match = _NATIVE_ERROR_RE.search("".join(native_output))
    if match:
        where = match.group("where").strip()
        return "%s at %s" % (match.group("message"), where) if where else match.group("message")
    match = _REGO_ERRORMSG_RE.search(fallback)
    if match:
        return match.group("message")
    return fallback.splitlines()[0] if fallback.strip() else "no detail"


@contextlib.contextmanager
def _native_stdout_captured(sink):
    """Send what rego-cpp prints on file descriptor 1 to `sink` instead: error reports there
    are the only detail it gives, and stray text on stdout would corrupt a caller's output."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError, AttributeError):
        pass  # a closed or replaced sys.stdout has nothing of ours to flush
    try:
        saved = os.dup(1)
    except OSError:
        saved = None
    if saved is None:  # no descriptor 1 at all: nothing to protect
        yield
        return
    libc = _libc()
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        try:
            yield
        finally:
            if libc is not None:
                libc.fflush(None)
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            sink.append(capture.read().decode("utf-8", "replace"))


def _libc():
    try:
        return ctypes.CDLL(None)
    except (OSError, TypeError):
        return None
