"""Where the course keeps things. Everything a learner creates goes under `workspace/` (git-ignored)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT / "data"
TINY_MODEL_DIR = DATA_DIR / "tiny-grok-2"
GROK2_RELEASED_CONFIG = DATA_DIR / "grok-2-config.json"


def workspace_dir() -> Path:
    """Scratch space for downloads, checkpoints and adapters; `GROK2_COURSE_WORKSPACE` moves it."""
    path = Path(os.environ.get("GROK2_COURSE_WORKSPACE", REPO_ROOT / "workspace"))
    path.mkdir(parents=True, exist_ok=True)
    return path
