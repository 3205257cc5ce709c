#!/usr/bin/env bash
# For users with a GPU (nothing here has one): checks the CUDA paths end to end on synthetic data.
#   bash bench/gpu_check.sh            # one GPU
#   NGPU=2 bash bench/gpu_check.sh     # also DDP over 2 GPUs (nccl)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
$PY - <<'PY'
import torch
assert torch.cuda.is_available(), "CUDA not available"
print("CUDA devices:", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])
from scenetag.train.distributed import pick_device
assert pick_device("auto").startswith("cuda"), pick_device("auto")
PY
$PY -m scenetag synth "$TMP/data" -n 200
COMMON=(--data "$TMP/data" -q --set train.phases.0.epochs=2 --set train.phases.1.epochs=1 --set train.phases.2.epochs=1 --set "train.views=[orig, flip]")
for amp in "" bf16 fp16; do
  out="$TMP/run_${amp:-fp32}"
  args=("${COMMON[@]}" --out "$out")
  [ -n "$amp" ] && args+=(--amp "$amp")
  echo "== single GPU, amp=${amp:-off}"
  /usr/bin/time -f "%e s wall" $PY -m scenetag train "${args[@]}" | tail -3
done
$PY -m scenetag predict --model "$TMP/run_fp32/best.pt" "$TMP/data/original" --output "$TMP/p.csv" -q && echo "predict on GPU checkpoint: ok"
if [ "${NGPU:-1}" -gt 1 ]; then
  echo "== DDP over $NGPU GPUs (nccl)"
  $PY -m torch.distributed.run --standalone --nproc_per_node="$NGPU" -m scenetag train "${COMMON[@]}" --out "$TMP/ddp" 2>&1 | grep -E "joined|final weights|samples_f1" || true
fi
echo "GPU check finished"
