#!/usr/bin/env bash
# Few-shot on the published K-shot lists (X-CLIP, ViFi-CLIP, TC-CLIP): train on exactly the videos of
# ViFi-CLIP's train1_few_shot_K.txt (train-video --shots-list), all classes, test on split 1 (val1.txt).
# ViFi-CLIP's published top-1 (ViT-B/16, 32 frames, fine-tuned CLIP) for K = 2 / 4 / 8 / 16:
#   hmdb51 57.2 / 62.7 / 64.5 / 66.8   ucf101 80.7 / 85.1 / 90.0 / 92.7
# (this recipe keeps BIKE's Table 4 settings: ViT-L/14, 8 frames; MODEL / FRAMES / RECIPE override).
#
# Choose: DATASET (ucf101 or hmdb51) and SHOTS (2, 4, 8 or 16; default 2).
# Data, from the caller's environment (recipes/README.md says where to download them):
#   VIFI         a ViFi-CLIP checkout (its datasets_splits/ and labels/ folders)
#   TRAIN_LIST   the videos the shot list's are found among: the split-1 training list, or the shot
#                list itself [default: the shot list]; matched by id, else by file stem
#   VAL_LIST     the test list [default: $VIFI/datasets_splits/<ucf|hmdb>_splits/val1.txt]
#   CLASSES      class names in the lists' label order [default: $VIFI/labels/<ucf_101|hmdb_51>_labels.csv]
#   DATA_ROOT    folder of the videos (the lists name bare `video.avi` files), or TRAIN_ROOT and VAL_ROOT
# Any other recipes/pipeline.sh variable set by the caller wins.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DATASET=${DATASET:-}
case $DATASET in
  ucf101) short=ucf labels=ucf_101_labels.csv ;;
  hmdb51) short=hmdb labels=hmdb_51_labels.csv ;;
  *) echo "run_fewshot_lists.sh: set DATASET to ucf101 or hmdb51 (got '$DATASET')" >&2; exit 2 ;;
esac
SHOTS_K=${SHOTS:-2}
unset SHOTS  # the list replaces the seeded sample
case $SHOTS_K in 2 | 4 | 8 | 16) ;; *) echo "run_fewshot_lists.sh: SHOTS is 2, 4, 8 or 16 (got '$SHOTS_K')" >&2; exit 2 ;; esac
: "${VIFI:?run_fewshot_lists.sh: set VIFI to a ViFi-CLIP checkout (git clone https://github.com/muzairkhattak/ViFi-CLIP)}"
export SHOTS_LIST=${SHOTS_LIST:-$VIFI/datasets_splits/${short}_splits/train1_few_shot_${SHOTS_K}.txt}
export TRAIN_LIST=${TRAIN_LIST:-$SHOTS_LIST}
export VAL_LIST=${VAL_LIST:-$VIFI/datasets_splits/${short}_splits/val1.txt}
export CLASSES=${CLASSES:-$VIFI/labels/$labels}
export MODEL=${MODEL:-ViT-L-14} PRETRAINED=${PRETRAINED:-openai} FRAMES=${FRAMES:-8} VIEWS=${VIEWS:-1x1}
export RECIPE=${RECIPE:-$here/shotlist_${DATASET}_vitl14_8f.yaml}
export OUT=${OUT:-bike-runs/fewshot_lists_${DATASET}_${SHOTS_K}shot}
export END_TO_END=${END_TO_END:-1}
exec bash "$here/pipeline.sh"
