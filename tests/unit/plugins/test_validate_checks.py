"""Table tests of validate.yml's five checks (module_utils/_validate.py)."""

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._validate import NAMES, checks

STACK = {"services": {"image": "team/api:2.1"}, "nginx": {"port": 8080}}
VALID = {"stage": "done", "valid": True, "errors": []}
FREE = {"free": True}
NGINX_OK = {"ok": True, "detail": "nginx -t accepts it"}


def run(**kwargs):
    args = {"manifest": VALID, "host": "web1", "stack": STACK, "app_image": True, "port": FREE,
            "nginx_test": NGINX_OK}
    args.update(kwargs)
    return checks(**args)


def marks(result):
    return [(check["number"], check["ok"]) for check in result]


def test_all_pass_with_the_original_names_and_lines():
    result = run()
    assert [check["name"] for check in result] == list(NAMES)
    assert [check["line"] for check in result][0] == "1. \u2714 Manifest parses"
    assert all(check["ok"] for check in result)


@pytest.mark.parametrize("kwargs, failed, detail", [
    # the manifest does not parse: 2-5 not checked
    ({"manifest": {"stage": "parse", "valid": False, "errors": ["line 3: mapping values"]}, "stack": None},
     [1, 2, 3, 4, 5], ["line 3: mapping values"]),
    # parses, but a field is wrong: 3-5 not checked
    ({"manifest": {"stage": "schema", "valid": False, "errors": ["nginx.port: 'x' is not a port"]}, "stack": None},
     [2, 3, 4, 5], ["nginx.port: 'x' is not a port"]),
    # image missing, pulled or built by hand
    ({"app_image": False}, [3], ["team/api:2.1 is not on web1; build it (scripts/build-images.sh), pull it or ship "
                                 "it from the controller (swiftdeploy_image_source=controller), or fix services.image"]),
    # image missing on both sides with controller shipping
    ({"app_image": False, "image_source": "controller"}, [3],
     ["team/api:2.1 is on neither web1 nor the controller; build or pull it on the controller "
      "(swiftdeploy_image_source=controller ships it from there), or fix services.image"]),
    # the port is someone else's
    ({"port": {"free": False, "reason": "Address in use"}}, [4],
     ["port 8080 is in use on web1 (Address in use); stop what holds it or change nginx.port"]),
    # nginx -t refuses the file
    ({"nginx_test": {"ok": False, "detail": "nginx -t: unknown directive"}}, [5], ["nginx -t: unknown directive"]),
    # a refused TLS pair: nginx -t could not run
    ({"tls_errors": ["the private key does not match the certificate"], "nginx_test": None}, [5],
     ["not checked: the TLS certificate and key are refused (nginx.tls): the private key does not match the certificate"]),
])
def test_failures_name_what_to_do(kwargs, failed, detail):
    result = run(**kwargs)
    assert [number for number, ok in marks(result) if not ok] == failed
    assert result[failed[0] - 1]["details"] == detail
    assert result[failed[0] - 1]["line"].startswith("%d. \u2718 " % failed[0])


@pytest.mark.parametrize("kwargs, detail", [
    ({"app_image": False, "image_source": "controller", "controller_image": "sha256:abc"},
     "team/api:2.1 is not on web1 yet: deploy.yml ships it from the controller (swiftdeploy_image_source=controller, "
     "ID sha256:abc)"),
    ({"port": {"free": False, "reason": "in use"}, "port_owned": True}, "port 8080 is held by this stack (redeploy)"),
])
def test_passes_that_say_why(kwargs, detail):
    result = run(**kwargs)
    assert all(ok for _number, ok in marks(result))
    assert detail in [line for check in result for line in check["details"]]
