"""A real Git LFS model repository, built on this machine from a model folder and served over file://.

Lesson 01 practises every download step against it offline - the same git and git-lfs commands as against
https://huggingface.co/xai-org/grok-2, only the URL differs. It holds what a hub model repository holds: config,
tokenizer, generation config, README, LICENSE, several safetensors shards with their index, and a .gitattributes
that sends the large files to LFS. No torch needed: shards are split with safetensors' numpy API.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from .download import require_git_lfs

GITATTRIBUTES = (
    "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    "tokenizer.json filter=lfs diff=lfs merge=lfs -text\n"
)
PRACTICE_LICENSE = (
    "The tiny Grok 2 practice model is part of the 'Grok 2.5, hands-on' course and shares its license.\n"
    "The real xai-org/grok-2 is under the xAI Community License Agreement: read it on the model's hub page.\n"
)
FIXED_DATE = "2025-08-23T12:00:00+00:00"  # fixed commit dates: the same build gives the same commit hashes


def _git(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "course", "GIT_AUTHOR_EMAIL": "course@localhost",
           "GIT_COMMITTER_NAME": "course", "GIT_COMMITTER_EMAIL": "course@localhost",
           "GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE}
    result = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def split_safetensors(source: Path, destination: Path, shards: int) -> list[str]:
    """Split one safetensors file into `shards` files plus model.safetensors.index.json, as the hub names them."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(source))
    names = sorted(tensors)
    per_shard = -(-len(names) // shards)
    weight_map, files = {}, []
    for index in range(shards):
        part = names[index * per_shard : (index + 1) * per_shard]
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(destination / file), metadata={"format": "pt"})
        weight_map.update({n: file for n in part})
        files.append(file)
    total = sum(t.nbytes for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (destination / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return files


def build_practice_repo(model_dir: str | Path, root: str | Path, shards: int = 3) -> str:
    """Build `root/practice.git` (a bare repository with its LFS objects) from `model_dir`; return its file:// URL.

    Two commits, so that pinning a revision means something: the model, then an edit of the README.
    Rebuilds from scratch each time (only inside `root`, which the lesson owns).
    """
    require_git_lfs()
    model_dir, root = Path(model_dir), Path(root)
    if root.exists():
        shutil.rmtree(root)
    work, bare = root / "work", root / "practice.git"
    work.mkdir(parents=True)
    _git(["init", "--quiet", "--initial-branch=main"], work)
    _git(["lfs", "install", "--local"], work)
    (work / ".gitattributes").write_text(GITATTRIBUTES)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "README.md"):
        if (model_dir / name).exists():
            shutil.copy2(model_dir / name, work / name)
    (work / "LICENSE").write_text(PRACTICE_LICENSE)
    split_safetensors(model_dir / "model.safetensors", work, shards)
    _git(["add", "."], work)
    _git(["commit", "--quiet", "-m", "Add tiny Grok 2 weights, config and tokenizer"], work)
    with (work / "README.md").open("a") as readme:
        readme.write("\nThis copy is the course's practice repository for lesson 01.\n")
    _git(["commit", "--quiet", "-am", "README: say what this repository is for"], work)
    _git(["init", "--quiet", "--bare", "--initial-branch=main", str(bare)], root)
    url = bare.resolve().as_uri()
    _git(["push", "--quiet", url, "main"], work)
    return url
