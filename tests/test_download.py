"""Lesson 01's machinery against a real Git LFS repository served over file:// - offline, never the network.

Every subprocess has a timeout; the interrupted download is a real `git lfs pull` killed with SIGKILL mid-transfer
(the practice link throttles it so that there is a "mid").
"""

from __future__ import annotations

import json
import shutil
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import helpers
from helpers import download
from helpers.download import pulling
from helpers.download.processes import STOP_GRACE_S
from helpers.download import (
    LFSPointer,
    classify_failure,
    clone_without_weights,
    download_seconds,
    find_lfs_pointers,
    git_dir,
    lfs_manifest,
    local_progress,
    object_path,
    pull,
    read_pointer,
    require_git_lfs,
    select,
    tensor_parallel_layout,
    verify,
)
from helpers.errors import CourseError
from helpers.units import format_bytes
from helpers.local_hub import (build_practice_repo, interrupt_pull, link_log, lfs_store, read_safetensors_header,
                               simulate_link)

POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"
)
SHARDS = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"]


@pytest.fixture(scope="module")
def practice_url(tmp_path_factory):
    return build_practice_repo(helpers.TINY_MODEL_DIR, tmp_path_factory.mktemp("hub"))


@pytest.fixture
def clone(practice_url, tmp_path):
    return clone_without_weights(practice_url, tmp_path / "clone")


def _tensor_bytes(path):
    header, start = read_safetensors_header(path)
    data = path.read_bytes()
    return {name: (entry["dtype"], entry["shape"], data[start + entry["data_offsets"][0] : start + entry["data_offsets"][1]])
            for name, entry in header.items() if name != "__metadata__"}


# ------------------------------------------------------------------------------------------------ pointers


def test_pointer_parsing(tmp_path):
    pointer = LFSPointer.parse(POINTER)
    assert pointer.size == 12345 and pointer.oid.startswith("4d7a2146") and pointer.text() == POINTER
    assert LFSPointer.parse(POINTER.encode()) == pointer
    assert LFSPointer.parse(b"\x08\x00\x00\x00{}") is None and LFSPointer.parse("version 1\nsize 3\n") is None
    assert LFSPointer.parse(POINTER.replace("sha256:4d7a", "md5:4d7a")) is None
    (tmp_path / "model.safetensors").write_text(POINTER)
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.json").write_text(POINTER)  # git's own files are not the model's
    assert read_pointer(tmp_path / "model.safetensors") == pointer and read_pointer(tmp_path / "real.json") is None
    assert find_lfs_pointers(tmp_path) == [tmp_path / "model.safetensors"]


def test_select_reads_patterns_like_git_lfs():
    paths = ["config.json", "tokenizer.json", "sub/tokenizer.model", *SHARDS]
    assert select(paths, include=["tokenizer*"]) == ["sub/tokenizer.model", "tokenizer.json"]
    assert select(paths, include=["*.safetensors"], exclude=["*-00003-*"]) == SHARDS[:2]
    assert select(paths) == sorted(paths)


# ------------------------------------------------------------------------------------------- the practice hub


