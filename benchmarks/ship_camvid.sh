#!/usr/bin/env bash
# How the shipped CamVid weights (src/aticnet/weights/{aticnet,icnet}-camvid) are made, step by step. Each step
# skips what is done (runs resume, finished runs are reused), so the script can be stopped and run again.
#   benchmarks/ship_camvid.sh CAMVID            # CAMVID: CamVid in the SegNet layout (train/, trainannot/, val/, ...)
# Run it alone on the machine: the training minutes and the latencies it records are only true that way.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?usage: benchmarks/ship_camvid.sh CAMVID_ROOT}
OUT=runs/camvid
SHIP=runs/ship
KEPT=benchmarks/results/camvid
mkdir -p "$SHIP"
# Each model's recipe, and the kept summaries of that recipe on the held-out drive 0006R0 (docs/pretrained.md says
# why): both train with configs/camvid_bf16_15k.yaml; AtICNet's held-out figure is its 15000-step experiment (seed
# 0), ICNet's the 5000-step claim runs (three seeds; its card says so).
declare -A RECIPE=([aticnet]=configs/camvid_bf16_15k.yaml [icnet]=configs/camvid_bf16_15k.yaml)
declare -A FINAL=([aticnet]=final_bf16_15k [icnet]=final_bf16_15k)
declare -A HELDOUT=([aticnet]="$KEPT/experiments/aticnet_bf16_15000_seed0.json"
                    [icnet]="$KEPT/claim_bf16/icnet_seed0.json $KEPT/claim_bf16/icnet_seed1.json $KEPT/claim_bf16/icnet_seed2.json")
SPEED_FORMS=("PyTorch fp32 (model as built)" "PyTorch fp32, aticnet.load (BN folded, exact labels step)"
             "OpenVINO fp32" "OpenVINO int8 (NNCF)" "PyTorch fp32, infer-scale 0.5" "OpenVINO int8, infer-scale 0.5")

for MODEL in aticnet icnet; do
  RUN=$OUT/${FINAL[$MODEL]}/$MODEL
  # 1. The final model: the recipe on all of CamVid train + val (468 frames), seed 0, no validation split.
  python benchmarks/camvid.py final --models "$MODEL" --recipe "${RECIPE[$MODEL]}" --data-root "$DATA" --out "$OUT"
  # 2. What it confuses: evaluate on val (trained on) for its "mostly missed as".
  [ -f "$SHIP/${MODEL}_val.json" ] || aticnet evaluate --weights "$RUN" --dataset camvid --data-root "$DATA" \
    --split val --workers 0 --json "$SHIP/${MODEL}_val.json"
  # 3. The deployable forms its card quotes: latency at two sizes, int8's mIoU change (on val, trained on).
  [ -f "$SHIP/deploy_$MODEL/deploy.json" ] || python benchmarks/deploy.py --runs "$RUN" --dataset camvid \
    --data-root "$DATA" --calibration-drive 0001TP --sizes 360x480 1024x2048 --forms "${SPEED_FORMS[@]}" \
    --out "$SHIP/deploy_$MODEL"
  # 4. The shipped folder: fp16 weights, config.json with the figures, the model card.
  # shellcheck disable=SC2086  # HELDOUT holds several paths
  python benchmarks/ship.py --run "$RUN" --name "$MODEL-camvid" --final "$KEPT/${FINAL[$MODEL]}/$MODEL.json" \
    --heldout ${HELDOUT[$MODEL]} \
    --confusion "$SHIP/${MODEL}_val.json" --confusion-where "CamVid val, which these weights trained on" \
    --command "aticnet evaluate --weights $RUN --dataset camvid --data-root CAMVID --split val" \
    --deploy "$SHIP/deploy_$MODEL/deploy.json"
done
