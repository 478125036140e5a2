#!/bin/bash
# drcn-lite-photo: fine-tune drcn-lite on degraded (blur/noise/JPEG 4:2:0) T91 + BSD200 colour.
cd "$(git rev-parse --show-toplevel)"
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
exec drcn train --data ../shared/data/T91 --data ../shared/data/BSD200 \
  --init drcn-lite -F 64 -D 16 --scale 2 --scale 3 --scale 4 \
  --downscale 1.0 --downscale 0.7 --stride 27 --batch 16 --steps 1500 \
  --lr 3e-4 --warmup 50 --alpha 0 --schedule cosine \
  --degrade "blur:0.3-1.2@0.25,noise:1-10@0.4,jpeg:30-95@0.85,clean:0.1" --degrade-copies 2 \
  --val-data ../shared/data/Set5 --val-degrade jpeg:75 --val-every 500 --precision bf16 \
  --name drcn-lite-photo --out runs/drcn-lite-photo "$@"
