#!/usr/bin/env bash
# Table A.3 (Supp. B.1): UCF-101 split 1, fine-tuned from the Kinetics-400 ViT-L/14 16-frame model
# (ucf101_vitl14_16f.yaml, or ucf101_vitl14-336_16f.yaml with MODEL=ViT-L-14-336), Video branch only.
# Paper top-1: 98.8 (224 px) / 98.6 (336 px).
# Train the Kinetics-400 model first: run_k400_vitl14_16f.sh (or run_k400_vitl14-336.sh with
# FRAMES=16); INIT_FROM names its run folder (or the authors' released checkpoint file).
#
# Data, from the caller's environment:
#   TRAIN_LIST  UCF-101 split-1 training list
#   VAL_LIST    UCF-101 split-1 test list
#   CLASSES     the 101 class names
#   DATA_ROOT   folder of the videos, or TRAIN_ROOT and VAL_ROOT
# Any other recipes/pipeline.sh variable set by the caller wins over the defaults (finetune_from_k400.sh).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$here/finetune_from_k400.sh" ucf101 1x1
