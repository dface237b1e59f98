#!/usr/bin/env bash
# Shared tail of run_ucf101.sh, run_hmdb51.sh, run_anet.sh and run_charades.sh: fine-tune the
# Kinetics-400 ViT-L/14 16-frame model on DATASET (the first argument) with its recipe
# recipes/<DATASET>_<vitl14|vitl14-336>_16f.yaml, Video branch only. VIEWS defaults to the second
# argument. Any recipes/pipeline.sh variable set by the caller wins over these defaults.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dataset=${1:?usage: finetune_from_k400.sh DATASET [VIEWS]}
export MODEL=${MODEL:-ViT-L-14}
case $MODEL in
  ViT-L-14) tag=vitl14 ;;
  ViT-L-14-336) tag=vitl14-336 ;;
  *) echo "run_${dataset}.sh: MODEL must be ViT-L-14 or ViT-L-14-336 (a recipe each), not '$MODEL'" >&2; exit 2 ;;
esac
export PRETRAINED=${PRETRAINED:-openai} FRAMES=${FRAMES:-16} VIEWS=${VIEWS:-${2:-1x1}}
export RECIPE=${RECIPE:-$here/${dataset}_${tag}_16f.yaml} OUT=${OUT:-bike-runs/${dataset}_${tag}_16f}
export INIT_FROM=${INIT_FROM:-bike-runs/k400_${tag}_16f/runs/video} END_TO_END=${END_TO_END:-1}
exec bash "$here/pipeline.sh"
