#!/usr/bin/env bash
# Issue 13's GPU run as one command, for a lent GPU machine (benchmarks/README.md, "On a lent GPU"). From the repo
# root, with .device carried (built on the CPU box by benchmarks/device_prep.sh):
#
#   bash benchmarks/gpu_check.sh [PIPELINE_OPTION ...]    # options go to pipeline.py after --gpu-default, e.g. --skip-sweep
#
# In this order, each printed as it goes: the tree and the GPU (stops at once if torch sees no CUDA, unless
# --device cpu is passed); .device/setup.sh (wheels into /tmp/site, the PNGs rebuilt in /tmp/data/covid-ct,
# checked pixel-identical); benchmarks/pipeline.py --gpu-default, section by section, with nvidia-smi sampled
# every second beside it; the tests that need CUDA to mean anything; a summary. The benchmark gets
# GPU_CHECK_BENCH_S seconds (default 360: its plan is <= 240 s, pipeline.GPU_DEFAULT), then SIGINT: gpu.json
# already holds every section that ended, the tests and the summary still come back, and the whole call stays
# under ~450 s, so that with the machine's start a second try still fits a session's 15 device minutes.
#
# Then, after the benchmark, the trials' fork server's imports once more, with python -X importtime: the
# benchmark timed them at 14.4 s on an H200 box against ~4 s on a 2-core CPU; run again on a warm page cache,
# this tells cold disk from slow imports. Then benchmarks/first_step.py: a trial's first steps stage by stage
# (context, libraries, model build, augmentation, steps 1-3, evaluation) for vgg16 then resnet50 at 224 px in
# one fresh process: where the 1.3-1.4 s `warmup` phase goes, and what a warm worker still pays.
#
# Files under $OUT: setup.log, gpu.log (the benchmark's output), gpu.json (its results), gpu-util.csv
# (nvidia-smi), imports.log (-X importtime), first_step.json, tests.log.
#
# Environment:
#   OUT                    where the files go (set on the device machine; default: a new temporary folder)
#   GPU_CHECK_DATA         the data set (default /tmp/data/covid-ct, where setup.sh rebuilds it)
#   GPU_CHECK_SETUP=0      skip .device/setup.sh: this Python already has every package (a CPU dry run)
#   GPU_CHECK_SIMULATE=1   block, in every process, the packages the GPU machine lacks (benchmarks/device_sim)
#   GPU_CHECK_BENCH_S      the benchmark's time limit in seconds
#   GPU_CHECK_FIRST_STEP   the backbones first_step.py measures (default vgg16,resnet50)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
started=$SECONDS
OUT="${OUT:-$(mktemp -d -t gpu-check-XXXXXX)}"
mkdir -p "$OUT"
data="${GPU_CHECK_DATA:-/tmp/data/covid-ct}"
bench_s="${GPU_CHECK_BENCH_S:-360}"
export PYTHONUNBUFFERED=1
failed=()
stages=()

say() { printf '\n=== %s (%ds)\n' "$*" "$((SECONDS - started))"; }
die() { echo "gpu_check: $*" >&2; exit 1; }
stage_done() { stages+=("$1 $((SECONDS - $2))s rc=$3"); [ "$3" = 0 ] || failed+=("$1"); }

# --device cpu (or --device=cpu) among the options: a CPU dry run, no CUDA expected
wants_cuda() {
    local prev="" arg
    for arg in "$@"; do
        if [ "$arg" = "--device=cpu" ] || { [ "$prev" = "--device" ] && [ "$arg" = cpu ]; }; then
            return 1
        fi
        prev=$arg
    done
    return 0
}

show_tree_and_gpu() {
    say "tree and GPU"
    echo "OUT=$OUT  data=$data  options: --gpu-default $*"
    if [ -f .device/tree.txt ]; then cat .device/tree.txt; fi
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
    else
        echo "no nvidia-smi on this machine"
    fi
    python3 -c "import torch; c = torch.cuda.is_available(); print('torch', torch.__version__, 'cuda', torch.version.cuda,
'available' if c else 'NOT available', torch.cuda.get_device_name(0) if c else '')
raise SystemExit(0 if c else 3)"
}

run_setup() {
    say "setup: .device/setup.sh (wheels into /tmp/site, PNGs rebuilt)"
    [ -f .device/setup.sh ] || die ".device/setup.sh not found: build .device on the CPU box with
  bash benchmarks/device_prep.sh   and name .device in the run's carry (or set GPU_CHECK_SETUP=0)"
    local t0=$SECONDS rc=0
    # shellcheck source=/dev/null  # made by device_prep.sh; it exports PYTHONPATH=/tmp/site and PATH
    source .device/setup.sh >"$OUT/setup.log" 2>&1 || rc=$?
    cat "$OUT/setup.log"
    [ "$rc" = 0 ] || die "setup.sh failed (rc=$rc)"
    # setup.sh prints "DIR: N images, M pixel-identical ..." and carries on when M < N
    grep -Eq ': ([0-9]+) images, \1 pixel-identical' "$OUT/setup.log" || die "the rebuilt images are not all pixel-identical"
    stage_done setup "$t0" 0
}

use_this_tree() {
    # the tree that travelled, not the wheel setup.sh installed (same code unless the tree changed since the prep)
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    if [ "${GPU_CHECK_SIMULATE:-0}" = 1 ]; then
        export PYTHONPATH="$PWD/benchmarks/device_sim:$PYTHONPATH"
        echo "simulating the GPU machine's missing packages (benchmarks/device_sim/sitecustomize.py)"
    fi
}

