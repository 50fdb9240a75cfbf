#!/usr/bin/env bash
# The course's one entry point. Needs only Python >= 3.10 with venv and pip (and apt, or an existing git-lfs, for
# lesson 01's tests).
#
#   bash scripts/course.sh lab [jupyter lab options]   set up, then open the course in JupyterLab (tiny model)
#   bash scripts/course.sh test [pytest options]       set up, then run every test and execute every notebook
#
# Setup is idempotent: the virtual environment .venv is created once and re-installed only when pyproject.toml
# (the single source of truth for versions) changes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.course-installed"
KERNEL_NAME="grok2-course"

say() { printf '\n==> %s\n' "$*"; }

setup() {
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "Python 3.10+ not found as '$python'. Install it (python.org), or set PYTHON=/path/to/python3." >&2
        exit 1
    fi
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
        echo "The course needs Python 3.10 or newer; '$python' is $("$python" --version 2>&1)." >&2
        exit 1
    }
    if [ ! -x "$PY" ]; then
        say "Creating the course environment in .venv"
        "$python" -m venv "$VENV" || {
            echo "Could not create a virtual environment. On Debian/Ubuntu: sudo apt-get install python3-venv" >&2
            exit 1
        }
    fi
    local wanted
    wanted="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$wanted" ]; then
        say "Installing the course and its pinned packages (first time: a few minutes)"
        "$PY" -m pip install --quiet --upgrade pip
        "$PY" -m pip install --quiet -e "$ROOT[test]"
        "$PY" -m ipykernel install --user --name "$KERNEL_NAME" --display-name "Python (grok2-course)" >/dev/null
        echo "$wanted" > "$STAMP"
    fi
}

ensure_git_lfs() {
    if git lfs version >/dev/null 2>&1; then
        return
    fi
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        say "Installing git-lfs with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git-lfs >/dev/null
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then
        say "Installing git-lfs with sudo apt-get"
        sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git-lfs >/dev/null
    else
        echo "git-lfs is missing and cannot be installed automatically. Install it (Debian/Ubuntu: sudo apt-get install" \
             "git-lfs; macOS: brew install git-lfs), then run this again." >&2
        exit 1
    fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
    lab)
        setup
        say "Starting JupyterLab on the course (profile: ${GROK2_COURSE_PROFILE:-tiny})"
        cd "$ROOT/notebooks"
        export GROK2_COURSE_PROFILE="${GROK2_COURSE_PROFILE:-tiny}"
        extra=()
        [ "$(id -u)" = "0" ] && extra+=(--allow-root)  # containers and cloud VMs often run as root
        exec "$VENV/bin/jupyter" lab 00_setup.ipynb "${extra[@]}" "$@"
        ;;
    test)
        setup
        ensure_git_lfs
        say "Running the tests and executing every notebook (profile tiny, offline)"
        cd "$ROOT"
        export GROK2_COURSE_PROFILE=tiny HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg
        export GROK2_COURSE_WORKSPACE="${GROK2_COURSE_WORKSPACE:-$ROOT/workspace/test-run}"
        exec "$PY" -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider "$@"
        ;;
    *)
        echo "usage: bash scripts/course.sh lab|test [options]" >&2
        exit 2
        ;;
esac
