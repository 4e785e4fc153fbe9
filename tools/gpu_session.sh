#!/usr/bin/env bash
# gpu_session.sh — one device call of a work session: build for this GPU, the whole
# test suite (under timeouts, FLASH tests first), then the benchmarks named in $BENCH
# (space-separated steps); logs in $OUT.
# TESTS="paths and args": run only those tests. MEMCHECK_ARGS: pytest arguments for the
# memcheck step (compute-sanitizer).
# Steps: flashdec (bench_flash --decode-only + each variant of $FLASH_VARIANTS, separated by
# white space, or by '|' where a value holds spaces), flash (--prefill-only),
# flashab (--ab: the TMA prefill of the default build and of each '|'-separated variant of
# $FLASH_AB, e.g. "KERNELS=baseline/kernels|FLASH_SM90_ROWSUM_MMA=0", in the same rounds),
# flashbs (--prefill-only --block-sizes $FLASH_BLOCK_SIZES, default 16,64,128),
# attn (bench_attention --quick), decode (bench_decode --quick --skip-hf),
# tput (bench_throughput --quick --skip-hf), e2e (bench_prefill_e2e --quick), prof1 / prof256 (profile_decode),
# memcheck (compute-sanitizer over $MEMCHECK_ARGS), ncufused (ncu on one fused batch-1
# decode launch of the $FUSED_SHAPE shape, default gpt2), ncuflash (ncu on one FLASH
# prefill launch per ';'-separated set of benchmarks/profile_flash_prefill.py arguments
# in $FLASH_NCU_ARGS), ncudec (ncu on one FLASH and one PAGED decode launch per
# ';'-separated set of benchmarks/profile_decode_attn.py arguments in $DEC_NCU_ARGS).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/gpu_session}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
# SKIP_BUILD=1: no extension build (bench_flash steps build their own libraries)
[ "${SKIP_BUILD:-0}" = 1 ] || PHASES=build OUT="$OUT" bash tools/gpu_check.sh 2>&1 | tail -5
# tests under a time limit (a hung kernel must not eat the call): FLASH first, then the rest
run_tests() {
    echo "=== pytest $* ($(date +%T))"
    timeout -k 10 ${TEST_TIMEOUT:-300} $PY -m pytest -q -p no:cacheprovider "$@" 2>&1 | tee -a "$OUT/tests.log" | tail -6
    echo "rc=${PIPESTATUS[0]}"
}
if [ -n "${TESTS:-}" ]; then
    run_tests $TESTS
elif [ "${SKIP_TESTS:-0}" != 1 ]; then
    run_tests tests/test_flash_attention.py
    run_tests tests --ignore=tests/test_flash_attention.py
fi
for step in ${BENCH:-}; do
    echo "=== $step ($(date +%T))"
    case $step in
        flashdec) # variants split at '|' when there is one (values with spaces), else at white space
                  if [[ "${FLASH_VARIANTS:-}" == *"|"* ]]; then IFS='|' read -ra vs <<< "$FLASH_VARIANTS"
                  else read -ra vs <<< "${FLASH_VARIANTS:-}"; fi
                  args=(--decode-only); for v in "${vs[@]}"; do args+=(--variant "$v"); done
                  timeout 400 $PY benchmarks/bench_flash.py "${args[@]}" 2>&1 | tee "$OUT/flash.log" | grep -v "^\[" ;;
        flash) timeout -k 10 150 $PY benchmarks/bench_flash.py --prefill-only 2>&1 | tee "$OUT/flash_full.log" | grep -v "^\[" ;;
        flashab) IFS='|' read -ra vs <<< "${FLASH_AB:-}"; args=(--ab); for v in "${vs[@]}"; do args+=(--variant "$v"); done
                 timeout -k 10 400 $PY benchmarks/bench_flash.py "${args[@]}" 2>&1 | tee "$OUT/flash_ab.log" | grep -v "^\[" ;;
        flashbs) timeout -k 10 200 $PY benchmarks/bench_flash.py --prefill-only --block-sizes ${FLASH_BLOCK_SIZES:-16,64,128} \
                     2>&1 | tee "$OUT/flash_bs.log" | grep -v "^\[" ;;
        attn) timeout 200 $PY benchmarks/bench_attention.py --quick 2>&1 | tee "$OUT/attn.log" | tail -30 ;;
        decode) timeout 330 $PY benchmarks/bench_decode.py --quick --skip-hf 2>&1 | tee "$OUT/decode.log" | grep -v "^\[" | tail -20 ;;
        e2e) timeout 240 $PY benchmarks/bench_prefill_e2e.py --quick 2>&1 | tee "$OUT/e2e.log" | grep -v "^\[" | tail -8 ;;
        tput) timeout 240 $PY benchmarks/bench_throughput.py --quick --skip-hf 2>&1 | tee "$OUT/tput.log" | grep -v "^\[" | tail -20 ;;
        memcheck) eval "margs=($MEMCHECK_ARGS)"   # shell words: -k "a and not b" stays one argument
                  timeout ${MEMCHECK_TIMEOUT:-300} compute-sanitizer --tool memcheck --error-exitcode 9 \
                      $PY -m pytest -q -p no:cacheprovider "${margs[@]}" >"$OUT/memcheck.log" 2>&1
                  echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|passed|failed" "$OUT/memcheck.log" | tail -3 ;;
        ncufused) # Nsight Compute on one fused batch-1 decode launch (stall reasons, memory).
                  # A small KV cache: ncu saves and restores all device memory per replay pass,
                  # and at the default 0.9 of an H200 that alone ran past 4 minutes.
                  GPT2_ENGINE_FUSED_DECODE=1 timeout 300 ncu --clock-control none --section SpeedOfLight \
                      --section WarpStateStats --section MemoryWorkloadAnalysis --section SchedulerStats \
                      -k regex:fused_decode -s 8 -c 1 $PY -c "import sys; sys.path.insert(0, 'benchmarks')
