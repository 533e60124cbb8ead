#!/bin/bash
# The Beauty benchmark on a GPU node: one process per sequence model, sharing the GPU.
# Usage: OUT=results/ bash cluster/beauty-gpu.sh ; then python -m recsys.bench.beauty results/*.json --where "<GPU>"
# One prepared device run: the Beauty benchmark's sequence models, one process per model in
# parallel on the one GPU (each is launch-bound, so they share it well), per-model time budget.
export PYTHONUNBUFFERED=1 RECSYS_BEAUTY_DIR="${RECSYS_BEAUTY_DIR:-../shared/data/amazon-beauty}"
PY="${PY:-python3}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch, numpy, pandas; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'pandas', pandas.__version__)"
start=$(date +%s)
pids=()
for m in ${MODELS:-sasrec sasrec_sampled two_tower two_tower_norec two_tower_sampled}; do
  "$PY" -m recsys.train.beauty_benchmark --models "$m" --device "${DEVICE:-cuda}" ${EXTRA} --threads 2 \
    --epochs 300 --patience "${PATIENCE:-10}" --batch-size "${BS:-128}" --time-budget "${BUDGET:-250}" \
    --out "${OUT:?set OUT to a results folder}/$m.json" >> "$OUT/all.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; echo "pid $p rc $?"; done
echo "total wall $(( $(date +%s) - start ))s"
grep -v '^ \|^{\|^}' "${OUT:?set OUT to a results folder}/all.log" | grep -v ' epoch ' 
nvidia-smi --query-gpu=memory.used --format=csv,noheader
