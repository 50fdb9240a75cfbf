"""A real Git LFS model repository, built on this machine from a model folder and served over file://.

Lesson 01 practises every download step against it offline - the same git and git-lfs commands as against
https://huggingface.co/xai-org/grok-2, only the URL differs. It holds what a hub model repository holds: config,
tokenizer, generation config, README, LICENSE, several safetensors shards with their index, and a .gitattributes that
sends the large files to LFS. git-lfs serves a file:// remote by itself (its built-in standalone transfer agent copies
or hard-links the objects from the remote's `lfs/objects`), so clones and pulls really fetch LFS objects.

`simulate_link` puts a slow or unreliable "network" between a clone and that remote (a git-lfs custom transfer agent,
see `_link_agent`), so that an interrupted or failing download can be rehearsed for real.

Needs neither torch nor numpy: shards are cut at the byte level from the safetensors format (8-byte header length,
JSON header, raw tensor bytes), whatever the dtype. This file runs as a script for the transfer agent, so it imports
only the standard library at top level.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

GITATTRIBUTES = (
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "*.bin filter=lfs diff=lfs merge=lfs -text\n"
    "*.gguf filter=lfs diff=lfs merge=lfs -text\n"
    "tokenizer.json filter=lfs diff=lfs merge=lfs -text\n"
)
SMALL_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "README.md")
PRACTICE_LICENSE = (
    "The tiny Grok 2 practice model is part of the 'Grok 2.5, hands-on' course and shares its license.\n"
    "The real xai-org/grok-2 is under the xAI Community License Agreement: read it on the model's hub page.\n"
)
MARKER = ".course-practice-hub"  # marks a folder this module built, and may therefore delete
FIXED_DATE = "2025-08-23T12:00:00+00:00"  # fixed commit dates: the same build gives the same commit hashes
LINK_AGENT = "practice-link"
GIT_TIMEOUT_S = 600


def _git(args: list[str], cwd: Path, check: bool = True) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "course", "GIT_AUTHOR_EMAIL": "course@localhost",
           "GIT_COMMITTER_NAME": "course", "GIT_COMMITTER_EMAIL": "course@localhost",
           "GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE}
    from .download.processes import git  # watched, in its own process group (not at top level: see above)

    result = git(args, cwd=cwd, env=env, timeout=GIT_TIMEOUT_S, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


# ------------------------------------------------------------------------------------------ safetensors, byte-level


def read_safetensors_header(path: str | Path) -> tuple[dict, int]:
    """(header, offset of the first tensor byte). The header maps each tensor name to dtype, shape, data_offsets."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return header, 8 + length


def _tensor_sources(model_dir: Path) -> dict[str, tuple[Path, dict, int]]:
    """{tensor name: (file, its header entry, data start)} over a single file or an indexed set of shards."""
    index = model_dir / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    sources = {}
    for name in files:
        header, start = read_safetensors_header(model_dir / name)
        for tensor, entry in header.items():
            if tensor != "__metadata__":
                sources[tensor] = (model_dir / name, entry, start)
    return sources


