#!/usr/bin/env bash
# Table 3: Charades, multi-label (mAP), fine-tuned from the Kinetics-400 ViT-L/14 16-frame model
# (charades_vitl14_16f.yaml, or charades_vitl14-336_16f.yaml with MODEL=ViT-L-14-336), Video branch
# only, 4x1 views as the authors. Paper: mAP 50.4 (authors: 50.7 at 16x336). Train the Kinetics-400
# model first (run_k400_vitl14_16f.sh); INIT_FROM names its run folder.
#
# Data, from the caller's environment:
#   TRAIN_LIST  Charades training list, multi-label (`relpath l1 l2 ...` or a CSV with `;`-joined labels)
#   VAL_LIST    Charades test list, multi-label
#   CLASSES     the 157 class names (Charades_v1_classes.txt: `c000 name` lines)
#   DATA_ROOT   folder of the videos, or TRAIN_ROOT and VAL_ROOT
# Any other recipes/pipeline.sh variable set by the caller wins over the defaults (finetune_from_k400.sh).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/finetune_from_k400.sh" charades 4x1
