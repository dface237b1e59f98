#!/usr/bin/env bash
# Run bike's stages for one experiment, driven by environment variables (`pipeline.sh --help`).
# The recipes/run_*.sh scripts set them for each setting of the paper; docs/reproducing.md maps the
# paper's tables to those scripts.
set -euo pipefail
if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 404)); then
  echo "pipeline.sh: needs bash 4.4 or newer (this is $BASH_VERSION)" >&2
  exit 2
fi

usage() {
  cat <<'EOF'
usage: [VAR=value ...] recipes/pipeline.sh

Runs bike's stages in order and stops at the first one that fails. Re-running the same command
skips the stages that finished (a marker in OUT/.pipeline/ records each finished stage's command)
and resumes the one that was interrupted. A stage whose options changed runs again, and so do the
stages after it, but a finished training run is never continued under other options or on changed
inputs: the pipeline stops and says what to delete. Use one OUT per variant. To extract videos
added to a list, delete OUT/.pipeline/extract-*.done.

MODE=train (default): extract-features (train 1x1, test VIEWS; not with END_TO_END=1) ->
  train-video -> [extract-features with ATTR_MODEL -> gen-attributes train + test -> train-attrs,
  when LEXICON is set] -> eval (Video branch, + Attributes branch and fusion with LEXICON).
MODE=zero-shot: extract-features (test VIEWS) -> eval of CHECKPOINT on CLASSES, once per PROTOCOLS.

Required (train):     TRAIN_LIST VAL_LIST CLASSES MODEL PRETRAINED FRAMES RECIPE OUT
Required (zero-shot): VAL_LIST CLASSES MODEL PRETRAINED FRAMES CHECKPOINT OUT

  TRAIN_LIST, VAL_LIST  video lists (text, CSV or Kinetics CSV); VAL_LIST is the set that is
                        evaluated (the paper's test set: Kinetics-400 val, UCF-101 split-1 test, ...)
  CLASSES               class-name file (id,name CSV, one name per line, or Charades c000 lines)
  MODEL, PRETRAINED     open_clip architecture and weights (tag, checkpoint file or none)
  FRAMES                frames per clip (must agree with the recipe's `frames`; passed to train-video)
  RECIPE                train-video recipe (recipes/*.yaml)
  CHECKPOINT            zero-shot: the trained Video branch (a run folder or .pt), or `none` for
                        plain CLIP
  OUT                   output folder (features/, attributes/, runs/video, runs/attrs, eval/)

Optional:
  DATA_ROOT             folder that relative list paths start from [default: each list's folder]
  TRAIN_ROOT, VAL_ROOT  per list [default: DATA_ROOT]
  VIEWS                 test views CxS, e.g. 4x3 [1x1]
  END_TO_END            0: CLIP frozen, train-video and eval read feature caches (fast) [0];
                        1: CLIP's visual encoder is fine-tuned on decoded videos (the paper's
                        setting) and eval decodes the test videos with VIEWS
  EPOCHS                overrides the recipe's epochs (and train-attrs' unless ATTRS_EPOCHS is set)
  SHOTS                 few-shot: K training videos per class (train-video --shots)
  SHOTS_LIST            few-shot: exactly the videos of a published K-shot list (--shots-list)
  INIT_FROM             train-video --init-from (e.g. the Kinetics-400 run folder to fine-tune)
  NUM_GPUS              >1: extract-features, train-video and train-attrs run under
                        `accelerate launch --multi_gpu --num_processes NUM_GPUS` [1]
  ACCELERATE            the accelerate command [accelerate]; EXTRA_ACCELERATE: options of `launch`
                        (e.g. --num_machines 2 --machine_rank 0 --main_process_ip HOST)
  WORKERS               decoding / data-loading workers of every stage [bike's defaults]
  PROTOCOLS             eval protocols, space-separated [train: full; zero-shot: zero-shot-half full]
  BIKE                  the bike command [bike], e.g. "python -m bike_cli"

Attributes branch (train mode, only when LEXICON is set):
  LEXICON               built-in lexicon name (k400, imagenet1k, ...) or a phrase file
  ATTR_MODEL, ATTR_PRETRAINED, ATTR_FRAMES
                        the CLIP that generates the attributes [MODEL, PRETRAINED, FRAMES]; another
                        model than MODEL gets its own 1x1 caches (ATTR_VIEWS [1x1] for the test set)
  TOP_K                 attributes per video [5]
  TRAIN_ATTRS           1: train the Attributes branch [1]; 0: evaluate the zero-training one
  ATTR_TEXT_MODEL, ATTR_TEXT_PRETRAINED
                        the CLIP whose text encoder train-attrs trains on [MODEL, PRETRAINED]
  ATTRS_TUNE            train-attrs --tune (head or full) [bike's default]
  ATTRS_RECIPE          train-attrs recipe; ATTRS_EPOCHS: its epochs [EPOCHS]
  FUSE                  lambda of Eq. 4, lambda * video + (1 - lambda) * attributes [0.6]

Extra options per stage (split like shell words; quotes work): EXTRA_EXTRACT, EXTRA_TRAIN_VIDEO,
EXTRA_GEN_ATTRIBUTES, EXTRA_TRAIN_ATTRS, EXTRA_EVAL.
EOF
}

say() { printf '%s\n' "$*"; }
die() { printf 'pipeline.sh: error: %s\n' "$*" >&2; exit 2; }

require() {  # require VAR...: usage and exit 2 when any is unset or empty
  local name missing=()
  for name in "$@"; do
    [[ -n ${!name:-} ]] || missing+=("$name")
  done
  if ((${#missing[@]})); then
    usage >&2
    printf '\npipeline.sh: error: missing required variable(s) for MODE=%s: %s\n' "$MODE" "${missing[*]}" >&2
    exit 2
  fi
}

WORDS=()
split_words() {  # split_words VAR: the words of $VAR (shell quoting honoured) into WORDS
  WORDS=()
  local text=${!1:-} word
  [[ -n ${text//[[:space:]]/} ]] || return 0
  printf '%s\n' "$text" | xargs printf '' 2>/dev/null || die "$1: unbalanced quotes in: $text"
  while IFS= read -r -d '' word; do
    WORDS+=("$word")
  done < <(printf '%s\n' "$text" | xargs printf '%s\0')
}

signature_of() {  # the arguments that define a stage's result: all but `--workers N`
  local skip=0 arg out=()
  for arg in "$@"; do
    if ((skip)); then skip=0; continue; fi
    if [[ $arg == --workers ]]; then skip=1; continue; fi
    out+=("$arg")
  done
  printf '%q ' "${out[@]}"
}

STAGE_NO=0
UPSTREAM_RAN=0   # a stage before this one ran in this invocation
INPUTS_CHANGED=0 # ... and it had finished earlier with other options: its outputs changed
# run_stage NAME OUTPUT KIND ARGS...: run `bike ARGS...` unless NAME finished with the same ARGS
# (its marker) and OUTPUT exists. After an earlier stage ran, the stages after it run again too,
# except finished training runs, which are kept, or refused when their inputs changed. KIND:
# plain (gen-attributes, eval), resume (extract-features: bike resumes it and refuses other settings
# itself) or train (a finished run is never resumed under other options); with an `accelerate-`
# prefix the stage is launched on NUM_GPUS processes.
run_stage() {
  local name=$1 output=$2 kind=$3
  shift 3
  STAGE_NO=$((STAGE_NO + 1))
  local marker="$OUT/.pipeline/$name.done" signature
  signature=$(signature_of "$@")
  if [[ -f $marker && -e $output ]]; then
    if [[ $(<"$marker") != "$signature" ]]; then
      [[ $kind != *train ]] || die "stage '$name' finished earlier with other options.
  then: $(<"$marker")
  now:  $signature
  To continue that run with the new options (--resume), delete $marker; to start over, delete $(dirname "$output") or use another OUT."
      INPUTS_CHANGED=1
    elif [[ $kind == *train ]] && ((INPUTS_CHANGED)); then
      die "stage '$name' finished earlier, but an earlier stage has since run with other options, so its
  training data may have changed. To retrain on it, delete $(dirname "$output"); to keep the
  earlier results, restore that stage's options; or use another OUT."
    elif ((UPSTREAM_RAN == 0)) || [[ $kind == *train ]]; then
      say "==> [$STAGE_NO] $name: finished earlier, skipped ($output)"
      return 0
    fi
  fi
  local launcher=("${BIKE_CMD[@]}")
  if [[ $kind == accelerate-* ]] && ((NUM_GPUS > 1)); then
    split_words EXTRA_ACCELERATE
    launcher=("${ACCELERATE_CMD[@]}" launch --multi_gpu --num_processes "$NUM_GPUS" "${WORDS[@]}" -m bike_cli)
  fi
  say "==> [$STAGE_NO] $name -> $output"
  say "    \$ $(printf '%q ' "${launcher[@]}" "$@")"
  rm -f "$marker"
  local started=$SECONDS rc=0
  "${launcher[@]}" "$@" || rc=$?
  if ((rc != 0)); then
    printf "pipeline.sh: stage '%s' failed (exit %d); the stages before it are kept: fix the cause and re-run\n" \
      "$name" "$rc" >&2
    exit "$rc"
  fi
  mkdir -p "$OUT/.pipeline"
  printf '%s' "$signature" >"$marker"
  UPSTREAM_RAN=1
  say "    $name finished in $((SECONDS - started)) s"
}

root_args() {  # root_args DIR: `--root DIR` into WORDS when DIR is set
  WORDS=()
  [[ -z ${1:-} ]] || WORDS=(--root "$1")
}

extract() {  # extract NAME LIST ROOT MODEL PRETRAINED FRAMES VIEWS CACHE
  local name=$1 list=$2 root=$3 model=$4 pretrained=$5 frames=$6 views=$7 cache=$8 args
  root_args "$root"
  args=(extract-features --list "$list" "${WORDS[@]}" --classes "$CLASSES" --model "$model"
        --pretrained "$pretrained" --frames "$frames" --views "$views" --sampling test --out "$cache")
  split_words EXTRA_EXTRACT
  run_stage "$name" "$cache" accelerate-resume "${args[@]}" "${WORKER_ARGS[@]}" "${WORDS[@]}"
}

# ---------------------------------------------------------------------------------------------

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  usage
  exit 0
fi
(($# == 0)) || die "no arguments are taken (the settings are environment variables; see --help)"

MODE=${MODE:-train}
case $MODE in
  train) require TRAIN_LIST VAL_LIST CLASSES MODEL PRETRAINED FRAMES RECIPE OUT ;;
  zero-shot) require VAL_LIST CLASSES MODEL PRETRAINED FRAMES CHECKPOINT OUT ;;
  *) die "MODE must be train or zero-shot, not '$MODE'" ;;
esac

BIKE=${BIKE:-bike}
read -r -a BIKE_CMD <<<"$BIKE"
read -r -a ACCELERATE_CMD <<<"${ACCELERATE:-accelerate}"
NUM_GPUS=${NUM_GPUS:-1}
[[ $NUM_GPUS =~ ^[1-9][0-9]*$ ]] || die "NUM_GPUS must be a positive integer, not '$NUM_GPUS'"
END_TO_END=${END_TO_END:-0}
[[ $END_TO_END == 0 || $END_TO_END == 1 ]] || die "END_TO_END must be 0 or 1, not '$END_TO_END'"
TRAIN_ATTRS=${TRAIN_ATTRS:-1}
[[ $TRAIN_ATTRS == 0 || $TRAIN_ATTRS == 1 ]] || die "TRAIN_ATTRS must be 0 or 1, not '$TRAIN_ATTRS'"
VIEWS=${VIEWS:-1x1}
TRAIN_ROOT=${TRAIN_ROOT:-${DATA_ROOT:-}}
VAL_ROOT=${VAL_ROOT:-${DATA_ROOT:-}}
WORKER_ARGS=()
[[ -z ${WORKERS:-} ]] || WORKER_ARGS=(--workers "$WORKERS")
EPOCH_ARGS=()
[[ -z ${EPOCHS:-} ]] || EPOCH_ARGS=(--epochs "$EPOCHS")
if [[ $MODE == train ]]; then PROTOCOLS=${PROTOCOLS:-full}; else PROTOCOLS=${PROTOCOLS:-zero-shot-half full}; fi
read -r -a PROTOCOL_LIST <<<"$PROTOCOLS"

TEST_CACHE="$OUT/features/val_${VIEWS}.h5"
say "bike pipeline: MODE=$MODE MODEL=$MODEL FRAMES=$FRAMES VIEWS=$VIEWS END_TO_END=$END_TO_END OUT=$OUT"
mkdir -p "$OUT"

# Evaluation input: the test cache, or (END_TO_END=1: a fine-tuned visual encoder) the videos.
eval_input() {
  if ((END_TO_END)); then
    root_args "$VAL_ROOT"
    EVAL_INPUT=(--videos "$VAL_LIST" "${WORDS[@]}")
  else
    EVAL_INPUT=(--features "$TEST_CACHE")
  fi
}

if [[ $MODE == zero-shot ]]; then
  ((END_TO_END)) || extract extract-test "$VAL_LIST" "$VAL_ROOT" "$MODEL" "$PRETRAINED" "$FRAMES" "$VIEWS" "$TEST_CACHE"
  eval_input
  checkpoint_args=()
  [[ $CHECKPOINT == none ]] || checkpoint_args=(--checkpoint "$CHECKPOINT")
  split_words EXTRA_EVAL
  for protocol in "${PROTOCOL_LIST[@]}"; do
    dir="$OUT/eval/$protocol"
    run_stage "eval-$protocol" "$dir/metrics.json" plain eval "${checkpoint_args[@]}" "${EVAL_INPUT[@]}" \
      --views "$VIEWS" --classes "$CLASSES" --protocol "$protocol" --out "$dir" "${WORKER_ARGS[@]}" "${WORDS[@]}"
  done
  say "bike pipeline: finished; metrics in $OUT/eval/*/metrics.json"
  exit 0
fi

# ---- MODE=train ------------------------------------------------------------------------------
TRAIN_CACHE="$OUT/features/train.h5"
if ((!END_TO_END)); then
  extract extract-train "$TRAIN_LIST" "$TRAIN_ROOT" "$MODEL" "$PRETRAINED" "$FRAMES" 1x1 "$TRAIN_CACHE"
  extract extract-test "$VAL_LIST" "$VAL_ROOT" "$MODEL" "$PRETRAINED" "$FRAMES" "$VIEWS" "$TEST_CACHE"
fi

# Video branch
video_run="$OUT/runs/video"
if ((END_TO_END)); then
  root_args "$TRAIN_ROOT"
  video_input=(--videos "$TRAIN_LIST" "${WORDS[@]}" --classes "$CLASSES" --val-videos "$VAL_LIST")
  [[ -z $VAL_ROOT ]] || video_input+=(--val-root "$VAL_ROOT")
else
  video_input=(--features "$TRAIN_CACHE" --val-features "$TEST_CACHE" --classes "$CLASSES")
fi
video_args=(train-video --recipe "$RECIPE" "${video_input[@]}" --model "$MODEL" --pretrained "$PRETRAINED"
            --frames "$FRAMES" --out "$video_run" --resume "${EPOCH_ARGS[@]}" "${WORKER_ARGS[@]}")
[[ -z ${SHOTS:-} ]] || video_args+=(--shots "$SHOTS")
[[ -z ${SHOTS_LIST:-} ]] || video_args+=(--shots-list "$SHOTS_LIST")
[[ -z ${INIT_FROM:-} ]] || video_args+=(--init-from "$INIT_FROM")
split_words EXTRA_TRAIN_VIDEO
run_stage train-video "$video_run/last.pt" accelerate-train "${video_args[@]}" "${WORDS[@]}"

# Attributes branch
attrs_args=()
if [[ -n ${LEXICON:-} ]]; then
  ATTR_MODEL=${ATTR_MODEL:-$MODEL}
  if [[ -z ${ATTR_PRETRAINED:-} ]]; then
    [[ $ATTR_MODEL == "$MODEL" ]] || die "ATTR_MODEL=$ATTR_MODEL needs ATTR_PRETRAINED (its weights)"
    ATTR_PRETRAINED=$PRETRAINED
  fi
  ATTR_FRAMES=${ATTR_FRAMES:-$FRAMES}
  ATTR_VIEWS=${ATTR_VIEWS:-1x1}
  if ((!END_TO_END)) && [[ $ATTR_MODEL == "$MODEL" && $ATTR_PRETRAINED == "$PRETRAINED" && $ATTR_FRAMES == "$FRAMES" ]]; then
    attr_train_cache=$TRAIN_CACHE attr_test_cache=$TEST_CACHE  # the same CLIP: reuse the caches
  else
    attr_train_cache="$OUT/features/attr_train.h5" attr_test_cache="$OUT/features/attr_val_${ATTR_VIEWS}.h5"
    extract extract-attr-train "$TRAIN_LIST" "$TRAIN_ROOT" "$ATTR_MODEL" "$ATTR_PRETRAINED" "$ATTR_FRAMES" 1x1 "$attr_train_cache"
    extract extract-attr-test "$VAL_LIST" "$VAL_ROOT" "$ATTR_MODEL" "$ATTR_PRETRAINED" "$ATTR_FRAMES" "$ATTR_VIEWS" "$attr_test_cache"
  fi
  attr_dir="$OUT/attributes"
  split_words EXTRA_GEN_ATTRIBUTES
  gen_extra=(--lexicon "$LEXICON" --top-k "${TOP_K:-5}" --classes "$CLASSES" "${WORDS[@]}")
  run_stage gen-attributes-train "$attr_dir/train.csv" plain gen-attributes --features "$attr_train_cache" \
    --out "$attr_dir/train.csv" "${gen_extra[@]}"
  run_stage gen-attributes-test "$attr_dir/val.csv" plain gen-attributes --features "$attr_test_cache" \
    --out "$attr_dir/val.csv" --scores "$attr_dir/val_attrs_zero_shot.csv" "${gen_extra[@]}"
  attrs_args=(--attributes "$attr_dir/val.csv" --fuse "${FUSE:-0.6}")
  if ((TRAIN_ATTRS)); then
    attrs_run="$OUT/runs/attrs"
    train_attrs=(train-attrs --attributes "$attr_dir/train.csv" --val-attributes "$attr_dir/val.csv"
                 --classes "$CLASSES" --model "${ATTR_TEXT_MODEL:-$MODEL}"
                 --pretrained "${ATTR_TEXT_PRETRAINED:-$PRETRAINED}" --out "$attrs_run" --resume)
    [[ -z ${ATTRS_RECIPE:-} ]] || train_attrs+=(--recipe "$ATTRS_RECIPE")
    [[ -z ${ATTRS_TUNE:-} ]] || train_attrs+=(--tune "$ATTRS_TUNE")
    attrs_epochs=${ATTRS_EPOCHS:-${EPOCHS:-}}
    [[ -z $attrs_epochs ]] || train_attrs+=(--epochs "$attrs_epochs")
    split_words EXTRA_TRAIN_ATTRS
    run_stage train-attrs "$attrs_run/last.pt" accelerate-train "${train_attrs[@]}" "${WORKER_ARGS[@]}" "${WORDS[@]}"
    attrs_args+=(--attrs-checkpoint "$attrs_run")
  fi
elif [[ -n ${FUSE:-} ]]; then
  die "FUSE needs the Attributes branch: set LEXICON"
fi

# Evaluation
eval_input
split_words EXTRA_EVAL
for protocol in "${PROTOCOL_LIST[@]}"; do
  dir="$OUT/eval/$protocol"
  run_stage "eval-$protocol" "$dir/metrics.json" plain eval --checkpoint "$video_run" "${EVAL_INPUT[@]}" \
    --views "$VIEWS" --classes "$CLASSES" "${attrs_args[@]}" --protocol "$protocol" --out "$dir" \
    "${WORKER_ARGS[@]}" "${WORDS[@]}"
done
say "bike pipeline: finished; metrics in $OUT/eval/*/metrics.json"
