"""History anchors on the controller: where they live, how they move, what a history that went
backwards leaves behind."""

from __future__ import annotations

import datetime
import hashlib
import json
import os

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._anchors import (
    AnchorError,
    advance,
    anchor_path,
    read_anchor,
    remove_anchor,
    stats,
    write_anchor,
)

NOW = datetime.datetime(2026, 12, 7, 9, 0, 0, tzinfo=datetime.timezone.utc)
H1, H2 = "1" * 64, "2" * 64


def test_one_file_per_history_of_a_stack_on_an_inventory_host_with_safe_names():
    digest = hashlib.sha256(b"/srv/shop/history.jsonl").hexdigest()[:16]
    assert anchor_path("/a", "shop", "web1", "/srv/shop/history.jsonl") == "/a/shop/web1.%s.json" % digest
    assert anchor_path("/a", "shop", "web1", "/srv/shop//history.jsonl") == "/a/shop/web1.%s.json" % digest
    assert anchor_path("/a", "shop", "../../etc/passwd", "/h").startswith("/a/shop/.._.._etc_passwd.")
    assert anchor_path("/a", None, "h", "/h").startswith("/a/unnamed/h.")
    # Two project directories of one stack on one host are two histories, two anchors.
    first = anchor_path("/a", "shop", "web1", "/srv/a/history.jsonl")
    assert first != anchor_path("/a", "shop", "web1", "/srv/b/history.jsonl")


def test_an_anchor_moves_forward():
    first = advance(None, "shop", "web1", "/srv/h.jsonl", {"seq": 3, "hash": H1}, NOW)
    assert first == {"format": 1, "stack": "shop", "host": "web1", "history": "/srv/h.jsonl", "seq": 3, "hash": H1,
                     "updated": "2026-12-07T09:00:00Z"}
    assert advance(first, "shop", "web1", "/srv/h.jsonl", {"seq": 4, "hash": H2}, NOW)["seq"] == 4


@pytest.mark.parametrize("seq", [1, 3])
def test_a_history_that_went_backwards_keeps_the_anchor_and_is_noted(seq):
    kept = advance({"format": 1, "seq": 3, "hash": H1}, "shop", "web1", "/h", {"seq": seq, "hash": H2}, NOW)
    assert (kept["seq"], kept["hash"]) == (3, H1)
    assert kept["regressed"] == {"seq": seq, "hash": H2, "seen": "2026-12-07T09:00:00Z"}


def test_written_atomically_private_and_read_back(tmp_path):
    path = anchor_path(str(tmp_path / "anchors"), "shop", "web1", "/srv/shop/history.jsonl")
    anchor = advance(None, "shop", "web1", "/h", {"seq": 1, "hash": H1}, NOW)
    write_anchor(path, anchor)
    assert read_anchor(path) == anchor
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    remove_anchor(path)
    remove_anchor(path)
    assert read_anchor(path) is None


@pytest.mark.parametrize("text", ["{", "[]", json.dumps({"format": 2, "seq": 1, "hash": H1}),
                                  json.dumps({"format": 1, "seq": "1", "hash": H1})])
def test_a_damaged_anchor_is_named(tmp_path, text):
    path = tmp_path / "web1.json"
    path.write_text(text)
    with pytest.raises(AnchorError, match="web1.json"):
        read_anchor(str(path))


def test_stats_for_awx_carry_no_paths():
    anchor = advance(None, "shop", "web1", "/srv/h.jsonl", {"seq": 9, "hash": H1}, NOW)
    assert stats(anchor, "web1") == {"swiftdeploy_history_anchors": {"web1": {"stack": "shop", "seq": 9, "hash": H1}}}
