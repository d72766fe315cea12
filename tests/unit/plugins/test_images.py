"""Where a stack's images come from, and moving one without a registry: tables over the pure
rules of module_utils/_images.py, and export/load over a fake engine."""

from __future__ import annotations

import os

import pytest

from ansible_collections.swiftdeploy.stack.plugins.filter.images import image_missing_message, image_sources_filter
from ansible_collections.swiftdeploy.stack.plugins.module_utils._images import (
    ImageError,
    archive_name,
    export_image,
    image_sources,
    is_example_app,
    prune_cache,
    load_image,
    to_export,
    wanted_images,
)

ID_A, ID_B, ID_N = ("sha256:" + c * 64 for c in "abc")
WANTED = {"app": "shop:2", "nginx": "nginx:latest"}


def stack(image="shop:2", port=8000, canary=None, opa="embedded"):
    return {"services": {"image": image, "port": port}, "nginx": {"image": "nginx:latest"},
            "canary": {"image": canary or image}, "opa": {"mode": opa, "image": "opa:1"}}


@pytest.mark.parametrize("manifest, wanted", [
    (stack(), {"app": "shop:2", "nginx": "nginx:latest"}),
    (stack(canary="shop:3"), {"app": "shop:2", "nginx": "nginx:latest", "canary": "shop:3"}),
    (stack(opa="sidecar"), {"app": "shop:2", "nginx": "nginx:latest", "opa": "opa:1"}),
])
def test_wanted_images(manifest, wanted):
    assert wanted_images(manifest) == wanted


@pytest.mark.parametrize("image, port, example", [
    ("swift-deploy-1-node:latest", 3000, True),
    ("swift-deploy-1-node:1.1.0", 3000, True),
    ("swift-deploy-1-node", 3000, True),
    ("swift-deploy-1-node:latest", 8000, False),          # not the example's settings
    ("acme/swift-deploy-1-node:latest", 3000, False),     # another repository
    ("registry:5000/swift-deploy-1-node:latest", 3000, False),
    ("shop:2", 3000, False),
])
def test_only_the_example_app_is_the_example(image, port, example):
    assert is_example_app(image, port) is example


@pytest.mark.parametrize("controller, hosts, exported", [
    ({"shop:2": ID_A}, [{"shop:2": None}], ["shop:2"]),
    ({"shop:2": ID_A}, [{"shop:2": ID_A}], []),                       # every host has that ID
    ({"shop:2": ID_A}, [{"shop:2": ID_A}, {"shop:2": ID_B}], ["shop:2"]),  # one host has another
    ({"shop:2": None}, [{"shop:2": None}], []),                        # not on the controller
    ({"shop:2": ID_A, "nginx:latest": ID_N}, [{"shop:2": ID_A}, {}], ["nginx:latest", "shop:2"]),
    ({"shop:2": ID_A}, [], []),
])
def test_what_the_controller_exports(controller, hosts, exported):
    assert to_export(controller, hosts) == exported


SHIP_A = {"id": ID_A, "archive": "/cache/a.tar"}


@pytest.mark.parametrize("host_ids, controller, build_example, example, plan", [
    # Registry mode: what is missing is pulled.
    ({"shop:2": None, "nginx:latest": ID_N}, {}, False, False,
     {"ship": [], "present": [{"role": "nginx", "image": "nginx:latest", "id": ID_N, "skipped": False}],
      "pull": [{"role": "app", "image": "shop:2"}], "build": []}),
    # Controller mode: the host lacks the ID (absent, or another ID): shipped.
    ({"shop:2": None, "nginx:latest": ID_N}, {"shop:2": SHIP_A}, False, False,
     {"ship": [{"role": "app", "image": "shop:2", "id": ID_A, "archive": "/cache/a.tar"}],
      "present": [{"role": "nginx", "image": "nginx:latest", "id": ID_N, "skipped": False}], "pull": [], "build": []}),
    ({"shop:2": ID_B, "nginx:latest": ID_N}, {"shop:2": SHIP_A}, False, False,
     {"ship": [{"role": "app", "image": "shop:2", "id": ID_A, "archive": "/cache/a.tar"}],
      "present": [{"role": "nginx", "image": "nginx:latest", "id": ID_N, "skipped": False}], "pull": [], "build": []}),
    # The host has that very ID: skipped.
    ({"shop:2": ID_A, "nginx:latest": ID_N}, {"shop:2": SHIP_A}, False, False,
     {"ship": [], "present": [{"role": "app", "image": "shop:2", "id": ID_A, "skipped": True},
                              {"role": "nginx", "image": "nginx:latest", "id": ID_N, "skipped": False}],
      "pull": [], "build": []}),
    # No archive (no host needed it) or the controller lacks it: not shipped.
    ({"shop:2": None, "nginx:latest": None}, {"shop:2": {"id": ID_A, "archive": None}, "nginx:latest": {"id": None}},
     False, False,
     {"ship": [], "present": [], "pull": [{"role": "app", "image": "shop:2"}, {"role": "nginx", "image": "nginx:latest"}],
      "build": []}),
    # The example app (or the flag) is built when missing and not shipped; nginx never is.
    ({"shop:2": None, "nginx:latest": None}, {}, False, True,
     {"ship": [], "present": [], "pull": [{"role": "nginx", "image": "nginx:latest"}],
      "build": [{"role": "app", "image": "shop:2"}]}),
    ({"shop:2": None, "nginx:latest": ID_N}, {}, True, False,
     {"ship": [], "present": [{"role": "nginx", "image": "nginx:latest", "id": ID_N, "skipped": False}], "pull": [],
      "build": [{"role": "app", "image": "shop:2"}]}),
    # Shipping wins over building the example.
    ({"shop:2": None, "nginx:latest": ID_N}, {"shop:2": SHIP_A}, True, True,
     {"ship": [{"role": "app", "image": "shop:2", "id": ID_A, "archive": "/cache/a.tar"}],
      "present": [{"role": "nginx", "image": "nginx:latest", "id": ID_N, "skipped": False}], "pull": [], "build": []}),
])
def test_image_sources(host_ids, controller, build_example, example, plan):
    assert image_sources(WANTED, host_ids, controller, build_example, example) == plan