def test_practice_repo_is_a_real_lfs_repository(practice_url, tmp_path):
    bare = practice_url.removeprefix("file://")
    tree = subprocess.run(["git", "ls-tree", "-r", "--name-only", "HEAD"], cwd=bare, capture_output=True, text=True,
                          check=True, timeout=60).stdout.split()
    assert {".gitattributes", "config.json", "LICENSE", "README.md", "model.safetensors.index.json", *SHARDS} <= set(tree)
    clone = clone_without_weights(practice_url, tmp_path / "c")
    manifest = lfs_manifest(clone)
    for pointer in manifest.values():  # the remote really holds every LFS object
        assert object_path(lfs_store(practice_url).parent.parent, pointer.oid).stat().st_size == pointer.size
    pull(clone, progress=False)
    # The shards hold exactly the original tensors, bytes unchanged, and the index names them all.
    original = _tensor_bytes(helpers.TINY_MODEL_DIR / "model.safetensors")
    sharded = {}
    for shard in SHARDS:
        sharded.update(_tensor_bytes(clone / shard))
    assert sharded == original
    index = json.loads((clone / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(original) and set(index["weight_map"].values()) == set(SHARDS)


def test_practice_repo_from_any_model_folder(tmp_path):
    """Any model folder: here a random bf16 Grok 2 saved in several shards with an index, no README or tokenizer."""
    config = helpers.grok2.Grok2Config.from_pretrained(helpers.TINY_MODEL_DIR)
    torch.manual_seed(0)
    source = tmp_path / "random-grok2"
    helpers.grok2.Grok2ForCausalLM(config).to(torch.bfloat16).save_pretrained(source, max_shard_size="300KB")
    assert (source / "model.safetensors.index.json").exists()
    url = build_practice_repo(source, tmp_path / "hub", shards=2)
    clone = clone_without_weights(url, tmp_path / "clone")
    assert pull(clone, progress=False).ok
    original, copied = {}, {}
    for shard in source.glob("*.safetensors"):
        original.update(_tensor_bytes(shard))
    for shard in clone.glob("*.safetensors"):
        copied.update(_tensor_bytes(shard))
    assert copied == original and {v[0] for v in copied.values()} == {"BF16"}
    model = helpers.load_model(clone, verbose=False)
    reference = helpers.load_model(source, verbose=False)
    ids = torch.arange(3, 12)[None]
    with torch.no_grad():  # bf16 weights identical (above); logits to rounding at another memory alignment
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=1e-2)


def test_practice_repo_never_deletes_a_folder_it_did_not_build(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(CourseError, match="not deleting"):
        build_practice_repo(helpers.TINY_MODEL_DIR, foreign)
    assert (foreign / "precious.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------------ clone, pull, load


def test_clone_skips_weights_and_sizes_come_from_pointers(clone):
    manifest = lfs_manifest(clone)
    assert sorted(manifest) == [*SHARDS, "tokenizer.json"]
    assert {p.name for p in find_lfs_pointers(clone)} == set(manifest)
    assert (clone / "config.json").stat().st_size > 100  # small files arrive with the clone
    assert sum(p.size for p in manifest.values()) > 2_000_000
    assert not (git_dir(clone) / "lfs" / "objects").exists() or not any((git_dir(clone) / "lfs" / "objects").rglob("*.*"))
    with pytest.raises(CourseError, match="Git LFS pointers"):
        helpers.load_model(clone, verbose=False)  # caught before any obscure safetensors error


def test_selective_then_full_pull_then_load(clone):
    first = pull(clone, include=["tokenizer*", "config.json"], progress=False)
    assert [s.path for s in first.files] == ["tokenizer.json"] and first.ok and first.attempts == 1
    assert [s.state for s in verify(clone)] == ["pointer", "pointer", "pointer", "ok"]
    one = pull(clone, include=["*-00001-of-*"], progress=False)
    assert [s.path for s in one.files] == SHARDS[:1] and one.ok
    everything = pull(clone, progress=False)
    assert everything.ok and everything.kept_bytes == first.total_bytes + one.total_bytes
    assert everything.downloaded_bytes == everything.total_bytes - everything.kept_bytes
    again = pull(clone, progress=False)  # nothing left to do: no git lfs run, nothing downloaded
    assert again.ok and again.attempts == 0 and again.downloaded_bytes == 0
    assert _git_status(clone) == ""  # the clone is clean: git sees the files as the committed LFS files
    model = helpers.load_model(clone, verbose=False)
    original = helpers.load_model(helpers.TINY_MODEL_DIR, verbose=False)
    pulled, shipped = model.state_dict(), original.state_dict()
    assert pulled.keys() == shipped.keys()
    assert all(torch.equal(pulled[name], shipped[name]) for name in shipped)  # bit for bit the shipped weights
    ids = torch.arange(3, 20)[None]
    with torch.no_grad():
        # Same weights, but mmapped from other files at other memory alignments: CPU matmul kernels may then sum in
        # another order, so logits agree to float32 rounding rather than bit for bit.
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=0, atol=1e-5)


def test_plain_git_files_need_no_pull_and_unknown_patterns_are_named(clone):
    report = pull(clone, include=["config.json"], progress=False)  # not in LFS: it came with the clone
    assert report.ok and report.files == [] and "plain git files" in report.summary()
    with pytest.raises(CourseError, match="No file in"):
        pull(clone, include=["*.gguf"], progress=False)


def test_corruption_is_named_and_repaired(clone, practice_url):
    pull(clone, progress=False)
    manifest = lfs_manifest(clone)
    shard = clone / SHARDS[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    bad = [s for s in verify(clone) if not s.ok]
    assert len(bad) == 1 and bad[0].path == SHARDS[1] and bad[0].state == "checksum mismatch"
    assert manifest[SHARDS[1]].oid in bad[0].describe() and bad[0].actual_sha256 in bad[0].describe()
    repaired = pull(clone, progress=False)
    assert repaired.ok and repaired.downloaded_bytes == 0  # checked out again from .git/lfs/objects

    # Now the local LFS store's copy is bad too (replaced, not edited: over file:// it is a hard link to the remote's).
    stored = object_path(git_dir(clone), manifest[SHARDS[2]].oid)
    broken = bytearray(stored.read_bytes())
    broken[100] ^= 0xFF
    replacement = stored.with_name("broken")
    replacement.write_bytes(bytes(broken))
    os.replace(replacement, stored)
    shard = clone / SHARDS[2]
    shard.write_bytes(bytes(broken))
    assert [s.path for s in verify(clone) if not s.ok] == [SHARDS[2]]
    fixed = pull(clone, progress=False)
    assert fixed.ok and fixed.downloaded_bytes == manifest[SHARDS[2]].size  # dropped and fetched from the remote


def test_source_that_stays_corrupt_is_named(clone, tmp_path):
    """If the remote itself serves bad bytes, the pull stops and names the file, expected vs actual sha256."""
    pull(clone, include=["tokenizer.json"], progress=False)
    pointer = lfs_manifest(clone)["tokenizer.json"]
    (clone / "tokenizer.json").write_text("{}")  # a damaged file; the local store copy is damaged too
    stored = object_path(git_dir(clone), pointer.oid)
    stored.unlink()
    stored.write_bytes(b"x" * pointer.size)
    remote = object_path(lfs_store(download._git(["remote", "get-url", "origin"], cwd=clone).stdout.strip()).parent.parent,
                         pointer.oid)
    saved = remote.read_bytes()
    remote.unlink()
    remote.write_bytes(b"y" * pointer.size)  # git-lfs itself rejects an object whose sha256 is wrong
    try:
        with pytest.raises(CourseError, match="tokenizer.json") as error:
            pull(clone, include=["tokenizer.json"], progress=False, retries=0)
        assert "checksum mismatch" in str(error.value) and f"expected {pointer.oid}" in str(error.value)
    finally:
        remote.unlink()
        remote.write_bytes(saved)


def test_disk_limit_accepts_units_and_names_the_form(tmp_path, monkeypatch):
    monkeypatch.setenv("GROK2_COURSE_DISK_LIMIT", "10GB")
    assert download.free_disk_bytes(tmp_path) == min(10 * 10**9, shutil.disk_usage(tmp_path).free)
    monkeypatch.setenv("GROK2_COURSE_DISK_LIMIT", "ten gigabytes")
    with pytest.raises(CourseError, match="GROK2_COURSE_DISK_LIMIT.*not a size") as error:
        download.free_disk_bytes(tmp_path)
    assert "10GB" in error.value.fix


def test_disk_guard_refuses_before_downloading(clone, monkeypatch):
    monkeypatch.setenv("GROK2_COURSE_DISK_LIMIT", "100000")  # 0.1 MB "free": a full disk, rehearsed without filling it
    with pytest.raises(CourseError, match="Not enough disk space") as error:
        pull(clone, progress=False)
    message = str(error.value)
    assert "100.0 kB are free at" in message and str(clone) in message and "Nothing was downloaded" in message
    total = sum(p.size for p in lfs_manifest(clone).values())
    assert format_bytes(2 * total, binary=False) in message  # git-lfs keeps two copies: the store and the file
    assert set(local_progress(clone).values()) == {0} and [s.state for s in verify(clone)] == ["pointer"] * 4


def test_killed_git_lfs_pull_resumes_and_finishes_verified(clone):
    """A real `git lfs pull`, killed with SIGKILL mid-way (one file complete, another partly downloaded), resumes:
    the complete file is not fetched again and the partial one continues from where it stopped."""
    manifest = lfs_manifest(clone)
    simulate_link(clone, bytes_per_second=1_000_000)
    code, have = interrupt_pull(clone)  # SIGKILL to git, git-lfs and the transfer agent, like a lost SSH session
    assert code == -signal.SIGKILL and have == local_progress(clone, manifest=manifest)
    assert _processes_in(clone) == []
    complete = {manifest[p].oid for p, n in have.items() if n == manifest[p].size}
    partial = {manifest[p].oid: n for p, n in have.items() if 0 < n < manifest[p].size}
    assert complete and partial and not all(s.ok for s in verify(clone))
    transfers_before = len(link_log(clone))
    simulate_link(clone, bytes_per_second=50_000_000)  # still through the logged link, no longer slowed down

    report = pull(clone, progress=False)

    assert report.ok and all(s.ok for s in verify(clone))
    resumed = link_log(clone)[transfers_before:]
    assert not complete & {t["oid"] for t in resumed}, "a complete object was downloaded again"
    for transfer in resumed:
        assert transfer["from_byte"] == partial.get(transfer["oid"], 0)  # partial ones continue, the rest start at 0
    assert report.downloaded_bytes == report.total_bytes - report.kept_bytes
    assert report.kept_bytes == sum(have.values())
    assert _git_status(clone) == ""  # and git agrees the files are the committed ones


def _git_status(repo):
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=60).stdout


def test_aftermath_of_a_kill_during_checkout_is_cleaned_up(clone, practice_url):
    """Killed while checking files out, git-lfs leaves .git/index.lock (every git command then fails) and files whose
    index entries still record the pointer. The next pull removes the stale lock and leaves git status clean."""
    manifest = lfs_manifest(clone)
    shard = SHARDS[0]
    source = object_path(lfs_store(practice_url).parent.parent, manifest[shard].oid)
    (clone / shard).write_bytes(source.read_bytes())  # checked out, index not refreshed
    (git_dir(clone) / "index.lock").write_text("")
    assert subprocess.run(["git", "checkout", "HEAD", "--", "README.md"], cwd=clone, capture_output=True,
                          timeout=60).returncode != 0  # what the learner would hit: "index.lock: File exists"
    report = pull(clone, progress=False)
    assert report.ok and not (git_dir(clone) / "index.lock").exists() and _git_status(clone) == ""
    assert report.kept_bytes == manifest[shard].size


@pytest.mark.skipif(not os.path.exists("/proc/self/cwd"), reason="finding running git processes needs Linux's /proc")
def test_a_lock_held_by_a_running_git_is_respected(clone):
    holder = subprocess.Popen(["git", "-c", "alias.hold=!sleep 30", "hold"], cwd=clone, start_new_session=True)
    try:
        time.sleep(0.5)
        (git_dir(clone) / "index.lock").write_text("")
        with pytest.raises(CourseError, match="locked") as error:
            pull(clone, progress=False)
        assert str(holder.pid) in str(error.value) and (git_dir(clone) / "index.lock").exists()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)


def test_dropped_connection_is_retried_and_resumes(clone):
    simulate_link(clone, drop_after_bytes=300_000, drops=1)
    report = pull(clone, include=["*-00002-*"], progress=False, backoff_s=0.05)
    assert report.ok and report.attempts == 2 and "connection reset by peer" in report.retried_because[0]
    transfers = link_log(clone)
    assert [t["from_byte"] for t in transfers] == [0, 300_000] and transfers[0]["dropped"]


def test_network_failure_that_persists_is_explained(clone):
    simulate_link(clone, drop_after_bytes=200_000, drops=10)
    with pytest.raises(CourseError, match="network failure") as error:
        pull(clone, include=["*-00001-*"], progress=False, retries=1, backoff_s=0.05)
    message = str(error.value)
    assert "run the same command again" in message and "kept" in message
    assert 0 < local_progress(clone)[SHARDS[0]] < lfs_manifest(clone)[SHARDS[0]].size  # the partial file is still there
    simulate_link(clone)  # the connection is back
    assert pull(clone, include=["*-00001-*"], progress=False).ok


def test_pinned_and_unknown_revisions(practice_url, tmp_path):
    first = subprocess.run(["git", "rev-list", "--max-parents=0", "main"], cwd=practice_url.removeprefix("file://"),
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    pinned = clone_without_weights(practice_url, tmp_path / "pinned", revision=first)
    assert download.current_revision(pinned) == first
    assert "practice repository" not in (pinned / "README.md").read_text()
    with pytest.raises(CourseError, match="Unknown revision"):
        clone_without_weights(practice_url, tmp_path / "bad", revision="0123456789abcdef0123456789abcdef01234567")
    with pytest.raises(CourseError, match="not found"):
        clone_without_weights(practice_url + "-typo", tmp_path / "typo")


# ------------------------------------------------------------------------------------------------- errors


def test_missing_git_lfs_is_explained(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\n[ \"$1\" = lfs ] && { echo \"git: 'lfs' is not a git command.\" >&2; exit 1; }\nexit 0\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    with pytest.raises(CourseError, match="git-lfs is not installed") as error:
        require_git_lfs()
    message = str(error.value)
    assert "apt-get install git-lfs" in message and "brew install git-lfs" in message and "Colab" in message
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab")
    with pytest.raises(CourseError) as error:
        require_git_lfs()
    assert error.value.fix.startswith("install git-lfs - Colab")


def test_failures_are_classified():
    assert classify_failure("remote: Access to model xai-org/grok-2 is restricted. HTTP 403") == "auth"
    assert classify_failure("fatal: could not read Username for 'https://huggingface.co'") == "auth"
    assert classify_failure("fatal: unable to access '...': Could not resolve host: huggingface.co") == "network"
    assert classify_failure('error transferring "ab4031cd": [2] connection reset by peer') == "network"  # not a 403
    assert classify_failure("fatal: repository 'https://huggingface.co/x/y/' not found") == "missing"
    error = download.explain_failure("Could not resolve host", "git clone", kept="3 files are kept")
    assert "network failure" in error.problem and "3 files are kept" in error.fix


def test_hub_download_offline_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(CourseError) as error:
        download.hub_download("xai-org/grok-2", tmp_path / "grok-2", allow_patterns=["config.json"])
    assert "HF_HUB_OFFLINE" in error.value.fix or "connect" in error.value.fix


# --------------------------------------------------------------------------------------------- figures


def test_download_time_arithmetic():
    size = 500 * 10**9
    assert round(download_seconds(size, 100e6) / 3600, 1) == 11.1
    assert round(download_seconds(size, 1e9) / 60, 1) == 66.7
    assert round(download_seconds(size, 10e9) / 60, 1) == 6.7


def test_tensor_parallel_layout_of_the_released_checkpoint():
    # The released Grok 2 file names (facts 2.1): 15 TP-common files, 3 expert files for each of 8 ranks.
    sizes = {f"pytorch_model-{i:05d}-TP-common.safetensors": 1000 + i for i in (*range(0, 6), *range(9, 18))}
    for i in (6, 7, 8):
        sizes.update({f"pytorch_model-{i:05d}-TP-{r:03d}.safetensors": 17 for r in range(8)})
    layout = tensor_parallel_layout(sizes)
    assert layout["common_files"] == 15 and layout["ranks"] == 8
    assert set(layout["files_per_rank"].values()) == {3} and set(layout["bytes_per_rank"].values()) == {51}
    assert layout["total_bytes"] == sum(sizes.values())


def test_cli_verify(clone, capsys):
    assert download.main(["verify", str(clone)]) == 1 and "still an LFS pointer" in capsys.readouterr().out
    assert download.main(["pull", str(clone), "--include", "tokenizer*"]) == 0
    assert "1/1 files verified" in capsys.readouterr().out


# Python as on a machine without torch: `helpers` then imports none of it (and starts in a fraction of a second).
WITHOUT_TORCH = (
    "import sys, importlib.util, runpy; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
    "real = importlib.util.find_spec\n"
    "importlib.util.find_spec = lambda name, *a: None if name in ('torch', 'transformers') else real(name, *a)\n"
)
# `python -m helpers.download ARGS...`, exactly, on such a machine.
CLI_WITHOUT_TORCH = [sys.executable, "-c", WITHOUT_TORCH + "runpy.run_module('helpers.download', run_name='__main__')"]


def test_download_module_needs_no_torch():
    script = WITHOUT_TORCH + "import helpers.download, helpers.local_hub, helpers.network; print('ok')"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=os.environ)
    assert result.stdout.strip() == "ok", result.stderr


def test_cli_help_lists_the_commands():
    result = subprocess.run([*CLI_WITHOUT_TORCH, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "pull" in result.stdout and "verify" in result.stdout, result.stderr


# ------------------------------------------------------------------------------ kills, locks and leftovers (#18)


def _processes_in(folder) -> list[str]:
    """'pid name' of every process whose working directory is `folder` or below (git, git-lfs, transfer agents)."""
    folder = os.path.realpath(folder)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            with open(f"/proc/{entry}/comm") as comm:
                name = comm.read().strip()
        except OSError:
            continue
        if cwd == folder or cwd.startswith(folder + os.sep):
            found.append(f"{entry} {name}")
    return found


def _wait_until_gone(folder, seconds=20.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := _processes_in(folder)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.skipif(not os.path.exists("/proc/self/cwd"), reason="finding processes by folder needs Linux's /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_cli_pull_leaves_no_git_running_and_a_rerun_finishes(clone, how):
    """`python -m helpers.download pull`, killed mid-download: SIGTERM runs the clean-up path; SIGKILL runs nothing in
    the killed process, and the watchdog ends git, git-lfs and the transfer agent. The re-run is not refused."""
    manifest = lfs_manifest(clone)
    simulate_link(clone, bytes_per_second=100_000)  # ~2.7 MB: about 27 s, so the kill lands mid-transfer
    cli = subprocess.Popen([*CLI_WITHOUT_TORCH, "pull", str(clone)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        deadline = time.monotonic() + 60
        while sum(local_progress(clone, manifest=manifest).values()) == 0:
            assert cli.poll() is None and time.monotonic() < deadline, cli.stderr.read() if cli.poll() else "no start"
            time.sleep(0.05)
        assert any(" git" in p for p in _processes_in(clone)), "git lfs pull is not running"
    finally:
        cli.send_signal(how)
        _, stderr = cli.communicate(timeout=60)
    assert cli.returncode == (130 if how == signal.SIGTERM else -signal.SIGKILL)
    if how == signal.SIGTERM:
        assert "kept" in stderr and "Stopped (stopped by SIGTERM)" in stderr
    # Gone within the watchdog's grace, long before the download could have finished on its own.
    assert _wait_until_gone(clone, STOP_GRACE_S + 3) == [], "processes left downloading after the pull was killed"
    simulate_link(clone)
    report = pull(clone, progress=False)  # not refused: no index.lock of a running git, no pull lock held
    assert report.ok and report.downloaded_bytes == report.total_bytes - report.kept_bytes
    assert 0 < report.kept_bytes < report.total_bytes  # what arrived before the kill was kept


def test_commands_are_ended_on_every_way_out(tmp_path):
    """A timeout or an exception in the caller ends the whole group, grandchildren included."""
    from helpers.download import processes

    script = tmp_path / "spawn.sh"
    script.write_text("sleep 300 &\nsleep 300\n")  # a child and a grandchild
    with pytest.raises(subprocess.TimeoutExpired):
        processes.run(["sh", str(script)], cwd=tmp_path, timeout=0.5)
    assert _wait_until_gone(tmp_path, 5) == []
    process = processes.start(["sh", str(script)], cwd=tmp_path, watched=True)
    try:
        time.sleep(0.3)
        assert len(_processes_in(tmp_path)) >= 3  # the watchdog, sh, two sleeps
        raise RuntimeError("the caller fails")
    except RuntimeError:
        processes.stop(process, grace_s=2)
    assert _wait_until_gone(tmp_path, 5) == []


def _hold_in_another_process(call: str) -> subprocess.Popen:
    """A Python process (no torch) that runs `call` (taking a lock), says "held", and sleeps until killed."""
    holder = subprocess.Popen([sys.executable, "-c", WITHOUT_TORCH + "from helpers.download import locks\n"
                               f"{call}\nprint('held', flush=True)\nimport time; time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_lesson_01_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path, capsys):
    from helpers.download import claim_folder, locks

    folder = tmp_path / "lesson01"
    holder = _hold_in_another_process(f"locks.claim_folder({str(folder)!r}, 'lesson 01')\n"
                                      f"open({str(folder / 'clone.txt')!r}, 'w').write('in use')")
    try:
        with pytest.raises(CourseError, match="another lesson 01 is running in this workspace") as error:
            claim_folder(folder, "lesson 01")
        assert f"pid {holder.pid}" in str(error.value) and "GROK2_COURSE_WORKSPACE" in error.value.fix
        assert (folder / "clone.txt").read_text() == "in use"  # the refused copy deleted nothing
    finally:
        holder.kill()
        holder.wait(timeout=30)
    capsys.readouterr()
    try:
        assert claim_folder(folder, "lesson 01") == folder and not any(folder.iterdir())
        said = capsys.readouterr().out
        assert "Took over the lock of lesson 01" in said and f"pid {holder.pid}" in said and "no longer running" in said
        assert claim_folder(folder, "lesson 01") == folder  # the same kernel running the lesson again: fine
        assert capsys.readouterr().out == ""
    finally:
        locks.release(tmp_path / ".lesson01.lock")
        locks.release(tmp_path / ".lesson01.lock")


def test_a_lock_tested_by_holder_of_at_that_instant_is_still_taken(tmp_path):
    """`holder_of` (lesson 01 asking whether a pull runs) tests a free lock by taking it for an instant; a pull that
    starts then waits that instant out instead of being refused as running beside "pid unknown"."""
    import fcntl
    import threading

    from helpers.download import locks

    lock = tmp_path / "course-pull.lock"
    lock.touch()
    taken, probe = threading.Event(), open(lock)

    def hold_briefly():  # what holder_of does, stretched from microseconds to 50 ms
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        taken.set()
        time.sleep(0.05)
        fcntl.flock(probe, fcntl.LOCK_UN)

    worker = threading.Thread(target=hold_briefly)
    worker.start()
    try:
        assert taken.wait(5)
        assert locks.acquire(lock, "a pull", "another pull is running", "wait") is False  # not refused
        assert locks.holder_of(lock)["pid"] == os.getpid()
    finally:
        worker.join()
        probe.close()
        locks.release(lock)
    fcntl.flock(probe := open(lock), fcntl.LOCK_EX | fcntl.LOCK_NB)  # held for good: refused after the retries
    try:
        started = time.monotonic()
        with pytest.raises(CourseError, match="another pull is running: pid unknown"):
            locks.acquire(lock, "a pull", "another pull is running", "wait")
        assert locks.CONTENDED_RETRY_S <= time.monotonic() - started < 2
    finally:
        probe.close()


def test_one_helper_lists_a_process_groups_live_members(tmp_path):
    """helpers.download and helpers.serving ask "what of this process group still runs?" through one function (no
    torch, no psutil on Linux); a member that has exited (a zombie until reaped) is not listed."""
    from helpers.download import processes
    from helpers.serving import process as serving_process

    assert serving_process.group_members is processes.group_members
    assert not hasattr(serving_process, "_group_members")
    group = processes.start(["sh", "-c", "sleep 30 & exit 0"], cwd=tmp_path, watched=False)  # leaves its sleep behind
    try:
        deadline = time.monotonic() + 10
        while len(members := processes.group_members(group.pid) or []) != 1 and time.monotonic() < deadline:
            time.sleep(0.02)  # until sh has exited (a zombie: not counted) and its sleep runs on
        if os.path.exists("/proc/self/stat"):
            assert members != [group.pid] and len(members) == 1  # the sleep, not sh
    finally:
        processes.stop(group, grace_s=1)
    assert processes.group_members(group.pid) in ([], None)


def test_a_second_pull_of_the_same_clone_is_refused_with_the_first_ones_pid(clone):
    lock = git_dir(clone) / pulling.LOCK_FILE
    holder = _hold_in_another_process(f"locks.acquire({str(lock)!r}, 'a pull', 'busy', 'wait')")
    try:
        with pytest.raises(CourseError, match="another pull is running in") as error:
            pull(clone, progress=False)
        assert f"pid {holder.pid}" in str(error.value)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert pull(clone, include=["tokenizer*"], progress=False).ok


@pytest.mark.skipif(not os.path.exists("/proc/self/cwd"), reason="finding processes by folder needs Linux's /proc")
def test_a_short_git_command_outlives_no_killed_caller(tmp_path):
    """Every git command on a clone runs watched, not only clone and pull: here `git checkout` in `restore_pointer`,
    held up by a post-checkout hook (as git-lfs's clean filter holds up `git add` for minutes on a big clone), while
    the Python process that called it is killed with SIGKILL. The watchdog ends git and the hook at once."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True, timeout=60)
    (repo / "a.txt").write_text("committed")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost"}
    hooks = repo / ".git" / "hooks"  # named in the clone's own config: a global core.hooksPath must not hide the hook
    for command in (["config", "core.hooksPath", str(hooks)], ["add", "a.txt"], ["commit", "--quiet", "-m", "a"]):
        subprocess.run(["git", *command], cwd=repo, env=env, check=True, timeout=60, capture_output=True)
    hook = hooks / "post-checkout"
    hooks.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\necho started > .git/hook-started\nexec sleep 60\n")
    hook.chmod(0o755)
    caller = subprocess.Popen([sys.executable, "-c", WITHOUT_TORCH + "from helpers.download import restore_pointer\n"
                               f"restore_pointer({str(repo)!r}, 'a.txt')"])
    try:
        deadline = time.monotonic() + 30
        while not (repo / ".git" / "hook-started").exists():
            assert caller.poll() is None and time.monotonic() < deadline, "git checkout never reached its hook"
            time.sleep(0.02)
        assert any(p.endswith(" git") for p in _processes_in(repo))
    finally:
        caller.kill()
        caller.wait(timeout=30)
    assert _wait_until_gone(repo, STOP_GRACE_S + 3) == [], "git kept running after its caller was killed"


def test_lesson_01_is_not_rebuilt_under_a_running_pull(tmp_path, capsys):
    """claim_folder deletes the lesson's folder, clone included: not while a pull (from a terminal) or git works there."""
    import fcntl

    from helpers.download import claim_folder, locks

    folder = tmp_path / "lesson01"
    lock_file = folder / "clone" / ".git" / pulling.LOCK_FILE
    lock_file.parent.mkdir(parents=True)
    (folder / "clone" / "shard.safetensors").write_bytes(b"downloaded")
    with open(lock_file, "a+") as held:  # what `python -m helpers.download pull` holds while it runs
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps({"pid": 4242, "host": locks.socket.gethostname(), "what": "a pull in lesson01/clone",
                               "since": "today"}))
        held.flush()
        with pytest.raises(CourseError, match="a pull in lesson01/clone is running") as error:
            claim_folder(folder, "lesson 01")
    assert "pid 4242" in str(error.value) and "kill 4242" in error.value.fix and "move the clone out" in error.value.fix
    assert (folder / "clone" / "shard.safetensors").read_bytes() == b"downloaded"  # nothing deleted
    assert locks.holder_of(lock_file) is None  # that pull ended: its lock is free, though its file still names it

    if os.path.exists("/proc/self/cwd"):  # git at work in the clone, without the course's lock
        git = subprocess.Popen(["git", "-c", "alias.hold=!sleep 30", "hold"], cwd=folder / "clone",
                               start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while not download.git_processes_in(folder) and time.monotonic() < deadline:
                time.sleep(0.02)
            with pytest.raises(CourseError, match="git is running there") as error:
                claim_folder(folder, "lesson 01")
            assert str(git.pid) in str(error.value) and (folder / "clone" / "shard.safetensors").exists()
        finally:
            os.killpg(git.pid, signal.SIGKILL)
            git.wait(timeout=30)
    try:
        assert claim_folder(folder, "lesson 01") == folder and not any(folder.iterdir())  # nothing at work: rebuilt
    finally:
        locks.release(tmp_path / ".lesson01.lock")


# ------------------------------------------------------------------------------ the verified cache (#18 item 14)


def test_a_bit_flip_that_keeps_the_mtime_is_caught_by_pull(clone):
    assert pull(clone, progress=False).ok
    again = pull(clone, progress=False)
    assert all(f.from_cache for f in again.files) and "hashed before and unchanged since" in again.summary()
    shard = clone / SHARDS[1]
    before = shard.stat()
    with open(shard, "r+b") as handle:  # one bit, in place: same size, same inode
        handle.seek(before.st_size // 2)
        byte = handle.read(1)[0]
        handle.seek(before.st_size // 2)
        handle.write(bytes([byte ^ 0x01]))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the modification time put back
    after = shard.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert [s.path for s in verify(clone) if not s.ok] == [SHARDS[1]]
    report = pull(clone, progress=False)
    assert report.ok and report.downloaded_bytes == 0  # caught, and checked out again from .git/lfs/objects
    assert not {f.path: f for f in report.files}[SHARDS[1]].from_cache
    assert all(s.ok for s in verify(clone))
    rehashed = pull(clone, progress=False, rehash=True)
    assert rehashed.ok and not any(f.from_cache for f in rehashed.files) and "every byte hashed now" in rehashed.summary()


def test_the_cache_never_records_a_file_that_changed_while_it_was_hashed(tmp_path, monkeypatch):
    from helpers.download import integrity

    data = b"weights" * 1000
    (tmp_path / "w.bin").write_bytes(data)
    pointer = LFSPointer(oid=integrity.sha256_of(tmp_path / "w.bin"), size=len(data))
    real = integrity.sha256_of

    def hash_then_touch(path, *args):
        digest = real(path, *args)
        os.utime(path, ns=(1, 1))  # the file moved under the hash
        return digest

    monkeypatch.setattr(integrity, "sha256_of", hash_then_touch)
    cache = download.VerifiedCache(tmp_path / "cache.json")
    assert download.file_state(tmp_path, "w.bin", pointer, cache=cache).ok and cache.entries == {}


def test_windows_never_trusts_the_verified_cache(tmp_path, monkeypatch):
    """There st_ctime is the creation time: a rewrite keeps it, so (size, mtime, ctime, inode) cannot vouch for bytes."""
    from helpers.download import integrity

    target = tmp_path / "w.bin"
    target.write_bytes(b"weights" * 100)
    pointer = LFSPointer(oid=integrity.sha256_of(target), size=target.stat().st_size)
    cache = download.VerifiedCache(tmp_path / "cache.json")
    cache.record("w.bin", target, pointer, cache.key(target, pointer))
    assert cache.hit("w.bin", target, pointer)  # here, on POSIX, it vouches
    with monkeypatch.context() as windows:
        windows.setattr(integrity.os, "name", "nt")
        assert not cache.hit("w.bin", target, pointer)
        cache.entries = {}
        cache.record("w.bin", target, pointer, cache.key(target, pointer))
        assert cache.entries == {}  # nor does it record anything there


def test_no_git_installed_is_named_with_the_fix(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "clone"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git anywhere on PATH
    for call in (lambda: download.require_clone(folder), lambda: verify(folder), lambda: pull(folder, progress=False),
                 lambda: lfs_manifest(folder)):
        with pytest.raises(CourseError, match="git is not installed") as error:  # never a raw FileNotFoundError
            call()
        assert "git-lfs" in error.value.fix and "apt-get install git git-lfs" in error.value.fix
    assert download.main(["verify", str(folder)]) == 2 and "git is not installed" in capsys.readouterr().err


# --------------------------------------------------------------------- not a clone, no folder (#18 item 16)


def test_pull_and_verify_name_a_folder_that_is_not_a_clone(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CourseError, match="is not a git clone") as error:
        pull(plain, progress=False)
    assert "clone_without_weights" in error.value.fix
    outer = tmp_path / "outer"
    (outer / "inner").mkdir(parents=True)
    subprocess.run(["git", "init", "--quiet", str(outer)], check=True, timeout=60)
    with pytest.raises(CourseError, match="inside the git repository"):
        verify(outer / "inner")
    missing = tmp_path / "missing"
    manifest = {"a.bin": LFSPointer(oid="0" * 64, size=3)}
    for call in (lambda: verify(missing), lambda: pull(missing, progress=False), lambda: lfs_manifest(missing),
                 lambda: verify(missing, manifest=manifest), lambda: local_progress(missing, manifest=manifest),
                 lambda: download.current_revision(missing)):
        with pytest.raises(CourseError, match="does not exist"):
            call()
    assert download.main(["pull", str(missing)]) == 2 and "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ damaged weights and load_model (#18 item 15)


def test_load_model_verify_catches_a_bit_flip_among_the_tensor_bytes(clone, monkeypatch, capsys):
    assert pull(clone, progress=False).ok
    shard = clone / SHARDS[0]
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0x01  # tensor bytes: the header is intact, so only the sha256 can see it
    shard.write_bytes(bytes(data))
    assert download.safetensors_problem(shard) is None
    for verify_argument in ({}, {"verify": True}):  # by default too: the cache vouches for the others, this one is hashed
        with pytest.raises(CourseError, match="checksum mismatch") as error:
            helpers.load_model(clone, verbose=False, **verify_argument)
        assert SHARDS[0] in str(error.value) and "download.pull" in error.value.fix
    # More unvouched bytes than a load hashes by itself: it loads, and says in one line what it did not check, and how.
    monkeypatch.setattr("helpers.loading.AUTO_VERIFY_MAX_BYTES", 1000)
    capsys.readouterr()
    helpers.load_model(clone, verbose=False)
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and "1 of the 4 LFS files" in said and "NOT checked" in said and "verify=True" in said
    assert pull(clone, progress=False).ok
    helpers.load_model(clone, verbose=False, verify="full")  # repaired: every byte hashed, all match