def split_safetensors(model_dir: str | Path, destination: str | Path, shards: int) -> list[str]:
    """Re-shard a model's safetensors into `shards` files of similar size plus model.safetensors.index.json, named as
    the hub names them (model-00001-of-00003.safetensors ...). Tensor bytes are copied unchanged."""
    model_dir, destination = Path(model_dir), Path(destination)
    sources = _tensor_sources(model_dir)
    names = sorted(sources)
    sizes = {n: sources[n][1]["data_offsets"][1] - sources[n][1]["data_offsets"][0] for n in names}
    total = sum(sizes.values())
    groups: list[list[str]] = [[] for _ in range(shards)]
    running = 0
    for name in names:  # fill shard k until it holds its share of the bytes
        groups[min(shards - 1, running * shards // max(total, 1))].append(name)
        running += sizes[name]
    groups = [g for g in groups if g]
    weight_map, files = {}, []
    for number, group in enumerate(groups, start=1):
        file = f"model-{number:05d}-of-{len(groups):05d}.safetensors"
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name in group:
            entry = sources[name][1]
            header[name] = {"dtype": entry["dtype"], "shape": entry["shape"], "data_offsets": [offset, offset + sizes[name]]}
            offset += sizes[name]
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # keep tensor data 8-byte aligned, as safetensors writers do
        with open(destination / file, "wb") as out:
            out.write(struct.pack("<Q", len(encoded)) + encoded)
            for name in group:
                path, entry, start = sources[name]
                with open(path, "rb") as source:
                    source.seek(start + entry["data_offsets"][0])
                    out.write(source.read(sizes[name]))
        weight_map.update({name: file for name in group})
        files.append(file)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (destination / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return files


# ------------------------------------------------------------------------------------------------- the practice hub


def _reset_folder(root: Path) -> None:
    """Delete `root` only if this module built it (or it is empty); never anything else."""
    if root.exists():
        if not (root / MARKER).exists() and any(root.iterdir()):
            from .errors import CourseError

            raise CourseError(f"{root} exists and was not built by helpers.local_hub: not deleting it.",
                              "pass a new folder (the lesson uses workspace/lesson01/hub)")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("built by helpers.local_hub; deleted and rebuilt on every build\n")


def build_practice_repo(model_dir: str | Path, root: str | Path, shards: int = 3) -> str:
    """Build `root/practice.git` (a bare repository with its LFS objects) from `model_dir`; return its file:// URL.

    Two commits, so that pinning a revision means something: the model, then an edit of the README.
    Rebuilds from scratch each time (only inside `root`, which the lesson owns).
    """
    from .download import require_git_lfs

    require_git_lfs()
    model_dir, root = Path(model_dir), Path(root)
    if not (model_dir / "config.json").exists():
        from .errors import CourseError

        raise CourseError(f"{model_dir} holds no config.json: not a model folder.", "pass a model folder, e.g. helpers.TINY_MODEL_DIR")
    _reset_folder(root)
    work, bare = root / "work", root / "practice.git"
    work.mkdir()
    _git(["init", "--quiet"], work)
    _git(["symbolic-ref", "HEAD", "refs/heads/main"], work)  # (git init --initial-branch needs git >= 2.28)
    _git(["lfs", "install", "--local"], work)
    (work / ".gitattributes").write_text(GITATTRIBUTES)
    for name in SMALL_FILES:
        if (model_dir / name).exists():
            shutil.copy2(model_dir / name, work / name)
    if not (work / "README.md").exists():
        (work / "README.md").write_text(f"# {model_dir.name}\n")
    (work / "LICENSE").write_text(PRACTICE_LICENSE)
    split_safetensors(model_dir, work, shards)
    _git(["add", "."], work)
    _git(["commit", "--quiet", "-m", "Add tiny Grok 2 weights, config and tokenizer"], work)
    with (work / "README.md").open("a") as readme:
        readme.write("\nThis copy is the course's practice repository for lesson 01.\n")
    _git(["commit", "--quiet", "-am", "README: say what this repository is for"], work)
    _git(["init", "--quiet", "--bare", str(bare)], root)
    _git(["symbolic-ref", "HEAD", "refs/heads/main"], bare)
    url = bare.resolve().as_uri()
    _git(["push", "--quiet", url, "main"], work)  # git-lfs's pre-push hook copies the LFS objects into the remote
    shutil.rmtree(work)
    return url


def lfs_store(url_or_path: str | Path) -> Path:
    """The `lfs/objects` folder of a bare repository given by its file:// URL or path."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    text = str(url_or_path)
    path = Path(url2pathname(urlparse(text).path)) if text.startswith("file://") else Path(text)
    return path / "lfs" / "objects"


# ------------------------------------------------------------------------------------------------ a simulated link


def simulate_link(clone: str | Path, bytes_per_second: float | None = None, drop_after_bytes: int | None = None,
                  drops: int = 1) -> None:
    """Make `clone`'s LFS downloads go through a simulated network link, or (no arguments) restore the direct one.

    bytes_per_second: throttle (the tiny model downloads in seconds at 1 MB/s, long enough to interrupt by hand).
    drop_after_bytes: the link "resets" after this many bytes of a transfer, `drops` times in all, leaving the partial
    file in .git/lfs/incomplete - where, as git-lfs does over HTTPS with a Range request, the next attempt resumes.
    """
    from .download.clone import git_dir as find_git_dir

    clone = Path(clone)
    git_dir = find_git_dir(clone)
    # Back to the direct link first (each fails harmlessly when it was not set).
    _git(["config", "--remove-section", f"lfs.customtransfer.{LINK_AGENT}"], clone, check=False)
    _git(["config", "--unset-all", "lfs.standalonetransferagent"], clone, check=False)
    state = git_dir / "practice-link.json"
    if bytes_per_second is None and drop_after_bytes is None:
        state.unlink(missing_ok=True)
        return
    remote = _git(["remote", "get-url", "origin"], clone)
    state.write_text(json.dumps({"objects": str(lfs_store(remote)), "incomplete": str(git_dir / "lfs" / "incomplete"),
                                 "rate": bytes_per_second, "drop_after": drop_after_bytes, "drops_left": drops}))
    args = " ".join(["-I", "-S", shlex.quote(str(Path(__file__).resolve())), "link", shlex.quote(str(state))])  # run by sh
    _git(["config", f"lfs.customtransfer.{LINK_AGENT}.path", sys.executable], clone)
    _git(["config", f"lfs.customtransfer.{LINK_AGENT}.args", args], clone)
    _git(["config", f"lfs.customtransfer.{LINK_AGENT}.concurrent", "false"], clone)  # one link: one transfer at a time
    _git(["config", "lfs.standalonetransferagent", LINK_AGENT], clone)


def interrupt_pull(clone: str | Path, timeout_s: float = 60.0) -> tuple[int, dict[str, int]]:
    """Start `git lfs pull` for every LFS file of `clone` in the background, and kill it with SIGKILL - git, git-lfs
    and the transfer agent at once, the way a lost SSH session or a reboot ends a download - as soon as one more file
    is complete and another is part-way. Lesson 01's rehearsal of a resumed download: throttle the link first
    (`simulate_link(clone, bytes_per_second=...)`), or the pull is over before it can be caught.

    Returns (the pull's exit status: -9 for SIGKILL, {path: bytes on disk afterwards})."""
    import signal

    from .download import lfs_manifest, local_progress
    from .download.processes import start, stop
    from .errors import CourseError

    clone = Path(clone)
    manifest = lfs_manifest(clone)
    had = {p for p, n in local_progress(clone, manifest=manifest).items() if n == manifest[p].size}
    # Watched like every git command of the course: if this process dies mid-rehearsal, the pull is ended too.
    process = start(["git", "lfs", "pull"], cwd=clone, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while process.poll() is None and time.monotonic() < deadline:
            have = local_progress(clone, manifest=manifest)
            completed = [p for p, n in have.items() if n == manifest[p].size and p not in had]
            partial = [p for p, n in have.items() if 0 < n < manifest[p].size]
            if completed and partial:
                break
            time.sleep(0.02)
        if process.poll() is not None:
            raise CourseError(f"The pull in {clone} ended (exit status {process.returncode}) before it could be "
                              "interrupted half-way.",
                              "slow the link down first: local_hub.simulate_link(clone, bytes_per_second=1_000_000)")
        if hasattr(os, "killpg"):
            os.killpg(process.pid, signal.SIGKILL)  # the whole process group at once: nothing gets to clean up
        else:
            process.kill()
        process.wait(timeout=30)
    finally:
        stop(process)  # on every way out (an error, the stop button) nothing is left running; a no-op once it is gone
    return process.returncode, local_progress(clone, manifest=manifest)


def link_log(clone: str | Path) -> list[dict]:
    """What the simulated link transferred: one {oid, from_byte, to_byte, dropped} per transfer, oldest first."""
    from .download.clone import git_dir

    log = git_dir(clone) / "practice-link.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _link_agent(state_path: Path) -> int:
    """A git-lfs custom transfer agent (docs/custom-transfers.md in git-lfs): JSON lines on stdin/stdout.

    Downloads copy `objects/<oid>` to `incomplete/<oid>.tmp` at the configured rate, resuming a partial .tmp the way
    git-lfs's HTTP adapter does; git-lfs checks the sha256 and moves the finished file into .git/lfs/objects.
    """
    for line in sys.stdin:
        message = json.loads(line)
        event = message.get("event")
        if event == "init":
            _send({})
        elif event == "terminate":
            return 0
        elif event == "upload":
            _send({"event": "complete", "oid": message["oid"], "error": {"code": 2, "message": "the practice link is download-only"}})
        elif event == "download":
            _send(_link_download(state_path, message["oid"], message["size"]))
    return 0


def _link_download(state_path: Path, oid: str, size: int) -> dict:
    state = json.loads(state_path.read_text())
    source = Path(state["objects"]) / oid[:2] / oid[2:4] / oid
    if not source.exists():
        return {"event": "complete", "oid": oid, "error": {"code": 404, "message": f"remote missing object {oid}"}}
    partial = Path(state["incomplete"]) / f"{oid}.tmp"
    partial.parent.mkdir(parents=True, exist_ok=True)
    start = partial.stat().st_size if partial.exists() else 0
    start = 0 if start > size else start
    rate, drop_after = state.get("rate"), state.get("drop_after")
    dropping = drop_after is not None and state.get("drops_left", 0) > 0
    chunk = int(max(4096, (rate or 4 * 1024**2) / 20))
    sent, began, dropped = 0, time.monotonic(), False
    with open(source, "rb") as src, open(partial, "ab" if start else "wb") as out:
        src.seek(start)
        while block := src.read(chunk if not dropping else min(chunk, drop_after - sent)):
            out.write(block)
            out.flush()
            sent += len(block)
            _send({"event": "progress", "oid": oid, "bytesSoFar": start + sent, "bytesSinceLast": len(block)})
            if rate:
                time.sleep(max(0.0, sent / rate - (time.monotonic() - began)))
            if dropping and sent >= drop_after:
                dropped = True
                break
    with open(state_path.with_suffix(".log"), "a") as log:
        log.write(json.dumps({"oid": oid, "from_byte": start, "to_byte": start + sent, "dropped": dropped}) + "\n")
    if dropped:
        state["drops_left"] -= 1
        state_path.write_text(json.dumps(state))
        return {"event": "complete", "oid": oid,
                "error": {"code": 2, "message": "connection reset by peer (simulated by the practice link)"}}
    return {"event": "complete", "oid": oid, "path": str(partial)}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "link":
        sys.exit(_link_agent(Path(sys.argv[2])))
    sys.exit("usage: local_hub.py link STATE.json  (a git-lfs custom transfer agent; see simulate_link)")
