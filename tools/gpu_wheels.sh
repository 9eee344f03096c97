#!/usr/bin/env bash
# Wheels of the packages that a GPU machine without internet lacks to import Detectron2 beside
# its own torch, into the folder $1 (default .gpu-wheels), for Python $2 (default 3.12) on
# x86-64 Linux. Run where pip reaches PyPI; bring the folder to the GPU machine with the checkout:
# tools/gpu_check.py installs them (pip --no-index --target) when detectron2 does not import.
# The versions are those `make setup` installs here.
set -euo pipefail
DIR=${1:-.gpu-wheels}
PYVERSION=${2:-3.12}
PY=${PYTHON:-python3}
mkdir -p "$DIR"
# Detectron2 (tools/install_detectron2.sh says why it is fetched for 3.10): the file is renamed
# for any Python 3; pip installs by the name and `--target` runs no `pip check`.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.10 \
    --platform any sal-detectron2==0.7.2 -d "$DIR"
mv -f "$DIR"/sal_detectron2-0.7.2-cp310-none-any.whl "$DIR"/sal_detectron2-0.7.2-py3-none-any.whl
# Compiled: for the GPU machine's Python.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVERSION" \
    --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 pycocotools==2.0.11 -d "$DIR"
# Pure Python (built into a wheel where PyPI has only the source).
"$PY" -m pip wheel --quiet --no-deps -w "$DIR" fvcore==0.1.5.post20221221 iopath==0.1.10 \
    yacs==0.1.8 termcolor==3.3.0 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 hydra-core==1.3.8
ls "$DIR"
du -sh "$DIR"
