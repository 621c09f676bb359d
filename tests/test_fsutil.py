import os

import pytest

from pipeline.errors import HostError
from pipeline.fsutil import atomic_directory, atomic_write_bytes


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    p = tmp_path / "a.bin"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    assert [q.name for q in tmp_path.iterdir()] == ["a.bin"]


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_failed_directory_build_keeps_previous_output(tmp_path):
    out = tmp_path / "dist"
    with atomic_directory(out) as d:
        (d / "manifest.json").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as d:
            (d / "manifest.json").write_text("half")
            raise RuntimeError("killed midway")
    assert (out / "manifest.json").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist"]


def test_unwritable_destination_is_a_host_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HostError, match="cannot write .*a path component is a file"):
        atomic_write_bytes(blocker / "sub" / "a.bin", b"data")


def test_staging_folder_of_a_killed_process_is_removed_on_the_next_write(tmp_path):
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".dist.{dead.pid}.abc.partial"
    stale.mkdir()
    (stale / "manifest.json").write_text("half")
    mine = tmp_path / f".dist.{os.getpid()}.xyz.partial"  # a live process's staging folder stays
    mine.mkdir()
    with atomic_directory(tmp_path / "dist") as d:
        (d / "manifest.json").write_text("v1")
    assert not stale.exists() and mine.exists()
