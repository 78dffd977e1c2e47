#!/usr/bin/env bash
# Issue 18's GPU checks, one script for one device call (bench/RESULTS.md records what it printed):
#   1. `kernels: liger` against the eager path: loss and gradients of one step, 2-layer Vicuna-7B and
#      StableLM-1.6B shapes (bench/throughput/check_liger.py);
#   2. bench/train_throughput.py rows, StableLM-1.6B and Vicuna-7B shapes, ragged lengths in [L/3, L]:
#      padded, packed, packed + per-layer compile, + liger (a profile of the 1.6B one), most telling first;
#      each row is skipped when what is left of BUDGET seconds cannot hold it.
# SET=first is what was run for bench/RESULTS.md (H200, one call). Its "packed" rows pack into rows of
# --seq-len 1024, and the ragged lengths are in [628, 1024] (576 image tokens), so no two samples fit a
# row there: those rows equal the padded ones. SET=next (the default) is what that run left open: packing
# into rows of 2048, per-layer compile without liger on full-length rows, liger against an fp32 step.
# SET=run: SET=next's 1.6B rows (they stopped on a config check under transformers 5.17) and `vlmtrain run`
# itself on the 1.6B shape (bench/throughput/trainer_gpu.py: a synthetic 665k-shaped blend, the whole
# command; its datasets/dill/multiprocess wheels travel in $WHEELS too).
# SET=profile: what SET=run left open: the LM head's GEMM kernels by row count, a profile of `vlmtrain run`,
# the benchmark loop under amp on the same shapes, `vlmtrain run` through DeepSpeed ZeRO-2 (bf16 weights, fp32
# master copy in the optimizer: the deepspeed, hjson and pydantic wheels in $WHEELS) and with compile alone.
# Its eight files: gpu.txt, lm_head.jsonl, rows.jsonl, err.txt, runs.jsonl, run_err.txt,
# profile_vlmtrain_run.txt, skipped.txt (tee the output nowhere else under $OUT).
# SET=sync: SET=profile's `vlmtrain run` rows again after the host syncs in its steps were taken out (the
# Trainer's NaN filter, the trainer's own counts of the batch on the device), the profiled one first: its
# profile now says how much of the wall time the GPU ran kernels; and how much a log row every step costs
# (logging_steps: 1, as LLaVA's scripts log, reads the loss and gradient norm back each step).
# SET=forward: what SET=sync left unmeasured: the model's read-backs moved to the start of its forward (943eb66),
# profiled as before, and `kernels: liger` through `vlmtrain run` (the benchmark loop's rows only so far).
# liger-kernel is not on the lent machine: its wheel travels in $WHEELS (bench/throughput/wheels.sh fetches
# every wheel these sets install). Run from the folder that holds vlmtrain/, vlmdata/, bench/ and configs/
# (PYTHONPATH is set to it).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
BUDGET=${BUDGET:-335}
WHEELS=${WHEELS:-whl}
START=$SECONDS
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH=$PWD
left() { echo $(( BUDGET - (SECONDS - START) )); }
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site || echo "wheel install failed"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
python3 -c "import liger_kernel.transformers.monkey_patch as m, importlib.metadata as md; print('liger-kernel', md.version('liger_kernel'), 'ok')" 2>&1 | tail -1 | tee -a "$OUT/gpu.txt"

SET=${SET:-next}
if [ "$SET" = run ] || [ "$SET" = profile ] || [ "$SET" = sync ] || [ "$SET" = forward ]; then
  :  # check_liger ran in SET=next's call
elif [ "$SET" = first ]; then
  timeout 70 python3 -m bench.throughput.check_liger 2>&1 | grep '^{' | tee "$OUT/liger_check.jsonl"
else  # the same weights also through one fp32 step: is liger's difference bf16 rounding?
  timeout 110 python3 -m bench.throughput.check_liger --fp32-ref 2>&1 | tee "$OUT/liger_log.txt" | grep '^{' | tee "$OUT/liger_check.jsonl"
fi

