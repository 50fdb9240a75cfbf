#!/usr/bin/env bash
# Pre-build everything a workshop room needs, into one folder a facilitator copies to USB sticks (docs/facilitators.md).
#
#   bash scripts/prepare_workshop.sh [options]            (also: bash scripts/course.sh workshop [options])
#
#   --out DIR            the kit's folder (default: workspace/workshop-kit)
#   --platform NAME      a laptop platform to download wheels for; repeat for several. NAME is one of
#                        linux-x86_64, macos-arm64, windows-x86_64, or "host" (this machine, the default)
#   --python X.Y         the attendees' Python version (default: this machine's); wheels are per version
#   --with-small-model   also download the `small` profile's model into the kit's Hugging Face cache (~6.6 GB;
#                        needs the hub). The tiny model needs nothing: it is part of the repository.
#   --no-wheels          skip the wheelhouse (e.g. to refresh only the bundle)
#   --dry-run            write the kit's text files (requirements.txt, install.sh, README.txt) and print every
#                        command it would run, without downloading or bundling anything
#
# The kit:
#   wheelhouse/          `pip download` of every pinned package of pyproject.toml (and pip, setuptools), per
#                        platform; torch is the CPU build (TORCH_INDEX_URL, default the PyTorch CPU index)
#   grok2-course.bundle  `git bundle` of this repository (every branch and tag): `git clone` works from it offline
#   hf-home/             only with --with-small-model: a Hugging Face cache holding the small model
#   requirements.txt     the pins, as read from pyproject.toml
#   install.sh           the offline install on a laptop: clone the bundle, then `pip install --no-index
#                        --find-links wheelhouse`, through scripts/course.sh so the kernel is registered as usual
#   README.txt           what is where, and the two commands for attendees
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/workspace/workshop-kit"
PYTHON_VERSION=""
PLATFORMS=()
WITH_SMALL=0
WHEELS=1
DRY=0
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
SMALL_MODEL="ibm-granite/granite-3.1-3b-a800m-instruct"

die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }
say() { printf '\n==> %s\n' "$*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --platform) PLATFORMS+=("${2:?--platform needs a name}"); shift 2 ;;
        --python) PYTHON_VERSION="${2:?--python needs X.Y}"; shift 2 ;;
        --with-small-model) WITH_SMALL=1; shift ;;
        --no-wheels) WHEELS=0; shift ;;
        --dry-run) DRY=1; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ ${#PLATFORMS[@]} -gt 0 ] || PLATFORMS=(host)

# The interpreter that runs pip: the course's .venv when it exists, else python3.
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY="$(command -v python3 || command -v python || true)"
[ -n "$PY" ] || die "Python 3 not found."
[ -n "$PYTHON_VERSION" ] || PYTHON_VERSION="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
[[ "$PYTHON_VERSION" =~ ^3\.[0-9]+$ ]] || die "--python wants X.Y, e.g. 3.11 (got $PYTHON_VERSION)."

platform_tags() {  # pip's --platform tags for a name (pip also accepts older manylinux/macOS tags below these)
    case "$1" in
        linux-x86_64) echo "manylinux_2_28_x86_64" ;;
        macos-arm64) echo "macosx_14_0_arm64" ;;
        windows-x86_64) echo "win_amd64" ;;
        host) echo "" ;;
        *) die "unknown platform $1: use linux-x86_64, macos-arm64, windows-x86_64 or host" ;;
    esac
}
for platform in "${PLATFORMS[@]}"; do platform_tags "$platform" >/dev/null; done

run() {  # print a command; run it unless --dry-run
    printf '+ %s\n' "$*"
    [ "$DRY" -eq 1 ] || "$@"
}

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
say "Workshop kit in $OUT (Python $PYTHON_VERSION; platforms: ${PLATFORMS[*]}$([ "$DRY" -eq 1 ] && echo '; dry run: nothing is downloaded'))"

# 1. The pins, from pyproject.toml (runtime and test packages), plus what an offline editable install needs.
"$PY" - "$ROOT/pyproject.toml" >"$OUT/requirements.txt" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
pins = re.findall(r'^\s*"([A-Za-z0-9_.\-]+==[^"\s]+)"', text, re.MULTILINE)
print("# The course's pins, read from pyproject.toml by scripts/prepare_workshop.sh. Do not edit: regenerate.")
print("\n".join(pins))
EOF
[ "$(grep -c '==' "$OUT/requirements.txt")" -gt 0 ] || die "no pinned packages found in pyproject.toml"
echo "requirements.txt: $(grep -c '==' "$OUT/requirements.txt") pinned packages"

