#!/usr/bin/env bash
# Download, on this machine, the wheels that the lent GPU machine lacks, into .whl/ (ignored by
# git): benchmarks/gpu_check.sh installs them there with --no-index, since that machine
# reaches nothing outside. Its image holds torch, torchvision, typer, rich, h5py, numpy,
# pillow and matplotlib (the device tool's KINDS.md) but not simplejpeg, the CPU JPEG decoder.
#
#   bash benchmarks/gpu_wheels.sh            # PYTHON_VERSION=3.12 by default (the GPU image's)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl 'simplejpeg>=1.8'
ls -l .whl
