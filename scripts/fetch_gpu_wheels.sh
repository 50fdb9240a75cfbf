#!/usr/bin/env bash
# Download, into .whl/ (git-ignored), the wheels that scripts/gpu_checks.sh installs on a GPU machine that has PyTorch
# but not the course's pins: transformers and bitsandbytes at the course's versions (pyproject.toml), IPython for
# the in-process lesson runner, and a setuptools that builds the course's editable install offline by itself (70.1+:
# older ones also need the wheel package). For Python 3.12 on x86-64 Linux (the GPU image's); about 60 MB.
#
#   bash scripts/fetch_gpu_wheels.sh [PYTHON_VERSION]      default 3.12
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYVER="${1:-3.12}"
pin() { grep -oE "\"$1==[^\"]+\"" pyproject.toml | tr -d '"'; }
PACKAGES=(
    "$(pin transformers)" "$(pin bitsandbytes)" "setuptools>=70.1"
    # IPython without a kernel: what scripts/run_notebook_inprocess.py needs (pure Python; small versions on purpose,
    # the whole carried tree must stay under the GPU tool's 64 MiB)
    ipython==9.18.1 ipython-pygments-lexers==1.1.1 jedi==0.19.2 parso==0.8.7 matplotlib-inline==0.2.2
    pexpect==4.9.0 ptyprocess==0.7.0 prompt_toolkit==3.0.53 wcwidth==0.2.13 stack_data==0.6.3 asttokens==3.0.2
    executing==2.3.0 pure_eval==0.2.4 traitlets==5.16.1
)
mkdir -p .whl
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    PLATFORMS+=(--platform "$tag")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    "${PLATFORMS[@]}" -d .whl "${PACKAGES[@]}"
ls -la .whl
du -ch .whl/*.whl | tail -1