# 2. The wheelhouse.
if [ "$WHEELS" -eq 1 ]; then
    [ "$DRY" -eq 1 ] || mkdir -p "$OUT/wheelhouse"
    for platform in "${PLATFORMS[@]}"; do
        say "Wheels for $platform"
        tags="$(platform_tags "$platform")"
        target=()
        if [ -n "$tags" ]; then
            # Another platform: binary wheels only, for that Python; pip cannot build sdists for a foreign machine.
            target=(--only-binary=:all: --platform "$tags" --python-version "$PYTHON_VERSION" --implementation cp)
        fi
        # torch: the CPU build (PyPI's Linux torch wheel pulls several GB of CUDA libraries); macOS wheels are on
        # PyPI and are CPU/MPS builds anyway, so the extra index changes nothing there.
        run "$PY" -m pip download --dest "$OUT/wheelhouse" --extra-index-url "$TORCH_INDEX_URL" \
            ${target[@]+"${target[@]}"} -r "$OUT/requirements.txt" pip "setuptools>=68"
    done
fi

# 3. The repository, as one file git can clone from.
say "git bundle of the repository"
if [ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]; then
    echo "Note: the working tree has uncommitted changes; the bundle holds commits only."
fi
run git -C "$ROOT" bundle create "$OUT/grok2-course.bundle" --branches --tags HEAD

# 4. Optionally, the small model's hub cache.
if [ "$WITH_SMALL" -eq 1 ]; then
    say "The small profile's model ($SMALL_MODEL) into $OUT/hf-home"
    if [ "${HF_HUB_OFFLINE:-0}" = "1" ]; then
        echo "Skipped: HF_HUB_OFFLINE=1 (no hub). Run again online to add it."
    else
        run env HF_HOME="$OUT/hf-home" "$PY" -c \
            "import sys; from huggingface_hub import snapshot_download; print(snapshot_download(sys.argv[1]))" \
            "$SMALL_MODEL" || echo "Could not download $SMALL_MODEL (offline?): the kit works without it (tiny profile)."
    fi
fi

# 5. The attendees' side: install.sh and README.txt.
cat >"$OUT/install.sh" <<'EOF'
#!/usr/bin/env bash
# Offline install of the Grok 2.5 course from this kit (written by scripts/prepare_workshop.sh).
#   bash install.sh [TARGET_FOLDER]          default: ./grok2-course next to where you run it
#   bash install.sh --dry-run [TARGET]       print the commands only
# Needs Python >= 3.10 (the version the kit was built for, see README.txt) and git. No network.
set -euo pipefail
KIT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
TARGET="${1:-$PWD/grok2-course}"
[ $# -gt 0 ] && shift
run() { printf '+ %s\n' "$*"; [ "$DRY" -eq 1 ] || "$@"; }
if [ ! -d "$TARGET/.git" ]; then
    run git clone "$KIT/grok2-course.bundle" "$TARGET"
fi
# pip reads PIP_NO_INDEX / PIP_FIND_LINKS: course.sh's own `pip install -e .[test]` then installs from the wheelhouse.
export PIP_NO_INDEX=1 PIP_FIND_LINKS="$KIT/wheelhouse" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ -d "$KIT/hf-home" ]; then
    echo "The kit has a Hugging Face cache: export HF_HOME=\"$KIT/hf-home\" (or copy it) before using the small profile."
fi
echo "Installing from $KIT/wheelhouse with no index (pip install --no-index --find-links ...)."
if [ "$DRY" -eq 1 ]; then
    printf '+ %s\n' "cd $TARGET" "PIP_NO_INDEX=1 PIP_FIND_LINKS=$KIT/wheelhouse bash scripts/course.sh lab"
    exit 0
fi
cd "$TARGET"
# `lab` installs (once), registers the kernel and starts JupyterLab on the tiny profile; Ctrl+C stops it.
exec bash scripts/course.sh lab "$@"
EOF
chmod +x "$OUT/install.sh"

cat >"$OUT/README.txt" <<EOF
Grok 2.5, hands-on - workshop kit (see docs/facilitators.md in the course)

Built for Python $PYTHON_VERSION on: ${PLATFORMS[*]}
Made: $(date -u +%Y-%m-%dT%H:%M:%SZ) from commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)

wheelhouse/          every pinned package (pip install --no-index --find-links wheelhouse ...)
grok2-course.bundle  the course repository (git clone grok2-course.bundle grok2-course)
hf-home/             the small profile's model, if it was added (--with-small-model); optional
requirements.txt     the pins the wheelhouse was built from
install.sh           the offline install

On each laptop, with this folder copied from the USB stick, and no network:

    bash install.sh                  # clone + offline install + JupyterLab on the tiny model
    # by hand, the same:
    git clone grok2-course.bundle grok2-course && cd grok2-course
    python3 -m venv .venv
    .venv/bin/python -m pip install --no-index --find-links ../wheelhouse -e ".[test]"
    bash scripts/course.sh lab
EOF

say "Done"
if [ "$DRY" -eq 1 ]; then
    echo "Dry run: wrote requirements.txt, install.sh and README.txt in $OUT; nothing was downloaded or bundled."
else
    du -sh "$OUT" 2>/dev/null || true
fi
