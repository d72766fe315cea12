# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Where each image a stack needs comes from, and moving an image without a registry.

This is a private module_utils file: its API may change without notice. No Ansible imports.

A deploy needs the app image (`services.image`), the canary's (`canary.image`), nginx's and,
with the sidecar engine, OPA's on the target. `image_sources` decides, per host and from the
image IDs the host and the controller report, what each missing or outdated image takes:

- shipped from the controller (`swiftdeploy_image_source: controller`): the controller's image,
  when the host does not have that very ID. The controller exports it once per run into a cache
  keyed by the image ID (`export_image`), every host that needs it gets a copy and loads it
  (`load_image`), and a host that already has the ID is skipped;
- pulled from a registry, when the host lacks it and it is not shipped;
- built from the collection's app/ directory: only the example app (the example manifest's
  image and port) or with the explicit flag, and announced.

Anything else that is missing fails with a message naming the manifest field, the host and the
three ways to provide it (`missing_image_message`).
"""

from __future__ import annotations

import os
import re
import tempfile
import time

IMAGE_ID_RE = re.compile(r"sha256:[0-9a-f]{64}")
# The example manifest's app: its image repository and port.
EXAMPLE_REPOSITORY = "swift-deploy-1-node"
EXAMPLE_PORT = 3000
# The manifest field that names the image of each role.
FIELDS = {"app": "services.image", "canary": "canary.image", "nginx": "nginx.image", "opa": "opa.image"}
APP_ROLES = ("app", "canary")


class ImageError(Exception):
    """An image that cannot be exported or loaded; the message says what to do."""


def valid_image_id(value):
    return isinstance(value, str) and IMAGE_ID_RE.fullmatch(value) is not None


def archive_name(image_id):
    """The cache file of an image: its ID's hex digits, so one image is exported once."""
    if not valid_image_id(image_id):
        raise ImageError("%r is not an image ID (sha256: and 64 hex digits)" % (image_id,))
    return image_id.split(":", 1)[1] + ".tar"


def is_example_app(image, port):
    """Whether a service is the collection's example app: its image repository and port."""
    repository = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
    return repository == EXAMPLE_REPOSITORY and port == EXAMPLE_PORT


def wanted_images(stack):
    """{role: image} of what a stack needs on its host (a validated manifest)."""
    wanted = {"app": stack["services"]["image"], "nginx": stack["nginx"]["image"]}
    if stack["canary"]["image"] != stack["services"]["image"]:
        wanted["canary"] = stack["canary"]["image"]
    if stack["opa"]["mode"] == "sidecar":
        wanted["opa"] = stack["opa"]["image"]
    return wanted


def to_export(controller_ids, host_ids):
    """The images the controller must export: each it has (an ID in controller_ids) that one
    of the hosts (host_ids: one {image: ID or None} per host) does not have under that ID."""
    return sorted(image for image, image_id in controller_ids.items()
                  if image_id and any(ids.get(image) != image_id for ids in host_ids))


def image_sources(wanted, host_ids, controller=None, build_example=False, example=False):
    """What each image of `wanted` ({role: image}) takes on one host.

    host_ids:   {image: its ID on the host, None when absent}
    controller: {image: {id, archive}} of the images the controller ships (controller mode);
                an image with no archive or no ID is not shipped
    build_example: build the app (and canary) image from app/ when it is missing and not shipped
    example:    the stack is the example app's (is_example_app), which is built the same way

    Returns {ship: [{role, image, id, archive}], present: [{role, image, id, skipped}],
    pull: [{role, image}], build: [{role, image}]}: roles in `wanted`'s order, each image once."""
    controller = controller or {}
    plan = {"ship": [], "present": [], "pull": [], "build": []}
    seen = set()
    for role, image in wanted.items():
        if image in seen:
            continue
        seen.add(image)
        have = host_ids.get(image)
        shipped = controller.get(image) or {}
        if shipped.get("id") and shipped.get("archive") and have != shipped["id"]:
            plan["ship"].append({"role": role, "image": image, "id": shipped["id"], "archive": shipped["archive"]})
        elif have:
            # skipped: the controller ships this very ID, and the host has it already.
            plan["present"].append({"role": role, "image": image, "id": have, "skipped": have == shipped.get("id")})
        elif role in APP_ROLES and (build_example or example):
            plan["build"].append({"role": role, "image": image})
        else:
            plan["pull"].append({"role": role, "image": image})
    return plan