def test_an_image_used_twice_is_planned_once():
    plan = image_sources({"app": "shop:2", "canary": "shop:2", "nginx": "shop:2"}, {}, {}, False, False)
    assert plan["pull"] == [{"role": "app", "image": "shop:2"}]


def test_the_filter_adds_what_is_wanted_and_whether_it_is_the_example():
    plan = image_sources_filter(stack("swift-deploy-1-node:latest", 3000), {"nginx:latest": ID_N})
    assert plan["wanted"] == {"app": "swift-deploy-1-node:latest", "nginx": "nginx:latest"}
    assert plan["example"] is True
    assert plan["build"] == [{"role": "app", "image": "swift-deploy-1-node:latest"}]
    assert image_sources_filter(stack(), {})["build"] == []


@pytest.mark.parametrize("role, field", [("app", "services.image"), ("canary", "canary.image")])
def test_the_failure_names_the_field_the_host_and_the_three_fixes(role, field):
    assert image_missing_message(role, "shop:2", "web1", "pull failed: not found") == (
        "manifest field '%s': shop:2 is not on web1 and could not be obtained (pull failed: not found). Provide it "
        "one of three ways: (1) pull it from a registry: push it there and give the credentials in "
        "swiftdeploy_registry (url, username, password); (2) ship it from the controller without a registry: build "
        "or load it on the controller and run with -e swiftdeploy_image_source=controller; (3) load it on the host "
        "yourself (docker load) and run again." % field)
    assert "could not be obtained. Provide" in image_missing_message(role, "shop:2", "web1")


@pytest.mark.parametrize("value", [None, "", "sha256:" + "a" * 63, "sha256:" + "A" * 64, "md5:" + "a" * 64,
                                   "sha256:" + "a" * 64 + "/../x"])
def test_archive_names_come_from_image_ids_only(value):
    with pytest.raises(ImageError):
        archive_name(value)


def test_archive_name():
    assert archive_name(ID_A) == "a" * 64 + ".tar"


# --------------------------------------------------------------------------------------------
# Export and load over a fake engine
# --------------------------------------------------------------------------------------------


class FakeEngine(object):
    def __init__(self, images, dry_run=False, load_gives=None):
        self.images = dict(images)
        self.dry_run = dry_run
        self.calls = []
        self.load_gives = load_gives or {}

    def image_id(self, image):
        return self.images.get(image)

    def image_save(self, image, path):
        self.calls.append(("save", image))
        if not self.dry_run:
            with open(path, "w") as handle:
                handle.write("archive of %s" % self.images[image])

    def image_load(self, path):
        self.calls.append(("load", path))
        self.images.update(self.load_gives)
        return "Loaded image: shop:2\n"


def test_an_image_is_exported_once_into_the_cache(tmp_path):
    engine = FakeEngine({"shop:2": ID_A})
    first = export_image(engine, "shop:2", str(tmp_path / "cache"))
    assert first == {"image": "shop:2", "id": ID_A, "archive": str(tmp_path / "cache" / archive_name(ID_A)),
                     "exported": True, "bytes": len("archive of " + ID_A)}
    again = export_image(engine, "shop:2", str(tmp_path / "cache"))
    assert again["exported"] is False and engine.calls == [("save", "shop:2")]
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == [archive_name(ID_A)]


def test_check_mode_exports_nothing(tmp_path):
    engine = FakeEngine({"shop:2": ID_A}, dry_run=True)
    assert export_image(engine, "shop:2", str(tmp_path / "cache"))["exported"] is True
    assert not (tmp_path / "cache").exists()


def test_an_image_missing_on_the_controller_cannot_be_exported(tmp_path):
    with pytest.raises(ImageError, match="shop:2 is not on the controller"):
        export_image(FakeEngine({}), "shop:2", str(tmp_path))


