#!/usr/bin/env bash
# Table 1: Kinetics-400, ViT-L/14, 16 frames at 224 px (k400_vitl14_16f.yaml), Video branch only,
# 4x3 views. Paper: top-1 88.1, top-5 97.9. Its Video branch (OUT/runs/video) is the Kinetics-400
# model that run_ucf101.sh, run_hmdb51.sh, run_anet.sh and run_charades.sh fine-tune.
#
# Data, from the caller's environment: TRAIN_LIST, VAL_LIST (Kinetics-400 train and val lists),
# CLASSES (the 400 class names), DATA_ROOT or TRAIN_ROOT and VAL_ROOT.
# Any other recipes/pipeline.sh variable set by the caller wins over the defaults below.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MODEL=${MODEL:-ViT-L-14} PRETRAINED=${PRETRAINED:-openai} FRAMES=${FRAMES:-16} VIEWS=${VIEWS:-4x3}
export RECIPE=${RECIPE:-$here/k400_vitl14_16f.yaml} OUT=${OUT:-bike-runs/k400_vitl14_16f}
export END_TO_END=${END_TO_END:-1}
exec bash "$here/pipeline.sh"
