#!/usr/bin/env bash
# Every benchmark on a CUDA machine in one go (bf16 where the script trains, realistic batch sizes), each figure
# appended to bench/RESULTS.md under a heading naming the GPU. Run from the repository root after `make install`:
#   bash bench/gpu.sh            # all benchmarks
#   QUICK=1 bash bench/gpu.sh    # fewer repeats, for a first look
# Settings (environment): PY (the interpreter), RESULTS (the file to append to), BENCH_TIMEOUT (seconds one
# benchmark may run before it is stopped and recorded as failed), LOGDIR (keep each benchmark's log there), ONLY
# (a comma-separated list of the benchmarks to run, e.g. ONLY=scale,quant; the names are those printed after ==).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${RESULTS:-bench/RESULTS.md}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-1800}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
LOGS=${LOGDIR:-$TMP}
mkdir -p "$LOGS"

GPU=$($PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU: bench/gpu.sh is for GPU machines'; print(torch.cuda.get_device_name(0))")
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")
REPEATS=${QUICK:+2}
REPEATS=${REPEATS:-5}
{
  echo
  echo "## GPU: $GPU (x$NGPU), $(date -u +%Y-%m-%d)"
  echo
  echo "\`bash bench/gpu.sh\`, torch $($PY -c 'import torch; print(torch.__version__)'), CUDA $($PY -c 'import torch; print(torch.version.cuda)'). Absolute times are this GPU's."
} >> "$OUT"

run() {  # run NAME CMD...: the script's markdown goes to RESULTS.md; a failing benchmark is recorded, not hidden
  local name=$1; shift
  if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then return 0; fi
  echo "== $name"
  local start=$SECONDS
  if timeout "$BENCH_TIMEOUT" "$@" > "$LOGS/$name.log" 2>&1; then
    echo "ok: $name ($((SECONDS - start)) s)"
  else
    local rc=$?
    local why="failed on this machine (exit $rc)"
    [ "$rc" = 124 ] && why="stopped after BENCH_TIMEOUT=$BENCH_TIMEOUT s"
    echo "FAILED: $name, $why"; tail -20 "$LOGS/$name.log"
    printf '\n### %s\n\n%s:\n\n```text\n%s\n```\n' "$name" "$why" "$(tail -20 "$LOGS/$name.log")" >> "$OUT"
  fi
}

# FSDP needs one GPU per process: 1, 2 and 4 processes as far as the GPUs go.
PROCS=1
[ "$NGPU" -ge 2 ] && PROCS=1,2
[ "$NGPU" -ge 4 ] && PROCS=1,2,4
run scale $PY bench/scale.py --procs "$PROCS" --steps 10 --global-batch 32 --write "$OUT"
run trainer_overhead $PY bench/trainer_overhead.py --repeats "$REPEATS" --batch-size 128 --write "$OUT"
run vpt_speed $PY bench/vpt_speed.py --repeats "$REPEATS" --write "$OUT"
run textpt_vs_peft $PY bench/textpt_vs_peft.py --repeats "$REPEATS" --batch 32 --write "$OUT"
run generate_cache $PY bench/generate_cache.py --repeats "$REPEATS" --write "$OUT"  # 64 requests of one task, P = 100: prompt cache / none / PEFT
run vlm_speed $PY bench/vlm_speed.py --shape llava_7b --dtype bfloat16 --repeats "$REPEATS" --batch 4 --write "$OUT"
# packed / padded train steps on Rotten Tomatoes' real lengths (the SmolLM2-135M and rotten_tomatoes assets)
run packing $PY bench/packing.py --batches $((REPEATS * 4)) --batch 32 --dtype bfloat16 --write "$OUT"
run compile $PY bench/compile.py --size real --steps 30 --warmup 5 --mixed-precision bf16 --write "$OUT"
run clip_text_speed $PY bench/clip_text_speed.py --repeats "$REPEATS" --device cuda --write "$OUT"
# frozen-weight bytes of fp32 / int8 / int4 / nf4 on a random Llama of SmolLM2-135M shapes (no download needed), and
# per process with nf4 under FSDP over 2 processes (counted bytes; those processes run on the CPU)
run quant $PY bench/quant.py --random --fsdp 2 --write "$OUT"
# vLLM fed textpt prompts as prompt_embeds: greedy outputs vs textpt's generate, tokens/s vs plain token prompts (needs prompttune[vllm])
run vllm_check $PY bench/vllm_check.py --write "$OUT"
echo "figures appended to $OUT"