sampler_pid=""
start_gpu_sampler() {
    command -v nvidia-smi >/dev/null 2>&1 || return 0
    nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,power.draw,clocks.sm \
        --format=csv,nounits -l 1 >"$OUT/gpu-util.csv" 2>&1 &
    sampler_pid=$!
}
stop_gpu_sampler() {
    if [ -n "$sampler_pid" ]; then kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null; sampler_pid=""; fi
}
trap stop_gpu_sampler EXIT

run_benchmark() {
    say "benchmark: pipeline.py --gpu-default $* (limit ${bench_s}s)"
    local t0=$SECONDS rc=0
    start_gpu_sampler
    # SIGINT to the benchmark's process group: its sweeps and trials stop too; -k: then SIGKILL
    timeout -k 15 -s INT "$bench_s" python3 benchmarks/pipeline.py --gpu-default --data "$data" \
        --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log" || rc=$?
    stop_gpu_sampler
    if [ "$rc" = 124 ]; then echo "benchmark stopped at its ${bench_s}s limit: gpu.json has the sections that ended"; fi
    stage_done benchmark "$t0" "$rc"
}

# what a controller's fork server imports before its first trial (launcher.AGENT_PRELOAD), timed in a fresh process
run_imports() {
    say "imports: the fork server's preload, python -X importtime (page cache warm from the benchmark)"
    local t0=$SECONDS rc=0
    python3 -X importtime -c "import time; t = time.perf_counter()
import importlib
from covid_sweep.sweep.control.launcher import AGENT_PRELOAD, GUARD
for name in (GUARD, *AGENT_PRELOAD):
    importlib.import_module(name)
print(f'preload imports: {time.perf_counter() - t:.2f} s', flush=True)" 2>"$OUT/imports.log" || rc=$?
    echo "slowest by cumulative microseconds (self | cumulative | module):"
    grep '^import time:' "$OUT/imports.log" | sort -t'|' -k2 -n | tail -12
    stage_done imports "$t0" "$rc"
}

run_first_step() {
    local cuda=$1 device=auto
    [ "$cuda" = 1 ] || device=cpu
    say "first steps: benchmarks/first_step.py (one fresh process)"
    local t0=$SECONDS rc=0
    timeout -k 10 120 python3 benchmarks/first_step.py --backbones "${GPU_CHECK_FIRST_STEP:-vgg16,resnet50}" \
        --size 224 --batch 32 --device "$device" --json "$OUT/first_step.json" || rc=$?
    stage_done first_step "$t0" "$rc"
}

# the tests that mean something only on CUDA: the allocator check the warm workers use, a real trial whose
# worker must find the GPU memory released to run the next trial (on a CPU it passes without touching CUDA),
# fit's best weights kept on the GPU and handed back on the CPU (a fit whose training batches are gathered on the
# GPU), validation images kept on the GPU scoring as on the CPU, training batches gathered on the GPU being the
# CPU path's, and a model built on the GPU
CUDA_TESTS=(tests/test_warm_workers.py::test_gpu_memory_released_sees_a_tensor_left_on_the_gpu
            tests/test_warm_workers.py::test_a_real_trial_after_another_in_the_same_worker_skips_the_process_start
            tests/test_train.py::test_training_on_cuda_keeps_the_best_weights_on_the_cpu_in_the_result
            tests/test_train.py::test_validation_images_resident_on_cuda_score_as_on_the_cpu
            tests/test_device_augment.py::test_cached_batches_from_images_on_cuda_are_the_batches_of_the_array
            tests/test_models.py::test_a_model_built_on_cuda_runs_there)

run_tests() {
    local cuda=$1
    say "tests: ${CUDA_TESTS[*]}"
    local t0=$SECONDS rc=0
    python3 -m pytest -q -p no:cacheprovider -rs "${CUDA_TESTS[@]}" 2>&1 | tee "$OUT/tests.log" || rc=$?
    # with CUDA, a skip would be a test that did not run: count it as a failure
    if [ "$rc" = 0 ] && [ "$cuda" = 1 ] && ! grep -Eq "^${#CUDA_TESTS[@]} passed" "$OUT/tests.log"; then
        echo "expected ${#CUDA_TESTS[@]} passed with CUDA"; rc=1
    fi
    stage_done tests "$t0" "$rc"
}

summary() {
    say "summary"
    printf '  %s\n' "${stages[@]}"
    echo "  files in $OUT:"; find "$OUT" -maxdepth 1 -type f -printf '    %f %s bytes\n' | sort
    if [ "${#failed[@]}" = 0 ]; then
        echo "gpu_check: OK in $((SECONDS - started))s"
    else
        echo "gpu_check: FAILED: ${failed[*]} ($((SECONDS - started))s)"
        exit 1
    fi
}

cuda=1
wants_cuda "$@" || cuda=0
t0=$SECONDS
probe_rc=0
show_tree_and_gpu "$@" || probe_rc=$?
if [ "$probe_rc" != 0 ] && [ "$probe_rc" != 3 ]; then die "python3/torch failed (rc=$probe_rc)"; fi
if [ "$probe_rc" = 3 ] && [ "$cuda" = 1 ]; then
    die "torch sees no CUDA device: stopping (pass --device cpu for a CPU dry run)"
fi
stage_done probe "$t0" 0
if [ "${GPU_CHECK_SETUP:-1}" != 0 ]; then run_setup; fi
[ -d "$data" ] || die "no data at $data (GPU_CHECK_DATA)"
use_this_tree
run_benchmark "$@"
run_imports
run_first_step "$cuda"
run_tests "$cuda"
summary
