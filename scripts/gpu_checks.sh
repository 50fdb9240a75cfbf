#!/usr/bin/env bash
# Everything the course checks on a CUDA GPU, in one prepared run of about nine minutes (one H100 or H200).
#
#   bash scripts/gpu_checks.sh [all | fast | lesson03 | decode]      results in $OUT (default workspace/gpu-checks)
#
#   fast      the fast decoding path on CUDA: CUDA graphs and torch.compile against generate, grouped experts against
#             the per-expert loop (tests/test_fast_generation.py, its CUDA tests)                        ~1 min
#   lesson03  lesson 03 on CUDA kernels with a ~1B-parameter Llama trained on the course's Q&A here
#             (scripts/build_course_llama.py), run in-process (scripts/run_notebook_inprocess.py) and recorded
#             as lesson-03-course-llama-1b-cuda.md/.json/-figure1.png                                       ~3 min
#   decode    benchmarks/decode_speed.py --suite gpu: decode speed vs the memory roofline for stock transformers
#             and the fast path, Grok 2.5 layers at full width, load time; stops starting new work when the
#             time left (GPU_CHECKS_SECONDS, default 570, minus what ran before) is spent               the rest
#
# The course is imported as an installed package, never through PYTHONPATH: the script first installs it, editable
# (the code runs from this folder), into the environment of $PYTHON (default python3). On a bare GPU machine without
# the course's pins (no bitsandbytes, an older transformers, no IPython), put wheels in .whl/ first:
# transformers==5.23.0, bitsandbytes==0.50.2, ipython and its pure-Python dependencies (scripts/fetch_gpu_wheels.sh,
# benchmarks/README.md); they are installed into that environment too. Nothing here needs the network: --no-index,
# --no-deps, and --no-build-isolation builds the course with the setuptools already there (70.1 or newer, else carry
# one in .whl/: scripts/fetch_gpu_wheels.sh does). A Python the OS manages (PEP 668) refuses installs: make a virtual
# environment that sees its packages first,
#   python3 -m venv --system-site-packages /tmp/gpu-env && PYTHON=/tmp/gpu-env/bin/python bash scripts/gpu_checks.sh
set -uo pipefail
PY="${PYTHON:-python3}"
# A path to Python (PYTHON=.venv/bin/python) is made absolute before leaving the folder it is relative to.
if [[ "$PY" == */* && -d "$(dirname "$PY")" ]]; then PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"; fi
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PART="${1:-all}"
OUT="${OUT:-$PWD/workspace/gpu-checks}"
BUDGET="${GPU_CHECKS_SECONDS:-570}"
# A dry run on a CPU: GPU_CHECKS_MODEL_SIZE=cpu GPU_CHECKS_SUITE=smoke PYTHON=.venv/bin/python bash scripts/gpu_checks.sh
# (same steps, toy sizes)
MODEL_SIZE="${GPU_CHECKS_MODEL_SIZE:-1b}"
SUITE="${GPU_CHECKS_SUITE:-gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
LOG="$OUT/gpu-checks.log"
: >"$LOG"
say() { printf '\n==> [%4ss] %s\n' "$SECONDS" "$*" | tee -a "$LOG"; }
status=0

# pip, offline, into $PY's environment; its last lines go to the log. Returns pip's own status.
offline_install() {
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir "$@" 2>&1 | tail -15 | tee -a "$LOG"
    return "${PIPESTATUS[0]}"
}
stop() { say "$1"; exit 1; }
if compgen -G ".whl/*.whl" >/dev/null; then
    say "installing the carried wheels into the environment of $PY"
    offline_install --no-compile --upgrade .whl/*.whl || stop "the carried wheels did not install (above)"
fi
say "installing the course (editable) into the environment of $PY"
offline_install -e . || stop "the course did not install (above). Building it offline needs setuptools 70.1 or newer \
in that environment (older ones also need the wheel package): carry one in .whl/ (scripts/fetch_gpu_wheels.sh does). \
A Python the OS manages refuses installs: python3 -m venv --system-site-packages /tmp/gpu-env, then rerun with \
PYTHON=/tmp/gpu-env/bin/python."
# From another folder, so that only the installed course can answer (not this folder as the current one).
FOUND="$(cd / && "$PY" -c 'import os, helpers; print(os.path.realpath(helpers.__path__[0]))' 2>&1)"
[[ "$FOUND" == "$(pwd -P)/helpers" ]] || stop "import helpers finds '$FOUND', not this course's $(pwd -P)/helpers"

DEVICE="$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo cpu)"
say "machine ($DEVICE)"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
  "$PY" - <<'EOF'
import importlib.metadata as m, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "device",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none: no CUDA GPU visible")
for name in ("transformers", "accelerate", "bitsandbytes", "peft", "ipython", "huggingface-hub", "tokenizers"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        print(name, "MISSING")
EOF
} 2>&1 | tee -a "$LOG"

if [[ "$PART" == all || "$PART" == fast ]]; then
    say "fast decoding on CUDA (tests)"
    timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_fast_generation.py -k cuda 2>&1 | tail -25 | tee -a "$LOG"
    [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
fi

if [[ "$PART" == all || "$PART" == lesson03 ]]; then
    say "lesson 03: building a Llama ($MODEL_SIZE) trained on the course's Q&A"
    MODEL="/tmp/course-llama-$MODEL_SIZE"
    timeout 240 "$PY" scripts/build_course_llama.py --size "$MODEL_SIZE" --out "$MODEL" --overwrite 2>&1 | grep -v "Writing model" \
        | tee -a "$LOG"
    if [[ ${PIPESTATUS[0]} -eq 0 ]]; then
        say "lesson 03 on CUDA with that model"
        GROK2_COURSE_PROFILE=small GROK2_COURSE_MODEL="$MODEL" timeout 300 "$PY" scripts/run_notebook_inprocess.py \
            notebooks/03_quantized_inference.ipynb --record "$OUT/lesson-03-course-llama-$MODEL_SIZE-$DEVICE" --quiet 2>&1 \
            | tail -30 | tee -a "$LOG"
        [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
    else
        status=1
    fi
fi

if [[ "$PART" == all || "$PART" == decode ]]; then
    LEFT=$((BUDGET - SECONDS))
    say "decode speed against the roofline (new work starts for $LEFT more seconds)"
    if ((LEFT > 30)); then
        "$PY" benchmarks/decode_speed.py --suite "$SUITE" --out "$OUT" --budget-s "$LEFT" 2>&1 \
            | grep -v "Loading weights\|Writing model" | tee -a "$LOG"
        [[ ${PIPESTATUS[0]} -eq 0 ]] || status=1
    else
        echo "skipped: no time left" | tee -a "$LOG"
    fi
fi

say "done (status $status); results in $OUT:"
ls -la "$OUT" | tee -a "$LOG"
exit $status
