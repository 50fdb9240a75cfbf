"""The command line, `python -m helpers.download pull|verify FOLDER`: for real downloads, run in a terminal (inside
tmux or screen, so that a closed laptop does not stop a pull of hundreds of GB). SIGTERM and SIGHUP stop it like
Ctrl-C: what arrived is kept, and no git or git-lfs process is left running."""

from __future__ import annotations

import sys

from ..errors import CourseError
from .processes import stop_on_signals
from .pulling import pull
from .integrity import verify

DESCRIPTION = ("Getting model weights with Git LFS: a guarded, resumable, verified `git lfs pull`, and a check of every "
               "byte against its pointer.")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m helpers.download", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    pull_cmd = commands.add_parser("pull", help="git lfs pull, guarded, resumable, verified")
    pull_cmd.add_argument("repo", help="the clone's folder (made by `git clone` with GIT_LFS_SKIP_SMUDGE=1, lesson 01)")
    pull_cmd.add_argument("--include", nargs="*", help="only these LFS files (globs, as git lfs pull --include)")
    pull_cmd.add_argument("--exclude", nargs="*", help="not these LFS files (globs)")
    pull_cmd.add_argument("--retries", type=int, default=5, help="retries of a failed transfer (default 5)")
    pull_cmd.add_argument("--rehash", action="store_true",
                          help="hash every byte again, even files hashed before and unchanged since")
    verify_cmd = commands.add_parser("verify", help="size and sha256 of every LFS file against its pointer")
    verify_cmd.add_argument("repo", help="the clone's folder")
    args = parser.parse_args(argv)
    stop_on_signals()
    try:
        if args.command == "pull":
            print(pull(args.repo, include=args.include, exclude=args.exclude, retries=args.retries,
                       rehash=args.rehash).summary())
            return 0
        bad = [s for s in verify(args.repo) if not s.ok]
        print("\n".join(s.describe() for s in bad) or "every LFS file matches its pointer")
        return 1 if bad else 0
    except CourseError as error:
        print(error, file=sys.stderr)
        return 2
    except KeyboardInterrupt as stopped:
        print(f"Stopped ({stopped or 'Ctrl-C'}).", file=sys.stderr)
        return 130
