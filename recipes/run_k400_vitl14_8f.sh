#!/usr/bin/env bash
# Table 6i: Kinetics-400, ViT-L/14, 8 frames (k400_vitl14_8f.yaml), Video + Attributes branches
# (lambda = 0.8 for ViT-L, Supp. A.2). Paper: V 86.4, V+A 86.5 (single view); VIEWS=4x3: V* 87.4.
# Its Video branch (OUT/runs/video) is also the model of the zero-shot results (run_zeroshot.sh).
#
# Data, from the caller's environment: TRAIN_LIST, VAL_LIST (Kinetics-400 train and val lists),
# CLASSES (the 400 class names), DATA_ROOT or TRAIN_ROOT and VAL_ROOT.
# Any other recipes/pipeline.sh variable set by the caller wins (LEXICON= for the Video branch only).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MODEL=${MODEL:-ViT-L-14} PRETRAINED=${PRETRAINED:-openai} FRAMES=${FRAMES:-8} VIEWS=${VIEWS:-1x1}
export RECIPE=${RECIPE:-$here/k400_vitl14_8f.yaml} OUT=${OUT:-bike-runs/k400_vitl14_8f}
export LEXICON=${LEXICON-k400} END_TO_END=${END_TO_END:-1}
[[ -z $LEXICON ]] || export FUSE=${FUSE:-0.8}  # lambda of Eq. 4 (Supp. A.2)
exec bash "$here/pipeline.sh"
