"""No manifest value can change nginx.conf's structure.

The validator refuses dangerous contacts (unit-tested); this test goes around it on purpose:
it renders the real template with hostile values through Ansible, lets the render role's
`nginx -t` check it in the real nginx image, compares the parsed structure with a benign
render, then serves the file with real nginx and checks the 502 body carries the value intact.
"""

import copy
import http.client
import importlib.util
import json
import os
import socket
import subprocess
import time

import crossplane
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NGINX_IMAGE = "nginx:latest"

pytestmark = pytest.mark.docker

HOSTILE = [
    "x'; } server { listen 9999; #",
    'a"b\'c',
    "semi;colon { brace } ",
    "line\nbreak\r\n\tlisten 9998;",
    "$host ${remote_addr} $$",
    "back\\slash\\' \\\\",
    "\u00e9\u00e8 \u2603 \U0001F600",
]


def _load_schema():
    spec = importlib.util.spec_from_file_location(
        "swiftdeploy_manifest_schema", os.path.join(ROOT, "plugins", "module_utils", "_manifest.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stack(contact):
    schema = _load_schema()
    stack = schema.validate_manifest({
        "services": {"image": "swift-deploy-1-node:latest", "port": 3000},
        # One nginx on the public port (nginx.edge false): the file served here is nginx.conf alone.
        "nginx": {"image": NGINX_IMAGE, "port": 8080, "edge": False},
        "contact": "ops@swiftdeploy.local",
    })
    stack = copy.deepcopy(stack)
    stack["contact"] = contact
    return stack


def _env():
    env = dict(os.environ)
    env.update(PATH=os.path.join(ROOT, ".venv", "bin") + os.pathsep + env["PATH"],
               ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".collections"),
               ANSIBLE_FORCE_COLOR="0")
    return env


def render(tmp_path, contact):
    project = tmp_path / "project"
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"swiftdeploy_stack": _stack(contact), "swiftdeploy_project_path": str(project)}))
    proc = subprocess.run(
        ["ansible-playbook", os.path.join(ROOT, "tests", "integration", "playbooks", "render_values.yml"),
         "-e", "@" + str(extra)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return project / "nginx" / "nginx.conf"


def structure(path):
    """The parsed directive tree, with the error bodies (the only place contact goes) blanked."""
    parsed = crossplane.parse(str(path), single=True, comments=False, check_ctx=True, check_args=True)
    assert parsed["status"] == "ok", parsed["errors"]

    def strip(block):
        out = []
        for directive in block:
            args = directive["args"]
            if directive["directive"] == "return" and args and args[0] in ("403", "502", "503", "504"):
                args = [args[0], "<body>"]
            out.append((directive["directive"], tuple(args), tuple(strip(directive.get("block", [])))))
        return out

    return strip(parsed["config"][0]["parsed"])


@pytest.fixture(scope="module")
def benign(tmp_path_factory):
    if subprocess.run(["docker", "image", "inspect", NGINX_IMAGE], capture_output=True, check=False).returncode != 0:
        pytest.skip("%s is not built; run `make setup`" % NGINX_IMAGE)
    return structure(render(tmp_path_factory.mktemp("benign"), "ops@swiftdeploy.local"))


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_and_get_502(conf):
    """Run real nginx on the file with no app behind it and return the 502 response."""
    port = _free_port()
    name = "swiftdeploy-injection-%d" % port
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--user", "101:101", "--read-only",
                    "--tmpfs", "/tmp", "--tmpfs", "/var/log/nginx:uid=101", "--add-host", "app-blue:127.0.0.1",
                    "-v", "%s:/etc/nginx/nginx.conf:ro" % conf, "-p", "127.0.0.1:%d:8080" % port, NGINX_IMAGE],
                   check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/anything")
                response = conn.getresponse()
                return response.status, dict(response.getheaders()), response.read()
            except (ConnectionError, http.client.RemoteDisconnected):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@pytest.mark.parametrize("contact", HOSTILE)
def test_hostile_contact_cannot_change_structure(tmp_path, benign, contact):
    conf = render(tmp_path, contact)
    assert structure(conf) == benign


@pytest.mark.parametrize("contact", [HOSTILE[0], HOSTILE[3], HOSTILE[4]])
def test_hostile_contact_comes_back_intact_in_the_502_body(tmp_path, benign, contact):
    status, headers, body = serve_and_get_502(render(tmp_path, contact))
    assert status == 502
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Deployed-By"] == "swiftdeploy"
    assert json.loads(body) == {"error": "Bad Gateway", "code": 502, "service": "app", "contact": contact}


def test_hostile_allow_list_entry_is_refused_not_rendered(tmp_path):
    stack = _stack("ops@swiftdeploy.local")
    stack["chaos"]["allow_from"] = ["10.0.0.0/8; allow all"]
    project = tmp_path / "project"
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"swiftdeploy_stack": stack, "swiftdeploy_project_path": str(project)}))
    proc = subprocess.run(
        ["ansible-playbook", os.path.join(ROOT, "tests", "integration", "playbooks", "render_values.yml"),
         "-e", "@" + str(extra)], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    # `;` inside quotes is harmless to nginx, but `allow` rejects the value, so nginx -t refuses
    # it and the file never lands.
    assert proc.returncode != 0
    assert not (project / "nginx" / "nginx.conf").exists()