import common
from gpt2_engine import LLM, SamplingParams
llm = LLM(model=common.make_checkpoint('${FUSED_SHAPE:-gpt2}', 'float16'), dtype='float16', device='cuda', gpu_memory_utilization=0.05)
llm.generate([{'prompt_token_ids': list(range(16))}], SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True), use_tqdm=False)" \
                      2>&1 | tee "$OUT/ncu_fused.log" | tail -80 ;;
        ncuflash) # Nsight Compute on one FLASH prefill launch (the TMA kernel) per ';'-separated
                  # argument set of $FLASH_NCU_ARGS (profile_flash_prefill.py; default B=16
                  # S=1024 d=64 block size 16): throughput, issue, and the stall reasons
                  IFS=';' read -ra sets <<< "${FLASH_NCU_ARGS:---block-size 16}"
                  for a in "${sets[@]}"; do
                      echo "--- ncu: profile_flash_prefill.py $a"
                      timeout 200 ncu --clock-control none --section SpeedOfLight --section SchedulerStats \
                          --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
                          -k regex:flash_attention_sm90a_kernel -c 1 \
                          $PY benchmarks/profile_flash_prefill.py $a 2>&1 | tee -a "$OUT/ncu_flash.log" \
                          | grep -v "^==PROF==" | grep -E "prefill|Duration|Throughput|Eligible|Issued|stalled" | awk '$NF != "0" || !/stalled/'
                  done ;;
        ncudec) # Nsight Compute on one FLASH and one PAGED decode launch per ';'-separated
                # argument set of $DEC_NCU_ARGS (profile_decode_attn.py; default B=64 L=1024 d=64):
                # DRAM bytes and throughput, L2 requests, occupancy, the stall reasons
                IFS=';' read -ra sets <<< "${DEC_NCU_ARGS:---batch 64}"
                for a in "${sets[@]}"; do
                    echo "--- ncu: profile_decode_attn.py $a"
                    timeout 200 ncu --clock-control none --section SpeedOfLight --section Occupancy \
                        --metrics "dram__bytes_read.sum,lts__t_requests_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sector_op_read_hit_rate.pct,sm__warps_active.avg.per_cycle_active,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" \
                        -k "regex:flash_decode_kernel|paged_attention_decode_kernel" \
                        $PY benchmarks/profile_decode_attn.py $a 2>&1 | tee -a "$OUT/ncu_dec.log" \
                        | grep -v "^==PROF==" | grep -E "decode|Duration|Throughput|dram__|lts__|warps_active|Occupancy|stalled" | awk '$NF != "0" || !/stalled/'
                done ;;
        prof*) timeout 120 $PY benchmarks/profile_decode.py --batch ${step#prof} ${PROF_ARGS:-} 2>&1 | tee "$OUT/$step.log" | tail -30 ;;
    esac
done
