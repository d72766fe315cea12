# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Filters that apply the rules of where a stack's images come from (module_utils/_images.py)."""

from __future__ import annotations

from ansible_collections.swiftdeploy.stack.plugins.module_utils._images import (
    image_sources,
    is_example_app,
    missing_image_message,
    wanted_images,
)


def image_sources_filter(stack, host_ids, controller=None, build_example=False):
    """The plan for one host's images: {wanted, ship, present, pull, build, example}."""
    wanted = wanted_images(stack)
    example = is_example_app(stack["services"]["image"], stack["services"]["port"])
    plan = image_sources(wanted, dict(host_ids or {}), dict(controller or {}), bool(build_example), example)
    plan["wanted"] = wanted
    plan["example"] = example
    return plan


def image_missing_message(role, image, host, reason=None):
    return missing_image_message(role, image, host, reason or None)


class FilterModule(object):
    def filters(self):
        return {
            "image_sources": image_sources_filter,
            "image_missing_message": image_missing_message,
        }
