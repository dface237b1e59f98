#!/usr/bin/env bash
# Table 5: zero-shot recognition with the Kinetics-400 ViT-L/14 8-frame model (run_k400_vitl14_8f.sh;
# CHECKPOINT names its Video-branch run folder), no training on the target dataset. Paper top-1:
#   ucf101  86.6 ± 3.4 (half classes, 10 draws) / 80.8 (all classes)
#   hmdb51  61.4 ± 3.6 / 52.8
#   anet    86.2 ± 1.0 / 80.0
#   k600    68.5 ± 1.2 (mean of the three 160-class splits of the 220 classes new in Kinetics-600)
#
# Choose: DATASET (ucf101, hmdb51, anet or k600).
# Data, from the caller's environment:
#   VAL_LIST    the videos to evaluate (k600: the Kinetics-600 test videos of the new classes)
#   CLASSES     the dataset's class names (k600: its classes, which must include every class of
#               lexicons/k600_split1..3.txt)
#   DATA_ROOT   folder of the videos (or VAL_ROOT)
# END_TO_END must say how the Kinetics-400 model was trained: 1 (default, as run_k400_vitl14_8f.sh)
# decodes the test videos through its fine-tuned visual encoder; 0 for a CLIP-frozen model
# (feature cache). Any other recipes/pipeline.sh variable set by the caller wins.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DATASET=${DATASET:-}
case $DATASET in
  ucf101 | hmdb51 | anet) export PROTOCOLS=${PROTOCOLS:-zero-shot-half full} ;;
  k600) export PROTOCOLS=${PROTOCOLS:-k600-splits} ;;
  *) echo "run_zeroshot.sh: set DATASET to ucf101, hmdb51, anet or k600 (got '$DATASET')" >&2; exit 2 ;;
esac
export MODE=zero-shot MODEL=${MODEL:-ViT-L-14} PRETRAINED=${PRETRAINED:-openai} FRAMES=${FRAMES:-8}
export VIEWS=${VIEWS:-1x1} CHECKPOINT=${CHECKPOINT:-bike-runs/k400_vitl14_8f/runs/video}
export OUT=${OUT:-bike-runs/zeroshot_${DATASET}} END_TO_END=${END_TO_END:-1}
exec bash "$here/pipeline.sh"
