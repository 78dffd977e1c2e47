#!/usr/bin/env bash
# The stage-3 GPU checks, one script for one device call (bench/RESULTS.md records what it printed):
#   1. one MoE layer, vlmtrain's beside DeepSpeed's, bf16, real phi-2 / StableLM-2 FFN shapes, 16k tokens
#      (also checks the two agree in bf16 on the GPU);
#   2. vlmtrain's training step, stage 2 beside stage 3, on the StableLM-1.6B and phi-2 shapes (tokens/s, MFU).
# DeepSpeed is not on the lent machine: its wheel and its missing requirements travel in .whl (carry it).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 DS_BUILD_OPS=0
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || echo "wheel install failed"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
for shape in phi-2 stablelm; do
  timeout 150 python3 -m bench.moe.bench_layer --device cuda --dtype bf16 --shape $shape --tokens 16384 \
    --repeat 20 --warmup 3 --json "$OUT/layer_$shape.json" 2>&1 | grep -v -i warning | tail -2
done
timeout 420 python3 bench/train_throughput.py --sweep --only moe --steps 10 --warmup 3 --timeout 200 \
  --json "$OUT/moe_throughput.json" 2>&1 | tail -8
