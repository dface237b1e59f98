#!/usr/bin/env bash
# Base-to-novel generalisation (ViFi-CLIP, CVPR 2023; reported by FROSTER and TC-CLIP on K400, HMDB-51,
# UCF-101 and SSv2): train on 16 shots of each base class (the published lists fs_base_s1..s3_train.txt,
# three seeds), then score the base classes' test videos among the base classes only and the novel
# classes' among the novel classes only; HM = 2ab/(a+b). Prints mean ± std (population) over the seeds.
#
# Data, from the caller's environment, as ViFi-CLIP publishes it (github.com/muzairkhattak/ViFi-CLIP):
#   SPLITS         one dataset's folder of datasets_splits/base2novel_splits/ (e.g. .../hmdb_splits):
#                  fs_base_s{1,2,3}_train.txt, base_val.txt, novel_val.txt (`video label` lines whose
#                  labels index the base or the novel class file)
#   BASE_CLASSES   its base class file (labels/hmdb_51_base_labels.csv)
#   NOVEL_CLASSES  its novel class file (labels/hmdb_51_novel_labels.csv)
#   DATA_ROOT      folder of the videos the lists name
# Optional: MODEL (ViT-B-16), PRETRAINED (openai), FRAMES (8), VIEWS of the test caches (1x1), SEEDS
# ("1 2 3"), OUT (bike-runs/base2novel), RECIPE (a train-video recipe), EXTRA_TRAIN_VIDEO, EXTRA_EVAL,
# BIKE (the command, default bike), PYTHON (python3, to print the summary).
# The CLIP stays frozen (train-video from feature caches); a finished step is skipped on a re-run.
set -euo pipefail
: "${SPLITS:?set SPLITS to a base2novel_splits/<dataset>_splits folder}"
: "${BASE_CLASSES:?set BASE_CLASSES to the base class file}" "${NOVEL_CLASSES:?set NOVEL_CLASSES to the novel class file}"
: "${DATA_ROOT:?set DATA_ROOT to the folder of the videos}"
MODEL=${MODEL:-ViT-B-16} PRETRAINED=${PRETRAINED:-openai} FRAMES=${FRAMES:-8} VIEWS=${VIEWS:-1x1}
SEEDS=${SEEDS:-"1 2 3"} OUT=${OUT:-bike-runs/base2novel} BIKE=${BIKE:-bike} PYTHON=${PYTHON:-python3}
EXTRA_TRAIN_VIDEO=${EXTRA_TRAIN_VIDEO:-} EXTRA_EVAL=${EXTRA_EVAL:-}
mkdir -p "$OUT/features"

extract() {  # list, class file, views, cache
  [ -f "$4" ] || $BIKE extract-features --list "$1" --root "$DATA_ROOT" --classes "$2" --model "$MODEL" \
    --pretrained "$PRETRAINED" --frames "$FRAMES" --views "$3" --out "$4"
}

extract "$SPLITS/base_val.txt" "$BASE_CLASSES" "$VIEWS" "$OUT/features/base_val.h5"
extract "$SPLITS/novel_val.txt" "$NOVEL_CLASSES" "$VIEWS" "$OUT/features/novel_val.h5"
for seed in $SEEDS; do
  extract "$SPLITS/fs_base_s${seed}_train.txt" "$BASE_CLASSES" 1x1 "$OUT/features/fs_base_s${seed}_train.h5"
  # shellcheck disable=SC2086
  $BIKE train-video --features "$OUT/features/fs_base_s${seed}_train.h5" --base-classes "$BASE_CLASSES" \
    --seed "$seed" --out "$OUT/s$seed/run" ${RECIPE:+--recipe "$RECIPE"} $EXTRA_TRAIN_VIDEO
  # shellcheck disable=SC2086
  $BIKE eval --checkpoint "$OUT/s$seed/run" --features "$OUT/features/base_val.h5" \
    --novel-features "$OUT/features/novel_val.h5" --protocol base-novel --base-classes "$BASE_CLASSES" \
    --novel-classes "$NOVEL_CLASSES" --out "$OUT/s$seed/eval" $EXTRA_EVAL
done

# shellcheck disable=SC2086
"$PYTHON" - "$OUT" $SEEDS <<'PY'
import json, statistics, sys
out, seeds = sys.argv[1], sys.argv[2:]
runs = [json.load(open(f"{out}/s{s}/eval/metrics.json"))["metrics"]["video"] for s in seeds]
print(f"base-to-novel over seeds {' '.join(seeds)} (top-1 %, mean ± population std):")
for key in ("base_top1", "novel_top1", "HM"):
    values = [run[key] for run in runs]
    print(f"  {key:<10} {statistics.fmean(values):6.2f} ± {statistics.pstdev(values):.2f}   ({', '.join(f'{v:.2f}' for v in values)})")
PY
