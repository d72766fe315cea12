#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_load
short_description: Load an image archive on the Docker host unless the host already has that image ID
version_added: 0.1.0
description:
  - Loads O(archive) (made by M(swiftdeploy.stack.image_export) and copied to the host) with
    C(docker image load), unless O(image) already has O(image_id) on the host, then checks that
    O(image) names O(image_id). The archive is removed afterwards (O(remove)).
  - With O(src), the action plugin first copies that archive from the controller into the
    directory of O(archive), as M(ansible.builtin.copy) does (mode C(0600)).
  - A copy or a load that takes a few seconds prints progress lines in the play output
    (C(docs/progress.md) in the collection).
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  archive:
    description: The archive's path on the host.
    type: path
    required: true
  src:
    description:
      - The archive on the controller, copied to the directory of O(archive) (created when
        missing) under its own name before the load; give O(archive) that name. Not copied in
        check mode. Handled by the action plugin; the module ignores it.
    type: path
  image:
    description: The image reference the archive holds.
    type: str
    required: true
  image_id:
    description: The ID the image must have after the load (C(sha256:) and 64 hex digits).
    type: str
    required: true
  remove:
    description: Remove the archive once loaded (or found unnecessary).
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details:
      - Reports whether it would load the archive; loads and removes nothing.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - An image that already has O(image_id) is not loaded again.
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Load the shipped image
  swiftdeploy.stack.image_load:
    archive: /root/.swiftdeploy/shop/images/4baaedf7....tar
    image: shop:2.1.0
    image_id: sha256:4baaedf7...
"""

RETURN = r"""
id:
  description: The image's ID on the host (O(image_id)).
  returned: success
  type: str
  sample: sha256:4baaedf77c87e2b3b1e0a8d7f9c1c7f3d2a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9
seconds:
  description: How long the load took.
  returned: success
  type: float
  sample: 2.87
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError, open_engine
from ansible_collections.swiftdeploy.stack.plugins.module_utils._images import ImageError, load_image


def main():
    module = AnsibleModule(argument_spec={"archive": {"type": "path", "required": True},
                                          "image": {"type": "str", "required": True},
                                          "image_id": {"type": "str", "required": True},
                                          "remove": {"type": "bool", "default": True},
                                          "src": {"type": "path"}},
                           supports_check_mode=True)
    params = module.params
    try:
        result = load_image(open_engine(check_mode=module.check_mode), params["archive"], params["image"],
                            params["image_id"], remove=params["remove"])
    except (EngineError, ImageError) as exc:
        module.fail_json(msg="cannot load %s on this host: %s" % (params["image"], exc))
    except OSError as exc:
        module.fail_json(msg="archive: %s: %s" % (params["archive"], exc.strerror or exc))
    module.exit_json(changed=result["loaded"], id=result["id"], seconds=result["seconds"])


if __name__ == "__main__":
    main()
