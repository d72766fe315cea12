#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_export
short_description: Export images with docker save into a cache keyed by image ID, for hosts that lack them
version_added: 0.1.0
description:
  - Looks up each image of O(images) in the local Docker engine and, for each one that at least
    one host of O(hosts) does not have under the same image ID, makes sure its archive
    (C(docker image save)) is in O(cache_dir), named after the image ID. An archive already in
    the cache is reused, so an image is exported once however many hosts and runs need it.
  - The swiftdeploy role runs it once per play on the controller (C(run_once), C(delegate_to
    localhost)) when C(swiftdeploy_image_source=controller); each host then copies the archives
    it needs and loads them with M(swiftdeploy.stack.image_load). No registry is involved.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  images:
    description: Image references (or IDs) to look up.
    type: list
    elements: str
    required: true
  hosts:
    description:
      - One mapping per target host of image reference to the image's ID on that host (null when
        absent), as M(swiftdeploy.stack.host_resources_info) returns RV(swiftdeploy.stack.host_resources_info#module:image_ids).
      - An image is exported only when some host lacks its ID.
    type: list
    elements: dict
    default: []
  cache_dir:
    description: The directory of the archives, created (mode 0700) when missing.
    type: path
    required: true
  cache_max_age_days:
    description:
      - Archives in O(cache_dir) not used for this many days are removed after the export (an
        archive's last use is its modification time, and a reused archive is touched), and so are
        partial archives of exports that died more than a day ago. This run's archives are kept.
        Only files named as this module names them are touched.
      - V(0) keeps every archive.
    type: float
    default: 14
attributes:
  check_mode:
    support: full
    details:
      - Reports the archives it would write and remove, and writes or removes none.
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - An archive in the cache is reused; a second run exports nothing.
  platform:
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Export the images the hosts lack, once, on the controller
  swiftdeploy.stack.image_export:
    images: [shop:2.1.0]
    hosts: "{{ ansible_play_hosts | map('extract', hostvars, 'shop_image_ids') | list }}"
    cache_dir: ~/.cache/swiftdeploy/images
  run_once: true
  delegate_to: localhost
  register: exported
"""

RETURN = r"""
images:
  description:
    - For each image of O(images), C(id) (its ID here, null when the controller does not have it),
      C(archive) (the archive's path, null when no host needs it or the image is not here),
      C(exported) (whether this call wrote the archive) and C(bytes) (its size).
  returned: success
  type: dict
  sample:
    "shop:2.1.0": {id: "sha256:4baaedf77c87e2b3b1e0a8d7f9c1c7f3d2a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9",
                   archive: /root/.cache/swiftdeploy/images/4baaedf77c87e2b3b1e0a8d7f9c1c7f3d2a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9.tar,
                   exported: true, bytes: 163840000}
pruned:
  description: The archives removed from O(cache_dir) because they were not used for O(cache_max_age_days) (that would be, in check mode).
  returned: success
  type: list
  elements: str
  sample: [/root/.cache/swiftdeploy/images/0d2a4f0e6c1b5a3d7e9f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d.tar]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.swiftdeploy.stack.plugins.module_utils._engine import EngineError, open_engine
from ansible_collections.swiftdeploy.stack.plugins.module_utils._images import ImageError, export_image, prune_cache, to_export


def main():
    module = AnsibleModule(argument_spec={"images": {"type": "list", "elements": "str", "required": True},
                                          "hosts": {"type": "list", "elements": "dict", "default": []},
                                          "cache_dir": {"type": "path", "required": True},
                                          "cache_max_age_days": {"type": "float", "default": 14}},
                           supports_check_mode=True)
    params = module.params
    images = list(dict.fromkeys(params["images"]))
    try:
        engine = open_engine(check_mode=module.check_mode)
        ids = engine.survey(images)["images"]
        needed = set(to_export(ids, params["hosts"]))
        found = {}
        for image in images:
            if image in needed:
                found[image] = export_image(engine, image, params["cache_dir"], ids[image])
            else:
                found[image] = {"image": image, "id": ids[image], "archive": None, "exported": False, "bytes": None}
        pruned = prune_cache(params["cache_dir"], params["cache_max_age_days"] * 86400,
                             keep=[entry["archive"] for entry in found.values() if entry["archive"]],
                             dry_run=module.check_mode)
    except (EngineError, ImageError) as exc:
        module.fail_json(msg="cannot export the images for the hosts: %s" % exc)
    except OSError as exc:
        module.fail_json(msg="cache_dir: cannot write %s: %s" % (params["cache_dir"], exc.strerror or exc))
    module.exit_json(changed=any(entry["exported"] for entry in found.values()) or bool(pruned), images=found, pruned=pruned)


if __name__ == "__main__":
    main()