def test_a_tag_that_moves_during_the_export_leaves_no_archive(tmp_path):
    engine = FakeEngine({"shop:2": ID_A})
    original = engine.image_save

    def moving_save(image, path):
        original(image, path)
        engine.images[image] = ID_B
    engine.image_save = moving_save
    with pytest.raises(ImageError, match="changed while it was exported"):
        export_image(engine, "shop:2", str(tmp_path), ID_A)
    assert list(tmp_path.iterdir()) == []


def test_load_skips_an_image_the_host_has_and_removes_the_archive(tmp_path):
    archive = tmp_path / "a.tar"
    archive.write_text("x")
    engine = FakeEngine({"shop:2": ID_A})
    assert load_image(engine, str(archive), "shop:2", ID_A)["loaded"] is False
    assert engine.calls == [] and not archive.exists()


def test_load_loads_and_checks_the_id(tmp_path):
    archive = tmp_path / "a.tar"
    archive.write_text("x")
    engine = FakeEngine({"shop:2": ID_B}, load_gives={"shop:2": ID_A})
    assert load_image(engine, str(archive), "shop:2", ID_A)["loaded"] is True
    assert engine.calls == [("load", str(archive))] and not archive.exists()


def test_an_archive_holding_another_image_fails(tmp_path):
    archive = tmp_path / "a.tar"
    archive.write_text("x")
    with pytest.raises(ImageError, match="shop:2 is %s on this host after loading .*, not %s" % (ID_B, ID_A)):
        load_image(FakeEngine({}, load_gives={"shop:2": ID_B}), str(archive), "shop:2", ID_A)


def test_a_missing_archive_fails(tmp_path):
    with pytest.raises(ImageError, match="archive: .* is not on this host"):
        load_image(FakeEngine({}), str(tmp_path / "none.tar"), "shop:2", ID_A)


def test_check_mode_loads_nothing(tmp_path):
    engine = FakeEngine({}, dry_run=True)
    assert load_image(engine, str(tmp_path / "none.tar"), "shop:2", ID_A)["loaded"] is True
    assert engine.images == {}


# --------------------------------------------------------------------------------------------
# The controller's cache stays bounded
# --------------------------------------------------------------------------------------------

DAY = 86400.0
NOW = 1_900_000_000.0


def _file(directory, name, age_days):
    path = directory / name
    path.write_text("x")
    os.utime(path, (NOW - age_days * DAY, NOW - age_days * DAY))
    return path


@pytest.mark.parametrize("name, age_days, max_age_days, keep, removed", [
    ("a" * 64 + ".tar", 15, 14, False, True),     # unused for longer than the limit
    ("a" * 64 + ".tar", 13, 14, False, False),    # used within the limit
    ("a" * 64 + ".tar", 400, 14, True, False),    # this run's archive, however old
    ("a" * 64 + ".tar", 400, 0, False, False),    # 0 keeps everything
    (".partial-abc_12.tar", 2, 14, False, True),  # an export that died more than a day ago
    (".partial-abc_12.tar", 0.5, 14, False, False),  # may be an export running now
    ("A" * 64 + ".tar", 400, 14, False, False),   # not a name the export writes
    ("notes.txt", 400, 14, False, False),
    ("a" * 63 + ".tar", 400, 14, False, False),
])
def test_prune_cache(tmp_path, name, age_days, max_age_days, keep, removed):
    path = _file(tmp_path, name, age_days)
    gone = prune_cache(str(tmp_path), max_age_days * DAY, keep=[str(path)] if keep else [], now=NOW)
    assert gone == ([str(path)] if removed else [])
    assert path.exists() is not removed


def test_prune_cache_in_check_mode_removes_nothing(tmp_path):
    path = _file(tmp_path, "b" * 64 + ".tar", 30)
    assert prune_cache(str(tmp_path), 14 * DAY, now=NOW, dry_run=True) == [str(path)]
    assert path.exists()


def test_prune_cache_leaves_links_and_directories_alone(tmp_path):
    target = _file(tmp_path, "keep.bin", 30)
    link = tmp_path / ("c" * 64 + ".tar")
    link.symlink_to(target)
    os.utime(link, (NOW - 30 * DAY, NOW - 30 * DAY), follow_symlinks=False)
    (tmp_path / ("d" * 64 + ".tar")).mkdir()
    assert prune_cache(str(tmp_path), 14 * DAY, now=NOW) == []
    assert prune_cache(str(tmp_path / "missing"), 14 * DAY, now=NOW) == []


def test_a_reused_archive_counts_as_used(tmp_path):
    engine = FakeEngine({"shop:2": ID_A})
    cache = tmp_path / "cache"
    archive = export_image(engine, "shop:2", str(cache))["archive"]
    os.utime(archive, (NOW - 30 * DAY, NOW - 30 * DAY))
    export_image(engine, "shop:2", str(cache))
    assert prune_cache(str(cache), 14 * DAY) == []
