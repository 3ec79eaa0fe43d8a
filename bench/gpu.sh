#!/usr/bin/env bash
# Every benchmark on a CUDA machine in one go (bf16 where the script trains, realistic batch sizes), each figure
# appended to bench/RESULTS.md under a heading naming the GPU. Run from the repository root after `make install`:
#   bash bench/gpu.sh            # all benchmarks
#   QUICK=1 bash bench/gpu.sh    # fewer repeats, for a first look
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=bench/RESULTS.md
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

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
  echo "== $name"
  if "$@" > "$TMP/$name.log" 2>&1; then
    echo "ok: $name"
  else
    echo "FAILED: $name (see below)"; tail -20 "$TMP/$name.log"
    printf '\n### %s\n\nfailed on this machine:\n\n```text\n%s\n```\n' "$name" "$(tail -20 "$TMP/$name.log")" >> "$OUT"
  fi
}

run trainer_overhead $PY bench/trainer_overhead.py --repeats "$REPEATS" --batch-size 128 --write "$TMP/trainer.md"
[ -f "$TMP/trainer.md" ] && { echo; cat "$TMP/trainer.md"; } >> "$OUT"
run vpt_speed $PY bench/vpt_speed.py --repeats "$REPEATS" --out "$TMP/vpt.md"
[ -f "$TMP/vpt.md" ] && { echo; cat "$TMP/vpt.md"; } >> "$OUT"
run textpt_vs_peft $PY bench/textpt_vs_peft.py --repeats "$REPEATS" --batch 32 --out "$TMP/textpt.md"
[ -f "$TMP/textpt.md" ] && { echo; cat "$TMP/textpt.md"; } >> "$OUT"
run clip_text_speed $PY bench/clip_text_speed.py --repeats "$REPEATS" --device cuda
{ echo; echo '### clip_text_speed'; echo; echo '```text'; cat "$TMP/clip_text_speed.log"; echo '```'; } >> "$OUT"
# FSDP needs one GPU per process: 1, 2 and 4 processes as far as the GPUs go.
PROCS=1
[ "$NGPU" -ge 2 ] && PROCS=1,2
[ "$NGPU" -ge 4 ] && PROCS=1,2,4
run scale $PY bench/scale.py --procs "$PROCS" --steps 10 --global-batch 32 --write "$OUT"
[ -f bench/quant.py ] && run quant $PY bench/quant.py --write "$OUT"
echo "figures appended to $OUT"
