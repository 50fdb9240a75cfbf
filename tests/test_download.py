"""Lesson 01's machinery against a real Git LFS repository served over file:// - offline, never the network."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import helpers
from helpers.download import (
    LFSPointer,
    clone_without_weights,
    download_seconds,
    find_lfs_pointers,
    lfs_manifest,
    pull,
    read_pointer,
    require_git_lfs,
    verify,
)
from helpers.errors import CourseError
from helpers.local_hub import build_practice_repo

POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"
)


@pytest.fixture(scope="module")
def practice_url(tmp_path_factory):
    return build_practice_repo(helpers.TINY_MODEL_DIR, tmp_path_factory.mktemp("hub"))


@pytest.fixture
def clone(practice_url, tmp_path):
    return clone_without_weights(practice_url, tmp_path / "clone")


def test_pointer_parsing(tmp_path):
    pointer = LFSPointer.parse(POINTER)
    assert pointer.size == 12345 and pointer.oid.startswith("4d7a2146")
    assert LFSPointer.parse(b"\x08\x00\x00\x00{}") is None and LFSPointer.parse("version 1\nsize 3\n") is None
    (tmp_path / "model.safetensors").write_text(POINTER)
    (tmp_path / "real.json").write_text("{}")
    assert read_pointer(tmp_path / "model.safetensors") == pointer and read_pointer(tmp_path / "real.json") is None
    assert find_lfs_pointers(tmp_path) == [tmp_path / "model.safetensors"]


def test_clone_skips_weights_and_sizes_come_from_pointers(clone):
    manifest = lfs_manifest(clone)
    assert sorted(manifest) == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                "model-00003-of-00003.safetensors", "tokenizer.json"]
    assert {p.name for p in find_lfs_pointers(clone)} == set(manifest)
    assert (clone / "config.json").stat().st_size > 100  # small files arrive with the clone
    assert sum(p.size for p in manifest.values()) > 2_000_000
    with pytest.raises(CourseError, match="Git LFS pointers"):
        helpers.load_model(clone, verbose=False)  # caught before any obscure safetensors error


def test_selective_then_full_pull_then_load(clone):
    first = pull(clone, include=["tokenizer.json"], progress=False)
    assert [s.path for s in first] == ["tokenizer.json"] and first[0].state == "ok"
    assert [s.state for s in verify(clone)] == ["pointer", "pointer", "pointer", "ok"]
    assert all(s.state == "ok" for s in pull(clone, progress=False))
    model = helpers.load_model(clone, verbose=False)
    original = helpers.load_model(helpers.TINY_MODEL_DIR, verbose=False)
    ids = torch.arange(3, 20)[None]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)


def test_corruption_is_named_and_repaired(clone):
    pull(clone, progress=False)
    shard = clone / "model-00002-of-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = [s for s in verify(clone) if s.state != "ok"]
    assert len(bad) == 1 and bad[0].path == shard.name and bad[0].state == "checksum mismatch"
    assert "expected sha256" in bad[0].describe() and bad[0].actual_sha256 in bad[0].describe()
    repaired = pull(clone, progress=False)
    assert all(s.state == "ok" for s in repaired)


def test_disk_guard_refuses_before_downloading(clone, monkeypatch):
    monkeypatch.setenv("GROK2_COURSE_DISK_LIMIT", "100000")  # 0.1 MB "free"
    with pytest.raises(CourseError, match="Not enough disk space") as error:
        pull(clone, progress=False)
    assert "MB are free at" in str(error.value)
    assert [s.state for s in verify(clone)] == ["pointer"] * 3 + ["pointer"]


def test_killed_pull_resumes_and_finishes_verified(clone):
    """A pull killed (SIGKILL) after its first file resumes: completed files are kept, the rest are fetched."""
    script = textwrap.dedent(f"""
        import os, signal
        from helpers.download import pull
        pull({str(clone)!r}, progress=False, on_file_done=lambda state: os.kill(os.getpid(), signal.SIGKILL))
    """)
    killed = subprocess.run([sys.executable, "-c", script], timeout=120)
    assert killed.returncode == -9
    states = {s.path: s.state for s in verify(clone)}
    assert sorted(states.values()).count("ok") == 1
    fetched = []
    final = pull(clone, progress=False, on_file_done=lambda state: fetched.append(state.path))
    assert len(fetched) == 3 and all(s.state == "ok" for s in final)
    assert not [p for p, s in states.items() if s == "ok" and p in fetched], "the completed file was not fetched again"


def test_pinned_and_unknown_revisions(practice_url, tmp_path):
    first = subprocess.run(["git", "rev-list", "--max-parents=0", "main"], cwd=practice_url.removeprefix("file://"),
                           capture_output=True, text=True, check=True).stdout.strip()
    pinned = clone_without_weights(practice_url, tmp_path / "pinned", revision=first)
    assert "practice repository" not in (pinned / "README.md").read_text()
    with pytest.raises(CourseError, match="Unknown revision"):
        clone_without_weights(practice_url, tmp_path / "bad", revision="0123456789abcdef0123456789abcdef01234567")


def test_missing_git_lfs_is_explained(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\n[ \"$1\" = lfs ] && { echo \"git: 'lfs' is not a git command.\" >&2; exit 1; }\nexit 0\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    with pytest.raises(CourseError, match="git-lfs is not installed") as error:
        require_git_lfs()
    assert "brew install git-lfs" in str(error.value) and "Colab" in str(error.value)


def test_download_time_arithmetic():
    size = 500 * 10**9
    assert round(download_seconds(size, 100e6) / 3600, 1) == 11.1
    assert round(download_seconds(size, 1e9) / 60, 1) == 66.7
    assert round(download_seconds(size, 10e9) / 60, 1) == 6.7


def test_download_module_needs_no_torch():
    script = (
        "import sys, importlib.util; sys.modules['torch'] = None\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'torch' else real(name, *a)\n"
        "import helpers.download, helpers.local_hub; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=os.environ)
    assert result.stdout.strip() == "ok", result.stderr
