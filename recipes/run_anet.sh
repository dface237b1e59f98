#!/usr/bin/env bash
# Table 2: ActivityNet-v1.3, fine-tuned from the Kinetics-400 ViT-L/14 16-frame model
# (anet_vitl14_16f.yaml, or anet_vitl14-336_16f.yaml with MODEL=ViT-L-14-336), Video branch only,
# 4x1 views as the authors. Paper: top-1 94.7, mAP 96.1 ("ViT-L"; the authors give these for
# 16x336 and 94.4 / 96.3 for 16x224). Train the Kinetics-400 model first (run_k400_vitl14_16f.sh,
# or run_k400_vitl14-336.sh with FRAMES=16); INIT_FROM names its run folder.
#
# Data, from the caller's environment:
#   TRAIN_LIST  ActivityNet-v1.3 training list (one row per video)
#   VAL_LIST    ActivityNet-v1.3 validation list (the paper's test set)
#   CLASSES     the 200 class names
#   DATA_ROOT   folder of the videos, or TRAIN_ROOT and VAL_ROOT
# Any other recipes/pipeline.sh variable set by the caller wins over the defaults (finetune_from_k400.sh).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/finetune_from_k400.sh" anet 4x1
