#!/usr/bin/env bash
# The prepared GPU training run: train DRCN F=64, then F=256, on the 291 set (T91 + BSD200-Y)
# with at most 7 minutes of training in all; measure both on Set5 and Set14 x2/x3/x4 (evaluation
# protocol, strict fp32) beside the shipped weights; then the inference benchmark (bench_engine.py).
#
#   data (git-ignored, carried to the device with carry: [".devdata"]):
#                    mkdir -p .devdata && cp -r ../shared/data/{T91,BSD200-Y,Set5,Set14} .devdata/
#   device machine:  bash benchmarks/gpu_train.sh          (timeout_s 590; results in $OUT)
#   CPU dry run:     GPU_TRAIN_DRY=1 OUT=/tmp/out bash benchmarks/gpu_train.sh
#                    (tiny models, seconds instead of minutes, Set5 only: catches typos, not quality)
#
# Training time is fitted by `drcn train --minutes`; F=256 gets what the wall budget leaves after
# F=64, keeping room for its data, its measurements and the benchmark.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
WALL=${GPU_TRAIN_WALL:-570}        # seconds this whole script may take (run it with timeout_s 590)
OUT=${OUT:-runs/gpu-out}
D=${DEVDATA:-.devdata}
RUNS=runs/gpu
mkdir -p "$OUT" "$RUNS"
exec > >(tee "$OUT/gpu_train.log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

python3 -c "import torch, drcn_plugin.cli; print('torch', torch.__version__, 'cuda:',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')" || exit 1

drcn() { python3 -c 'import sys; from drcn_plugin.cli import main; sys.argv[0] = "drcn"; main()' "$@"; }
left() { echo $(( WALL - ($(date +%s) - START) )); }
minutes() { python3 -c "print(round($1 / 60, 4))"; }

if [ -n "${GPU_TRAIN_DRY:-}" ]; then
  F_SMALL=8; F_BIG=12; REC=3; T_SMALL=4; T_BIG_MAX=6; T_MIN=3; RESERVE=30; BENCH_S=20
  BENCH_DEVICE=cpu; DATA=(--data "$D/Set5"); TESTS=(--test-data "$D/Set5"); SCALES=(-s 3)
  BASE_SMALL=weights/drcn-f64-d16-x234.safetensors; BASE_BIG=$BASE_SMALL
else
  F_SMALL=64; F_BIG=256; REC=16; T_SMALL=100; T_BIG_MAX=300; T_MIN=20; RESERVE=135; BENCH_S=90
  BENCH_DEVICE=cuda
  DATA=(--data "$D/T91" --data "$D/BSD200-Y"); TESTS=(--test-data "$D/Set5" --test-data "$D/Set14")
  SCALES=(-s 2 -s 3 -s 4)
  BASE_SMALL=weights/drcn-f64-d16-x234.safetensors; BASE_BIG=weights/drcn-f256-d16-x234.safetensors
fi
# The recipe: 72x72 patches (more pixels see a full 41x41 receptive field than with 41 or 48),
# Adam + warm-up + cosine, recursive supervision fading out over the first 30 % of the steps.
COMMON=("${DATA[@]}" --val-data "$D/Set5" "${TESTS[@]}" "${SCALES[@]}" -D "$REC" --patch 72
        --stride 36 --val-every 2000 --warmup 300 --alpha-decay 0.3 --clip 0.5)

run() {  # run NAME F BATCH LR SECONDS BASELINE
  local name=$1 f=$2 batch=$3 lr=$4 secs=$5 base=$6
  echo "== $name: F=$f, batch $batch, lr $lr, $secs s of training ($(left) s of wall budget left)"
  drcn train "${COMMON[@]}" -F "$f" --batch "$batch" --lr "$lr" --minutes "$(minutes "$secs")" \
    --baseline "$base" --name "$name" --out "$RUNS/$name" --overwrite
  cp "$RUNS/$name/$name.safetensors" "$RUNS/$name/$name.md" "$OUT/" 2>/dev/null
  cp "$RUNS/$name/log.json" "$OUT/$name.log.json" 2>/dev/null
}

run "drcn-f$F_SMALL-d$REC-x234-v2" "$F_SMALL" 56 5e-4 "$T_SMALL" "$BASE_SMALL"
T_BIG=$(( $(left) - RESERVE )); T_BIG=$(( T_BIG < T_BIG_MAX ? T_BIG : T_BIG_MAX ))
if [ "$T_BIG" -gt "$T_MIN" ]; then
  run "drcn-f$F_BIG-d$REC-x234-v2" "$F_BIG" 28 2e-4 "$T_BIG" "$BASE_BIG"
else
  echo "== skipping F=$F_BIG: only $(left) s of wall budget left"
fi

# Verdict: does each new model beat the shipped one on every measured number?
python3 - "$RUNS"/*/log.json <<'EOF'
import json, sys
for path in sys.argv[1:]:
    log = json.load(open(path))
    if "measured" not in log:
        print(f"{path}: unfinished"); continue
    print(f"{log['weights']}: {log['step']} steps in {log['train_seconds']:.0f} s "
          f"({log['steps_per_s']} steps/s on {log['device_name']}), {log['patches']} patches")
    wins = []
    for ds, res in log["measured"].items():
        for s, r in res.items():
            b = log["baseline"][ds][s]
            wins.append(r["psnr"] > b["psnr"])
            print(f"  {ds:6s} x{s}: {r['psnr']:.3f} / {r['ssim']:.4f}  shipped {b['psnr']:.3f} / "
                  f"{b['ssim']:.4f}  {r['psnr'] - b['psnr']:+.3f} dB")
    print(f"  beats the shipped weights on all {len(wins)}: {'YES' if all(wins) else 'no'}")
EOF

if [ -f benchmarks/bench_engine.py ]; then
  B=$(( $(left) - 5 )); B=$(( B < BENCH_S ? B : BENCH_S ))
  if [ "$B" -gt 10 ]; then
    echo "== bench_engine.py (timeout $B s)"
    timeout "$B" python3 benchmarks/bench_engine.py --device "$BENCH_DEVICE" \
      --json "$OUT/bench_$BENCH_DEVICE.json"
  fi
fi
echo "== done in $(( $(date +%s) - START )) s"
