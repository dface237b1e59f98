#!/usr/bin/env bash
# Table 6i: Kinetics-400, ViT-B/16, 8 frames (k400_vitb16_8f.yaml), Video + Attributes branches
# (attributes by CLIP ViT-L/14, 8 frames, K400 lexicon; lambda = 0.6). Paper: V 82.1, V+A 83.2
# (single view); VIEWS=4x3 for the multi-view V* 83.2 and V*+A 83.9.
#
# Data, from the caller's environment: TRAIN_LIST, VAL_LIST (Kinetics-400 train and val lists),
# CLASSES (the 400 class names), DATA_ROOT or TRAIN_ROOT and VAL_ROOT.
# Any other recipes/pipeline.sh variable set by the caller wins (LEXICON= for the Video branch only).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MODEL=${MODEL:-ViT-B-16} PRETRAINED=${PRETRAINED:-openai} FRAMES=${FRAMES:-8} VIEWS=${VIEWS:-1x1}
export RECIPE=${RECIPE:-$here/k400_vitb16_8f.yaml} OUT=${OUT:-bike-runs/k400_vitb16_8f}
export LEXICON=${LEXICON-k400} ATTR_MODEL=${ATTR_MODEL:-ViT-L-14} ATTR_PRETRAINED=${ATTR_PRETRAINED:-openai}
export ATTR_FRAMES=${ATTR_FRAMES:-8} END_TO_END=${END_TO_END:-1}
[[ -z $LEXICON ]] || export FUSE=${FUSE:-0.6}  # lambda of Eq. 4 (Supp. A.2)
exec bash "$here/pipeline.sh"
