#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_build
short_description: Build an image on the Docker host, with progress lines while it builds
version_added: 0.1.0
description:
  - Builds O(name) on the managed host from a build context there (O(path), with
    M(community.docker.docker_image) and Docker's classic builder, which plain Debian Docker hosts
    have without the buildx plugin), or by running a script that builds it (O(script), with
    M(ansible.builtin.command)).
  - A build that takes a few seconds prints a progress line about every five seconds in the play
    output, naming the image and the time so far (C(docs/progress.md) in the collection).
  - The result is that of the module that did the build.
author:
  - SwiftDeploy contributors (!UNKNOWN)
extends_documentation_fragment:
  - swiftdeploy.stack.attributes
options:
  name:
    description: The image reference to build, for example C(shop:2.1.0).
    type: str
    required: true
  path:
    description:
      - The build context on the host, with its C(Dockerfile). Base images are not pulled.
      - Exactly one of O(path) and O(script).
    type: path
  build_args:
    description: Build arguments (C(ARG)) for O(path).
    type: dict
    default: {}
  script:
    description:
      - The command (argv) that builds O(name), run on the host without a shell, as
        M(ansible.builtin.command) runs O(ansible.builtin.command#module:argv).
      - Exactly one of O(path) and O(script).
    type: list
    elements: str
attributes:
  action:
    description: Has a corresponding action plugin, so some or all of its work runs on the controller.
    support: full
    details:
      - The action runs M(community.docker.docker_image) or M(ansible.builtin.command) on the host
        and prints the progress lines on the controller.
  check_mode:
    support: full
    details:
      - As the module that builds supports it; M(ansible.builtin.command) skips the script in
        check mode.
  diff_mode:
    support: none
  idempotent:
    support: partial
    details:
      - With O(path), an image that exists is not rebuilt. With O(script), as the script is.
  platform:
    support: full
    platforms: posix
seealso:
  - module: community.docker.docker_image
  - module: ansible.builtin.command
"""

EXAMPLES = r"""
- name: Build the app image from a context copied to the host
  swiftdeploy.stack.image_build:
    name: shop:2.1.0
    path: /root/.swiftdeploy/shop/build/app
    build_args:
      BASE_IMAGE: swiftdeploy-base:bookworm

- name: Build a base image with a script
  swiftdeploy.stack.image_build:
    name: swiftdeploy-base:bookworm
    script: [bash, /root/.swiftdeploy/shop/build/images/build-base-image.sh, "swiftdeploy-base:bookworm"]
"""

RETURN = r"""
image:
  description: With O(path), the built image as M(community.docker.docker_image) returns it.
  returned: with O(path), on success
  type: dict
  sample: {Id: "sha256:4baaedf77c87e2b3b1e0a8d7f9c1c7f3d2a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9"}
stdout:
  description: With O(script), what the script printed.
  returned: with O(script)
  type: str
  sample: built swiftdeploy-base:bookworm
"""
