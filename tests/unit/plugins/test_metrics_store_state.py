# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""metrics_scrape's kept sample: written whole with mode 0640, whatever the move does to the mode."""

from __future__ import annotations

import os
import shutil
import stat

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics import Sample
from ansible_collections.swiftdeploy.stack.plugins.module_utils._metrics_store import read_state, write_state

URL = "http://127.0.0.1:3000/metrics"


def _umask_move(temporary, path):
    """As atomic_move treats a new file: moved, then given the umask's mode (0644 here)."""
    shutil.move(temporary, path)
    os.chmod(path, 0o644)


@pytest.mark.parametrize("move", [os.replace, _umask_move], ids=["os.replace", "atomic_move-like"])
@pytest.mark.parametrize("existing_mode", [None, 0o666], ids=["new file", "replaced 0666 file"])
def test_the_sample_is_kept_0640_and_read_back(tmp_path, move, existing_mode):
    path = str(tmp_path / "metrics" / "blue.json")
    if existing_mode is not None:
        os.makedirs(os.path.dirname(path))
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("old")
        os.chmod(path, existing_mode)
    sample = Sample(123.5, requests={("/", "200"): 7}, buckets={"/": {0.1: 6, float("inf"): 7}},
                    sums={"/": 0.4}, counts={"/": 7}, uptime=30.0, mode="stable", version="1.0.0")

    write_state(path, URL, sample, move=move)

    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    kept, why = read_state(path, URL)
    assert why is None
    assert kept.requests == {("/", "200"): 7}
    assert kept.buckets == {"/": {0.1: 6, float("inf"): 7}}
    assert sorted(os.listdir(os.path.dirname(path))) == ["blue.json"], "no temporary file is left behind"
