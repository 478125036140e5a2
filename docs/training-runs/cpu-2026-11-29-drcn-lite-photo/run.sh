#!/bin/bash
# drcn-lite-photo, as shipped: four stages, each a fine-tune of the one before, all from drcn-lite,
# then run B32 from stage 4 and a blend of its layers with drcn-lite.
# Stage 1 is ../cpu-2026-11-29-photo/run.sh stopped at step 500 (drcn-photo-step500.safetensors).
# Stage 2 starts from it and was stopped at step 1000 (stage2-step1000.safetensors here);
# stage 3 starts from that with a lower learning rate and a moving average of the weights
# (stage3-ema.safetensors); stage 4 starts from stage 3 with T91 given five times (about half of
# the patches instead of 15%) and was stopped at step 1750 (stage4-ema.safetensors, shipped until
# 2026-12-01). B32 starts from stage 4 with batch 32 and drcn-lite as the teacher of the clean
# patches, stopped at step 1000 (b32-step1000-ema.safetensors); `run.sh ship` blends its layers
# with drcn-lite's (blend_layers.py) into the shipped file.
# One thread per run (two ran side by side on the 2-core machine); --stop-at/--resume continue.
cd "$(git rev-parse --show-toplevel)"
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
here=docs/training-runs/cpu-2026-11-29-drcn-lite-photo
common=(--data ../shared/data/T91 --data ../shared/data/BSD200 -F 64 -D 16
        --scale 2 --scale 3 --scale 4 --downscale 1.0 --downscale 0.7 --stride 27 --batch 16
        --warmup 50 --alpha 0 --schedule cosine --degrade-copies 2
        --degrade "noise:1-6@0.2,jpeg:30-95,clean:0.5"
        --val-data ../shared/data/Set5 --val-degrade jpeg:75 --val-every 250 --precision bf16
        --name drcn-lite-photo)
if [ "$1" = stage2 ]; then
  exec drcn train "${common[@]}" --init docs/training-runs/cpu-2026-11-29-photo/drcn-photo-step500.safetensors \
    --lr 1e-4 --steps 6000 --stop-at 1000 --out runs/photo-stage2
fi
# a stopped run exports nothing: write its moving average in the shipped format
export_ema() {
  python - "$1" <<'PY'
import sys
import torch
from pathlib import Path
from drcn_plugin.model import DRCN
from drcn_plugin.training.checkpoint import export_safetensors
ema = torch.load(f"{sys.argv[1]}/last.pt", weights_only=True)["ema"]
model = DRCN(64, 16)
model.load_state_dict({k.removeprefix("module."): v for k, v in ema.items() if k != "n_averaged"})
export_safetensors(model, Path(sys.argv[1]) / "drcn-lite-photo.safetensors")
PY
}
t91=../shared/data/T91
if [ "$1" = stage4 ]; then
  drcn train --data $t91 --data $t91 --data $t91 --data $t91 --data $t91 "${common[@]:2}" \
    --init "$here/stage3-ema.safetensors" --lr 1e-4 --steps 4500 --stop-at 1750 --ema 0.999 \
    --seed 4 --out runs/photo-stage4 "${@:2}" && export_ema runs/photo-stage4
  exit
fi
if [ "$1" = b32 ]; then
  drcn train --data $t91 --data $t91 --data $t91 --data $t91 --data $t91 "${common[@]:2}" \
    --init "$here/stage4-ema.safetensors" --batch 32 --teacher drcn-lite \
    --degrade "noise:1-6@0.2,jpeg:30-95,clean:0.55" --val-degrade "" --lr 1e-4 --steps 2500 \
    --stop-at 1000 --ema 0.999 --seed 11 --out runs/photo-b32 "${@:2}" && export_ema runs/photo-b32
  exit
fi
if [ "$1" = ship ]; then
  exec python "$here/blend_layers.py" weights/drcn-photo-f64-d16-x234.safetensors
fi
exec drcn train "${common[@]}" --init "$here/stage2-step1000.safetensors" \
  --lr 5e-5 --steps 3500 --ema 0.999 --out runs/photo-stage3 "$@"
