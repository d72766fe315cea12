"""meta/runtime.yml's action group: every module of the collection is in `stack`, and
`module_defaults: {group/swiftdeploy.stack.stack: ...}` reaches a module in a real run.

The run needs no Docker: tcp_port_info only binds a port on the managed host (this machine,
over the local connection). A listener held on 127.0.0.2 makes the port busy on 0.0.0.0 (the
module's default address) and free on 127.0.0.1 (the group's default here), so the module's
answer shows which address it was given.
"""

from __future__ import annotations

import socket

import pytest
import yaml

GROUP = "stack"


@pytest.fixture(scope="module")
def runtime(repo_root):
    return yaml.safe_load((repo_root / "meta" / "runtime.yml").read_text())


def module_names(repo_root):
    return sorted(path.stem for path in (repo_root / "plugins" / "modules").glob("*.py") if path.stem != "__init__")


def test_the_group_lists_every_module_and_nothing_else(runtime, repo_root):
    group = runtime["action_groups"][GROUP]
    assert module_names(repo_root), "no modules found"
    assert sorted(group) == module_names(repo_root)
    assert group == sorted(group), "keep the group sorted, so a new module's place is obvious"


PLAYBOOK = """
- name: module_defaults for the collection's action group
  hosts: swiftdeploy
  gather_facts: false
  module_defaults:
    group/swiftdeploy.stack.stack:
      address: 127.0.0.1
  tasks:
    - name: The group's default address
      swiftdeploy.stack.tcp_port_info:
        port: {port}
      register: from_group
    - name: An address on the task wins over the group's
      swiftdeploy.stack.tcp_port_info:
        port: {port}
        address: 0.0.0.0
      register: from_task
    - name: Check which address each probe used
      ansible.builtin.assert:
        that:
          - from_group.free
          - not from_task.free
        fail_msg: "group: {{{{ from_group }}}}; task: {{{{ from_task }}}}"
"""


def test_module_defaults_for_the_group_reach_the_module(tmp_path, run_playbook, parse_recap):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.2", 0))
        held.listen(1)
        port = held.getsockname()[1]
        playbook = tmp_path / "group_defaults.yml"
        playbook.write_text(PLAYBOOK.format(port=port))
        run = run_playbook(playbook)
    assert run.rc == 0, run.describe()
    assert parse_recap(run.stdout)["localhost"]["failed"] == 0
