# -*- coding: utf-8 -*-
# Copyright: SwiftDeploy contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""write_atomic: the one way files on the host are replaced (modes, owner, move, no leftovers)."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.swiftdeploy.stack.plugins.module_utils._project_files import (
    fsync_directory,
    synced_temp,
    write_atomic,
)


def mode_of(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("mode, before", [
    (0o600, None),
    (0o640, None),
    (0o644, None),
    (0o600, 0o644),
    (0o644, 0o600),
])
def test_the_file_has_the_content_and_mode_asked_whatever_was_there(tmp_path, mode, before):
    path = str(tmp_path / "state.json")
    if before is not None:
        with open(path, "wb") as handle:
            handle.write(b"old")
        os.chmod(path, before)
    write_atomic(path, b'{"a": 1}\n', mode)
    assert open(path, "rb").read() == b'{"a": 1}\n'
    assert mode_of(path) == mode
    assert os.listdir(str(tmp_path)) == ["state.json"]


def test_the_temporary_file_is_private_before_a_byte_is_written(tmp_path):
    path = str(tmp_path / "k.key")
    temporary = synced_temp(path, b"secret", 0o600)
    assert os.path.dirname(temporary) == str(tmp_path)
    assert os.path.basename(temporary).startswith(".k.key.") and temporary.endswith(".tmp")
    assert mode_of(temporary) == 0o600
    assert open(temporary, "rb").read() == b"secret"


def test_the_owner_is_given_to_the_new_file(tmp_path):
    path = str(tmp_path / "token.json")
    write_atomic(path, b"x", 0o600, os.getuid(), os.getgid())
    info = os.lstat(path)
    assert (info.st_uid, info.st_gid) == (os.getuid(), os.getgid())


def test_a_link_in_place_is_replaced_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    path = tmp_path / "k.key"
    path.symlink_to(target)
    write_atomic(str(path), b"new", 0o600)
    assert not path.is_symlink() and path.read_bytes() == b"new"
    assert target.read_bytes() == b"untouched"


def test_a_module_move_is_used_and_the_mode_given_again(tmp_path):
    """Ansible's atomic_move gives a new file the umask's mode; the mode asked wins."""
    moves = []

    def atomic_move(source, destination):
        moves.append((os.path.dirname(source), destination))
        os.rename(source, destination)
        os.chmod(destination, 0o644)

    path = str(tmp_path / "state.json")
    write_atomic(path, b"{}", 0o600, move=atomic_move)
    assert moves == [(str(tmp_path), path)]
    assert mode_of(path) == 0o600 and open(path, "rb").read() == b"{}"


def test_a_failed_move_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def failing_move(source, destination):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_atomic(str(path), b"new", 0o600, move=failing_move)
    assert path.read_bytes() == b"old"
    assert os.listdir(str(tmp_path)) == ["state.json"]


def test_a_missing_directory_is_an_error_not_a_stray_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_atomic(str(tmp_path / "gone" / "state.json"), b"x", 0o600)
    assert os.listdir(str(tmp_path)) == []


def test_a_directory_is_synced_and_a_missing_one_is_an_error(tmp_path):
    fsync_directory(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        fsync_directory(str(tmp_path / "gone"))
