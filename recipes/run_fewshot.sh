#!/usr/bin/env bash
# Table 4: few-shot recognition with CLIP ViT-L/14, 8 frames, no Kinetics-400 pre-training
# (fewshot_<DATASET>_vitl14_8f.yaml): SHOTS training videos per class (a seeded sample), every class
# of the dataset, Video branch only. Paper top-1 for SHOTS = 1 / 2 / 5:
#   hmdb51 72.3 / 73.5 / 77.7   ucf101 95.2 / 96.1 / 96.5   anet 86.6 / 88.7 / 90.9   k400 73.5 / 75.7 / 78.2
#
# Choose: DATASET (ucf101, hmdb51, anet or k400) and SHOTS (1, 2 or 5; default 2).
# Data, from the caller's environment:
#   TRAIN_LIST  the dataset's full training list (split 1 for UCF-101 / HMDB-51); the K-shot
#               sample is drawn from it
#   VAL_LIST    its test list (split-1 test; validation for ActivityNet and Kinetics-400)
#   CLASSES     its class names
#   DATA_ROOT   folder of the videos, or TRAIN_ROOT and VAL_ROOT
# END_TO_END=1 (default) decodes only the sampled videos; END_TO_END=0 extracts the whole
# training list into a cache first. Any other recipes/pipeline.sh variable set by the caller wins.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DATASET=${DATASET:-}
case $DATASET in
  ucf101 | hmdb51 | anet | k400) ;;
  *) echo "run_fewshot.sh: set DATASET to ucf101, hmdb51, anet or k400 (got '$DATASET')" >&2; exit 2 ;;
esac
export SHOTS=${SHOTS:-2}
export MODEL=${MODEL:-ViT-L-14} PRETRAINED=${PRETRAINED:-openai} FRAMES=${FRAMES:-8} VIEWS=${VIEWS:-1x1}
export RECIPE=${RECIPE:-$here/fewshot_${DATASET}_vitl14_8f.yaml} OUT=${OUT:-bike-runs/fewshot_${DATASET}_${SHOTS}shot}
export END_TO_END=${END_TO_END:-1}
exec bash "$here/pipeline.sh"