fits() {  # fits LABEL SECONDS: does what is left of BUDGET hold a row that needs SECONDS? (else say it was skipped)
  local t; t=$(left)
  if [ "$t" -lt "$2" ]; then echo "skipped (${t}s left): $1" | tee -a "$OUT/skipped.txt"; return 1; fi
}
failed() {  # failed LABEL ERRFILE: one line naming the row and its error's last lines
  echo "FAILED: $1: $(tail -3 "$2" | tr '\n' ' ' | cut -c1-400)" | tee -a "$OUT/skipped.txt"
}
row() {  # row LABEL SECONDS ARGS...: one bench/train_throughput.py process, appended to rows.jsonl
  local label=$1 need=$2; shift 2
  fits "$label" "$need" || return
  local t line; t=$(left)
  line=$(timeout $(( t < 150 ? t : 150 )) python3 bench/train_throughput.py --json-line --steps 8 --warmup 3 "$@" \
         2>"$OUT/err.txt" | grep '^{' | tail -1)
  if [ -n "$line" ]; then
    python3 -c "import json,sys; r=json.loads(sys.argv[1]); r['label']=sys.argv[2]; print(json.dumps(r))" "$line" "$label" \
      | tee -a "$OUT/rows.jsonl" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(f\"{r['label']:44s} {r['step_s']*1000:7.1f} ms {r['tokens_per_s']:9.0f} tok/s MFU {100*(r['mfu'] or 0):5.1f}% pad {100*r['padding_frac']:4.1f}% {(r['max_mem_gib'] or 0):.1f} GiB\")"
  else
    failed "$label" "$OUT/err.txt"
  fi
}
B16="--precision bf16 --batch-size 16 --seq-len 1024"
B4="--llm vicuna-7b --precision bf16 --batch-size 4 --seq-len 1024"
P2K="--packing --pack-length 2048"
trow() {  # trow LABEL SECONDS ARGS...: one `vlmtrain run` (bench/throughput/trainer_gpu.py), appended to runs.jsonl
  local label=$1 need=$2; shift 2
  fits "$label" "$need" || return
  local t line; t=$(left)
  line=$(timeout "$t" python3 -m bench.throughput.trainer_gpu --label "$label" --timeout "$t" "$@" 2>>"$OUT/run_err.txt" | grep '^{' | tail -1)
  if [ -z "$line" ]; then failed "$label" "$OUT/run_err.txt"; return; fi
  echo "$line" | tee -a "$OUT/runs.jsonl" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print(r.get('label'), 'ERROR' if 'error' in r or not r else f\"{r['tokens_per_s']:9.0f} tok/s MFU {100*(r['mfu'] or 0):5.1f}% data wait {100*r['data_wait_frac']:4.1f}% pad {100*r['padding_frac']:4.1f}% whole command {r['wall_s']} s\")"
}
trow_profiled() {  # the profiled `vlmtrain run` of SET=profile, sync and forward (writes $OUT/profile_vlmtrain_run.txt)
  trow "vlmtrain run 1.6B b16 packed layers, profiled"  130 --set packing=true --set compile=layers --steps 22 \
       --profile 20,21 --profile-out "$OUT/profile_vlmtrain_run.txt"
}
trow_padded_layers() { trow "vlmtrain run 1.6B b16 padded layers" 100 --set compile=layers; }
if [ "$SET" = forward ]; then  # SET=sync's rows on the code after it, and liger through the whole command
  trow_profiled
  trow_padded_layers
  trow "vlmtrain run 1.6B b16 packed layers liger"      110 --set packing=true --set compile=layers --set kernels=liger
  echo "done in $(( SECONDS - START )) s"
  exit 0
fi
if [ "$SET" = sync ]; then  # SET=profile's runs, without the host syncs in a step
  trow_profiled
  trow_padded_layers
  trow "vlmtrain run 1.6B b16 padded layers, log every 10 steps" 110 --set compile=layers --set logging_steps=10 \
       --steps 40 --skip 10 --samples 700
  echo "done in $(( SECONDS - START )) s"
  exit 0
fi
if [ "$SET" = profile ]; then  # what SET=run left open (bench/RESULTS.md, 2026-12-04): why `vlmtrain run` is at 26%
  timeout 60 python3 -m bench.throughput.lm_head_gemm 2>"$OUT/err.txt" | tee "$OUT/lm_head.jsonl" | cut -c1-300
  trow_profiled
  row "1.6B b16 L1024 ragged padded amp"                  30 $B16 --ragged --precision amp
  RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29511 \
  trow "vlmtrain run 1.6B b16 padded, DeepSpeed ZeRO-2"  150 --set deepspeed="$PWD/configs/deepspeed/zero2.json"
  trow_padded_layers
  echo "done in $(( SECONDS - START )) s"
  exit 0
fi
if [ "$SET" = run ]; then  # after SET=next's 1.6B rows stopped on the config check (transformers 5.17): those, and `vlmtrain run`
  row "1.6B b16 ragged packed 2048 layers"               55 $B16 --ragged $P2K --compile-layers --profile "$OUT/profile_1.6b_packed.txt"
  trow "vlmtrain run 1.6B b16 packed layers"            120 --set packing=true --set compile=layers
  row "1.6B b16 L1024 ragged padded"                     30 $B16 --ragged
  row "1.6B b16 ragged packed 2048"                      30 $B16 --ragged $P2K
  row "1.6B b16 L1024 full layers"                       55 $B16 --compile-layers
  trow "vlmtrain run 1.6B b16 padded"                    90
  row "1.6B b16 ragged packed 2048 layers liger"         60 $B16 --ragged $P2K --compile-layers --liger
  echo "done in $(( SECONDS - START )) s"
  exit 0
fi
if [ "$SET" = next ]; then
  row "1.6B b16 L1024 ragged padded"                     30 $B16 --ragged
  row "1.6B b16 ragged packed 2048"                      30 $B16 --ragged $P2K
  row "1.6B b16 ragged packed 2048 layers"               55 $B16 --ragged $P2K --compile-layers --profile "$OUT/profile_1.6b_packed.txt"
  row "1.6B b16 L1024 full layers"                       55 $B16 --compile-layers
  row "1.6B b16 ragged packed 2048 layers liger"         60 $B16 --ragged $P2K --compile-layers --liger
  row "7B b4 ragged packed 2048 layers"                  60 $B4 --ragged $P2K --compile-layers
  row "7B b4 ragged packed 2048 layers liger"            60 $B4 --ragged $P2K --compile-layers --liger
  echo "done in $(( SECONDS - START )) s"
  exit 0
fi
row "1.6B b16 L1024 ragged padded"               30 $B16 --ragged
row "1.6B b16 L1024 ragged packed"               30 $B16 --ragged --packing
row "1.6B b16 L1024 ragged packed layers"        55 $B16 --ragged --packing --compile-layers
row "1.6B b16 L1024 ragged packed layers liger"  60 $B16 --ragged --packing --compile-layers --liger --profile "$OUT/profile_1.6b.txt"
row "7B b4 L1024 ragged padded"                  30 $B4 --ragged
row "7B b4 L1024 ragged packed layers liger"     60 $B4 --ragged --packing --compile-layers --liger
row "1.6B b16 L1024 full layers liger"           55 $B16 --compile-layers --liger
row "7B b4 L1024 ragged packed"                  30 $B4 --ragged --packing
echo "done in $(( SECONDS - START )) s"
