#!/usr/bin/env bash
# Every GPU check and benchmark of this repository, in the order a short GPU session wants
# them, each part's output saved under OUT (default: gpu-results/). Run from the repo root:
#
#   bash benchmarks/gpu_suite.sh tests        # pytest -m gpu: the CUDA-only tests (~2 min)
#   bash benchmarks/gpu_suite.sh layers       # LRN implementations and grouped convs, ms (~1 min)
#   bash benchmarks/gpu_suite.sh throughput   # the end-to-end table (~8 min)
#   bash benchmarks/gpu_suite.sh profile      # torch.profiler kernel tables, eager (~2 min)
#   bash benchmarks/gpu_suite.sh data         # prep and the loader, raw and jpeg shards (~5 min)
#   bash benchmarks/gpu_suite.sh all
#
# Parts are separate so that each fits in a time-limited remote command. It needs no install:
# the package is imported from the checkout (PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
python="${PYTHON:-python3}"

run() {  # run NAME CMD...: CMD's output on the terminal and in OUT/NAME.txt
    local name=$1; shift
    echo "== $name: $*"
    "$@" 2>&1 | tee "$OUT/$name.txt"
}

part() {
    case "$1" in
        tests) run gpu-tests "$python" -m pytest -q -m gpu -p no:cacheprovider ;;
        layers) run layers "$python" benchmarks/layers.py --device cuda ;;
        throughput) run throughput "$python" benchmarks/train_throughput.py --device cuda --n 4096 \
                        --json "$OUT/throughput.json" ;;
        profile)
            run profile-fused "$python" benchmarks/profile_step.py --device cuda
            run profile-triton "$python" benchmarks/profile_step.py --device cuda --lrn-kernel triton ;;
        data) run data "$python" benchmarks/data.py --n 4000 --device cuda --workers "$(nproc)" ;;
        all) for p in tests layers throughput profile data; do part "$p"; done ;;
        *) echo "unknown part '$1': tests, layers, throughput, profile, data or all" >&2; exit 2 ;;
    esac
}

part "${1:-all}"
