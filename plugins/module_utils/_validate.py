# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""validate.yml's five pre-flight checks, pure: which passed, and what each says.

The five checks are the original CLI's (../shared/SEED-CONTRACT.md): the manifest parses, the
required fields are present and valid, the app image is on the host, the nginx port is free, and
nginx.conf passes `nginx -t`. What was found on the host comes in; a check that could not run says
why ("not checked: ..."), and every failure says what to do.
"""

from __future__ import annotations

NAMES = (
    "Manifest parses",
    "Required fields present and valid",
    "App image present on the host",
    "nginx port free on the host",
    "nginx.conf passes nginx -t",
)


def _app_image(image, host, on_host, source, on_controller):
    if on_host:
        return True, ["%s found" % image]
    if source == "controller" and on_controller:
        return True, ["%s is not on %s yet: deploy.yml ships it from the controller (swiftdeploy_image_source="
                      "controller, ID %s)" % (image, host, on_controller)]
    if source == "controller":
        return False, ["%s is on neither %s nor the controller; build or pull it on the controller "
                       "(swiftdeploy_image_source=controller ships it from there), or fix services.image" % (image, host)]
    return False, ["%s is not on %s; build it (scripts/build-images.sh), pull it or ship it from the controller "
                   "(swiftdeploy_image_source=controller), or fix services.image" % (image, host)]


def _port(port_number, host, port, owned):
    if port.get("free"):
        return True, ["port %s is free" % port_number]
    if owned:
        return True, ["port %s is held by this stack (redeploy)" % port_number]
    return False, ["port %s is in use on %s (%s); stop what holds it or change nginx.port"
                   % (port_number, host, port.get("reason") or "bound")]


def _nginx(nginx_test, tls_errors):
    if tls_errors:
        return False, ["not checked: the TLS certificate and key are refused (nginx.tls): %s" % error
                       for error in tls_errors]
    nginx_test = nginx_test or {}
    return bool(nginx_test.get("ok")), [nginx_test.get("detail") or "not checked"]


def checks(manifest, host, stack=None, app_image=False, image_source="host", controller_image=None,
           port=None, port_owned=False, nginx_test=None, tls_errors=None):
    """The five checks, each {number, name, ok, details, line}.

    manifest          manifest_info's result: stage, valid, errors
    stack             the validated manifest (swiftdeploy_stack), when valid
    app_image         whether services.image is on the host
    image_source      swiftdeploy_image_source (host, controller)
    controller_image  the image's ID on the controller (image_source controller), None when absent
    port              tcp_port_info's result: free, reason
    port_owned        whether this stack's nginx holds the port
    nginx_test        {ok, detail} of nginx -t on the rendered nginx.conf
    tls_errors        tls_info's errors when the certificate and key were refused
    """
    parsed = manifest.get("stage") not in ("read", "parse")
    valid = bool(manifest.get("valid"))
    errors = list(manifest.get("errors") or [])
    results = [(parsed, [] if parsed else errors)]
    if not parsed:
        results.append((False, ["not checked: the manifest does not parse"]))
    else:
        results.append((valid, [] if valid else errors))
    if not valid or stack is None:
        results += [(False, ["not checked: the manifest is not valid"])] * 3
    else:
        results.append(_app_image(stack["services"]["image"], host, app_image, image_source, controller_image))
        results.append(_port(stack["nginx"]["port"], host, port or {}, port_owned))
        results.append(_nginx(nginx_test, tls_errors))
    return [{"number": number, "name": name, "ok": ok, "details": details,
             "line": "%d. %s %s" % (number, "\u2714" if ok else "\u2718", name)}
            for number, (name, (ok, details)) in enumerate(zip(NAMES, results), start=1)]
