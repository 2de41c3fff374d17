"""Atomic writes: the target holds the old content or the whole new one, never a part."""

from __future__ import annotations

import pytest

from bpo.fsio import atomic_dir, atomic_write, write_bytes, write_text


def test_write_text_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_text(target, "old")
    write_text(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_a_failing_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.bin"
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_write(target, "wb") as handle:
        handle.write(b"half of the new")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_refuses_append(tmp_path):
    with pytest.raises(ValueError, match="whole files"), atomic_write(tmp_path / "x", "a"):
        pass


def test_atomic_dir_moves_a_complete_folder_and_replaces_the_old_one(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as staging:
        (staging / "a").write_text("1")
    with atomic_dir(target) as staging:
        assert not (target / "b").exists()
        (staging / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_a_failing_atomic_dir_keeps_the_old_folder(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_dir(target) as staging:
        (staging / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as staging:
        (staging / "half").write_text("x")
        raise RuntimeError("killed")
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_temporaries_of_dead_writers_on_this_host_are_removed(tmp_path):
    import socket
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    dead = child.pid  # a finished child: no process has its pid now
    host = socket.gethostname()
    stale_dir = tmp_path / f".ckpt.{host}.{dead}.tmp"
    stale_dir.mkdir()
    live = tmp_path / f".ckpt.{host}.1.tmp"  # pid 1 is alive
    live.mkdir()
    elsewhere = tmp_path / f".ckpt.other-node.{dead}.tmp"  # another host's: never ours to judge
    elsewhere.mkdir()
    with atomic_dir(tmp_path / "ckpt") as staging:
        (staging / "a").write_text("1")
    assert not stale_dir.exists() and live.exists() and elsewhere.exists()
