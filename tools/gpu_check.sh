#!/usr/bin/env bash
# gpu_check.sh — the one command for the GPU machine: build the extension with
# the CUDA kernels, run the whole test suite (GPU tests included), run the
# kernel tests under compute-sanitizer memcheck, run the benchmarks, and print
# a short table last. Logs go to $OUT (or build/gpu_check).
#
#   bash tools/gpu_check.sh                 # everything
#   PHASES="build test" bash tools/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PHASES=${PHASES:-"build test sanitize bench"}
PY=${PYTHON:-python3}
declare -A RESULT

phase() { [[ " $PHASES " == *" $1 "* ]]; }
stamp() { echo; echo "=== $* ($(date +%T))"; }

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
# build for the GPU that is here only (one arch compiles ~4x faster than the default set)
if [ -z "${GPT2_ENGINE_CUDA_ARCHS:-}" ]; then
    cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
    [ -n "$cc" ] && export GPT2_ENGINE_CUDA_ARCHS="$cc"
fi
echo "GPT2_ENGINE_CUDA_ARCHS=${GPT2_ENGINE_CUDA_ARCHS:-default}"

if phase build; then
    stamp build
    t0=$(date +%s)
    if make build PYTHON="$PY" >"$OUT/build.log" 2>&1; then RESULT[build]="ok ($(( $(date +%s) - t0 ))s)"
    else RESULT[build]="FAILED"; tail -40 "$OUT/build.log"; fi
    $PY -c "import gpt2_engine as g; print('built_with_cuda', g.built_with_cuda, 'gpus', g._C.cuda_device_count())"
fi

if phase test; then
    stamp tests
    $PY -m pytest -q -p no:cacheprovider ${TESTS:-tests} 2>&1 | tee "$OUT/tests.log" | tail -25
    RESULT[tests]=$(grep -E "passed|failed|error" "$OUT/tests.log" | tail -1)
fi

if phase sanitize; then
    stamp compute-sanitizer memcheck
    kt=$(ls tests/test_cuda_backend.py tests/test_attention_kernels.py tests/test_flash_attention.py tests/test_fused_decode.py 2>/dev/null)
    timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer --tool memcheck --error-exitcode 9 $PY -m pytest -q -p no:cacheprovider $kt \
        -k "${SANITIZE_K:-not slow}" >"$OUT/sanitizer.log" 2>&1
    rc=$?
    RESULT[sanitizer]="exit $rc; $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1) $(grep -E 'passed|failed' "$OUT/sanitizer.log" | tail -1)"
    tail -5 "$OUT/sanitizer.log"
fi

if phase quickbench; then     # the engine's own figures, no HF columns (minutes, not ten)
    stamp quick benchmarks
    for b in "bench_decode --quick --skip-hf --json $OUT/bench_decode.json" \
             "bench_throughput --quick --skip-hf --json $OUT/bench_throughput.json" \
             "bench_attention --quick" ${EXTRA_BENCH:-}; do
        set -- $b
        echo "--- $b"
        timeout 240 $PY benchmarks/$1.py "${@:2}" 2>&1 | tee -a "$OUT/bench.log" | grep -v "^\[" | tail -30
    done
    for bs in ${PROFILE_BATCHES:-1 256}; do
        timeout 120 $PY benchmarks/profile_decode.py --batch $bs 2>&1 | tee -a "$OUT/profile.log" | tail -25
    done
    RESULT[bench]="see bench.log, profile.log"
fi

if phase bench; then
    stamp benchmarks
    $PY benchmarks/run_all.py ${BENCH_ARGS:---quick} --out "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" | tail -60
    RESULT[bench]="see bench.log"
fi

echo
echo "=== gpu_check summary ($(head -2 "$OUT/gpu.txt" | tail -1))"
for k in build tests sanitizer bench; do
    [ -n "${RESULT[$k]:-}" ] && printf '%-10s %s\n' "$k" "${RESULT[$k]}"
done