def missing_image_message(role, image, host, reason=None):
    """The failure for an image a host lacks and nothing could provide."""
    why = " (%s)" % reason if reason else ""
    return ("manifest field '%s': %s is not on %s and could not be obtained%s. Provide it one of three ways: "
            "(1) pull it from a registry: push it there and give the credentials in swiftdeploy_registry "
            "(url, username, password); (2) ship it from the controller without a registry: build or load it "
            "on the controller and run with -e swiftdeploy_image_source=controller; (3) load it on the host "
            "yourself (docker load) and run again." % (FIELDS.get(role, role), image, host, why))


# --------------------------------------------------------------------------------------------
# Moving an image: export on the controller, load on the host (over an _engine engine)
# --------------------------------------------------------------------------------------------


def export_image(engine, image, cache_dir, image_id=None):
    """{image, id, archive, exported, bytes}: the image's archive in cache_dir, exported with
    `docker save` unless the cache already has it (its name is the image ID). A dry-run engine
    records the export and writes nothing. ImageError when the image is not there."""
    image_id = image_id or engine.image_id(image)
    if not image_id:
        raise ImageError("%s is not on the controller" % image)
    path = os.path.join(cache_dir, archive_name(image_id))
    if os.path.isfile(path):
        if not engine.dry_run:
            os.utime(path)  # its last use, which prune_cache() goes by
        return {"image": image, "id": image_id, "archive": path, "exported": False, "bytes": os.path.getsize(path)}
    if engine.dry_run:
        engine.image_save(image, path)
        return {"image": image, "id": image_id, "archive": path, "exported": True, "bytes": None}
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".partial-", suffix=".tar", dir=cache_dir)
    os.close(handle)
    try:
        engine.image_save(image, partial)
        # The tag may have moved since it was inspected: the archive holds what was saved.
        saved = engine.image_id(image)
        if saved != image_id:
            raise ImageError("%s changed while it was exported (%s, now %s); run again" % (image, image_id, saved))
        os.rename(partial, path)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return {"image": image, "id": image_id, "archive": path, "exported": True, "bytes": os.path.getsize(path)}


ARCHIVE_RE = re.compile(r"[0-9a-f]{64}\.tar")
PARTIAL_RE = re.compile(r"\.partial-[A-Za-z0-9_]+\.tar")
# A partial archive this old is left by an export that died (a killed run), never a live one.
PARTIAL_MAX_AGE_SECONDS = 24 * 3600


def prune_cache(cache_dir, max_age_seconds, keep=(), now=None, dry_run=False):
    """Remove the cache's archives unused for max_age_seconds (an archive's mtime is its last
    use: export_image touches one it reuses), and partial archives of dead exports, except the
    files named in keep (this run's). Only files named as this module names them are touched;
    anything else in the directory is left alone. max_age_seconds 0 or less keeps everything.
    Returns the sorted paths removed (that would be, with dry_run)."""
    if max_age_seconds <= 0 or not os.path.isdir(cache_dir):
        return []
    now = time.time() if now is None else now
    keep = set(os.path.abspath(path) for path in keep)
    removed = []
    for name in sorted(os.listdir(cache_dir)):
        path = os.path.join(cache_dir, name)
        if ARCHIVE_RE.fullmatch(name):
            limit = max_age_seconds
        elif PARTIAL_RE.fullmatch(name):
            limit = PARTIAL_MAX_AGE_SECONDS
        else:
            continue
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            continue
        if not os.path.isfile(path) or os.path.islink(path) or os.path.abspath(path) in keep:
            continue
        if now - found.st_mtime < limit:
            continue
        if not dry_run:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
        removed.append(path)
    return removed


def load_image(engine, archive, image, image_id, remove=True):
    """{image, id, loaded, seconds}: the archive loaded with `docker image load` unless `image`
    already has image_id on this host; the archive is removed afterwards (remove). ImageError
    when the archive is missing or the image does not have image_id after the load."""
    if not valid_image_id(image_id):
        raise ImageError("image_id: %r is not an image ID (sha256: and 64 hex digits)" % (image_id,))
    started = time.monotonic()
    loaded = False
    try:
        if engine.image_id(image) != image_id:
            if not engine.dry_run and not os.path.isfile(archive):
                raise ImageError("archive: %s is not on this host; copy the exported image there first" % archive)
            engine.image_load(archive)
            loaded = True
            if not engine.dry_run:
                now = engine.image_id(image)
                if now != image_id:
                    raise ImageError("%s is %s on this host after loading %s, not %s; the archive holds another "
                                     "image: remove it from the controller's cache and run again"
                                     % (image, now or "absent", archive, image_id))
    finally:
        if remove and not engine.dry_run and os.path.isfile(archive):
            os.unlink(archive)
    return {"image": image, "id": image_id, "loaded": loaded, "seconds": round(time.monotonic() - started, 3)}
