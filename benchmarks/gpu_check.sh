#!/usr/bin/env bash
# The whole GPU check in ONE command that ends within 8 minutes on one H100/H200, from a bare
# checkout. The parts the open issues owe come first: the CUDA-only tests; the jpeg loader
# with CPU and GPU decode (issue 20); the codes search at ImageNet's 1.28 M codes against the
# exact search (issue 19); training end to end from raw and from jpeg shards, eager (issue
# 20's last target). Then what no issue owes: the compiled training rows (ceiling, CUDA
# graphs, end to end, no-LRN and dense ceilings), the LRN kernels and grouped convolutions,
# batch 512 (eager), and a profile of the eager step. Every part runs under its own time
# limit, taken from what is left of the total (the limits add up to more than the total: the
# last parts, owed by no issue, are usually cut short), so a slow part costs its own rows, never
# the earlier parts or the run; every benchmark prints its rows as it measures them, and the
# JSON of data.py is rewritten after each of its sections, so a part stopped at its limit
# keeps what it measured.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine (writes to $OUT)
#   SMOKE=1 bash benchmarks/gpu_check.sh         # every part, tiny, on the CPU (minutes)
#
# With the device tool (docs/performance.md, "Measuring on a lent GPU"): download the wheels
# the GPU machine lacks into .whl/ here first (benchmarks/gpu_wheels.sh), then
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=540)
# Without the simplejpeg wheel the CPU-decode rows measure PIL: check.log says so at its start
# and in its summary. The results come back under $OUT: check.log (everything, with a summary
# of the parts at its end) and one JSON per measured part.
#
# Environment: OUT (default gpu-results/), BUDGET (total seconds, default 470), PYTHON.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
SMOKE="${SMOKE:-0}"
SCALE=1                                  # SMOKE: the CPU is far slower; each limit x 6
[[ "$SMOKE" == 1 ]] && SCALE=6
BUDGET="${BUDGET:-$((470 * SCALE))}"
python="${PYTHON:-python3}"
start=$SECONDS
log="$OUT/check.log"
: >"$log"
summary=()
export PYTHONUNBUFFERED=1

say() { echo "$*" | tee -a "$log"; }

# part NAME SECONDS CMD...: run CMD under min(SECONDS, what is left), output to the log
part() {
    local name=$1 want=$(($2 * SCALE)); shift 2
    local left=$((BUDGET - (SECONDS - start)))
    local limit=$((want < left ? want : left))
    if ((limit < 5)); then
        summary+=("$name: not run (the total budget of ${BUDGET} s is spent)")
        return
    fi
    say "== $name (limit ${limit} s): $*"
    local t0=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    local what="exit $rc"
    ((rc == 124 || rc == 130 || rc == 137)) && what="stopped at its limit (its rows so far are above)"
    summary+=("$name: $what, $((SECONDS - t0)) s")
}

# -- set-up: the carried wheels (simplejpeg is not on the GPU machine's image), the hardware
if [[ "$SMOKE" != 1 ]]; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl 2>&1 | tee -a "$log"
        export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        say "WARNING: no wheels in .whl/ (run benchmarks/gpu_wheels.sh before the device run, and carry .whl)"
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
  "$python" -c "import platform, os, torch, torchvision, typer, h5py; print('Python', platform.python_version(), '| torch', torch.__version__, '| torchvision', torchvision.__version__, '| typer', typer.__version__, '| h5py', h5py.__version__, '| cores', os.cpu_count(), '| cuda', torch.cuda.is_available())"
} 2>&1 | tee -a "$log"
if simplejpeg=$("$python" -c "import simplejpeg; print('simplejpeg', simplejpeg.__version__)" 2>&1); then
    say "$simplejpeg"
else
    decoder_warning="WARNING: simplejpeg cannot be imported ($(echo "$simplejpeg" | tail -1)): jpeg.decode_jpeg falls back to PIL, so the CPU-decode rows of jpeg-loader measure PIL, not libjpeg-turbo through simplejpeg"
    say "$decoder_warning"
    summary+=("$decoder_warning")
fi

if [[ "$SMOKE" == 1 ]]; then
    dev=cpu; workers=2
    tests=(-m gpu --co)                 # collect only: there is no GPU to run them on
    data=(--n 64 --workers 2 --seconds 0.5)
    nb=(--n 4000 --codes-n 20000 --queries 10 --devices cpu)
    tpe=(--n 48 --steps 2 --warmup 1 --no-peer --no-compile --skip a-lrn)
    # CPU compiles take minutes: the compiled part's invocation runs eager, its ceiling row only
    tpc=(--n 48 --steps 2 --warmup 1 --no-peer --no-eval --no-compile --skip a-lrn,b-jpeg,c)
    tp512=(--n 48 --steps 2 --warmup 1 --batch 8 --no-peer --no-eval --no-compile --skip a-lrn,b-jpeg,c)
    prof=(--steps 2 --batch 4)
else
    dev=cuda; workers=$(nproc)
    tests=(-m gpu)
    data=(--n 3000 --workers "$workers" --seconds 2)
    nb=(--n 300000 --codes-n 1281167 --queries 100 --devices cuda,cpu)
    tpe=(--n 2048 --steps 20 --no-peer --no-compile --skip a-lrn)
    tpc=(--n 2048 --steps 20 --no-peer --no-eval --no-eager --skip a-lrn)
    tp512=(--n 4096 --batch 512 --steps 10 --no-peer --no-eval --no-compile --skip a-lrn,b-jpeg,c)
    prof=(--steps 10)
fi

# Most wanted first: a part stopped at its limit loses only its own remaining rows.
# -o addopts=: in one process, without pyproject's pytest-xdist options (the device's own Python
# may lack the plugin, and the GPU tests share one GPU)
part gpu-tests 100 "$python" -m pytest -q -rA --durations=15 -p no:cacheprovider -o addopts= "${tests[@]}"
part jpeg-loader 90 "$python" benchmarks/data.py --device "$dev" --only-jpeg --json-file "$OUT/data.json" "${data[@]}"
part codes-search 75 "$python" benchmarks/neighbors.py "${nb[@]}" --json "$OUT/neighbors.json"
part train-eager 75 "$python" benchmarks/train_throughput.py --device "$dev" "${tpe[@]}" \
    --json "$OUT/throughput-128-eager.json"
part train-compiled 120 "$python" benchmarks/train_throughput.py --device "$dev" "${tpc[@]}" \
    --json "$OUT/throughput-128-compiled.json"
part layers 30 "$python" benchmarks/layers.py --device "$dev" --no-compile
part throughput-512 45 "$python" benchmarks/train_throughput.py --device "$dev" "${tp512[@]}" \
    --json "$OUT/throughput-512.json"
part profile-eager 20 "$python" benchmarks/profile_step.py --device "$dev" "${prof[@]}"

say ""
say "== summary ($((SECONDS - start)) s of a ${BUDGET} s budget)"
for line in "${summary[@]}"; do say "  $line"; done
