#!/usr/bin/env bash
# How the shipped CamVid weights (src/aticnet/weights/{aticnet,icnet}-camvid) are made, step by step. Each step
# skips what is done (runs resume, finished runs are reused), so the script can be stopped and run again.
#   benchmarks/ship_camvid.sh ../shared/camvid            # CamVid in the SegNet layout (train/, trainannot/, val/, ...)
# Run it alone on the machine: the training minutes and the latencies it records are only true that way.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: benchmarks/ship_camvid.sh CAMVID_ROOT}
RECIPE=configs/camvid_bf16_15k.yaml   # the recipe chosen on the held-out drive (docs/pretrained.md says why)
OUT=runs/camvid
SHIP=runs/ship
mkdir -p "$SHIP"

# 1. The final models: the recipe on all of CamVid train + val (468 frames), seed 0, no validation split.
python benchmarks/camvid.py final --recipe "$RECIPE" --data-root "$DATA" --out "$OUT"
# 2. The same recipe on the held-out-drive protocol (AtICNet's run is the experiment aticnet_bf16_15000).
python benchmarks/camvid.py claim --recipe "$RECIPE" --models icnet aticnet --seeds 1 --data-root "$DATA" --out "$OUT"
# 3. Those held-out runs on drive 0006R0: single scale (with "mostly missed as"), and with the flip and three scales.
for MODEL in aticnet icnet; do
  HELD=$OUT/claim_bf16_15k/${MODEL}_seed0
  [ -f "$SHIP/${MODEL}_heldout.json" ] || aticnet evaluate --weights "$HELD" --dataset camvid --data-root "$DATA" \
    --split train --drive 0006R0 --workers 0 --json "$SHIP/${MODEL}_heldout.json"
  [ -f "$SHIP/${MODEL}_heldout_tta.json" ] || aticnet evaluate --weights "$HELD" --dataset camvid --data-root "$DATA" \
    --split train --drive 0006R0 --flip --scales 1 1.25 1.5 --workers 0 --json "$SHIP/${MODEL}_heldout_tta.json"
done
# 4. Every deployable form of the final models: latency at two sizes, int8's mIoU change (on val, trained on).
[ -f "$SHIP/deploy/deploy.json" ] || python benchmarks/deploy.py --runs "$OUT/final_bf16_15k/aticnet" \
  "$OUT/final_bf16_15k/icnet" --dataset camvid --data-root "$DATA" --calibration-drive 0001TP \
  --sizes 360x480 1024x2048 --out "$SHIP/deploy"
# 5. The shipped folders: fp16 weights, config.json with the figures, the model card.
for MODEL in aticnet icnet; do
  RUN=$OUT/final_bf16_15k/$MODEL
  KEPT=benchmarks/results/camvid/final_bf16_15k/$MODEL.json
  HELD=$OUT/claim_bf16_15k/${MODEL}_seed0
  python benchmarks/ship.py --run "$RUN" --name "$MODEL-camvid" \
    --train-command "$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['command'])" "$KEPT")" \
    --wall-minutes "$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['train_minutes'])" "$KEPT")" \
    --cpu "$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['cpu'])" "$KEPT")" \
    --heldout "benchmarks/results/camvid/claim_bf16_15k/${MODEL}_seed0.json" \
    --heldout-eval "$SHIP/${MODEL}_heldout.json" --heldout-tta "$SHIP/${MODEL}_heldout_tta.json" \
    --eval-command "aticnet evaluate --weights $HELD --dataset camvid --data-root $DATA --split train --drive 0006R0" \
    --tta-command "aticnet evaluate --weights $HELD --dataset camvid --data-root $DATA --split train --drive 0006R0 --flip --scales 1 1.25 1.5" \
    --deploy "$SHIP/deploy/deploy.json"
done
