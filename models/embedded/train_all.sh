#!/usr/bin/env bash
# Trains the embedded zoo in dependency order with the suite's training command, then copies each
# model (float16) and its loss log (xz-packed: loss.jsonl.xz) into models/embedded/<name>/, replacing the
# shipped folder once its training has ended. Run from the repository root:
#   bash models/embedded/train_all.sh [RUNS_DIR] [NAME ...]
# with no NAME, every model. A run cut short resumes each model from RUNS_DIR/<name>/train_state.pt.
set -euo pipefail
runs="${1:-runs}"; shift || true
order=(unet16-edm-m64 unet32-edm-m64 uvit-edm-m64 unet16-edm-l2048 unet32-edm-l2048 unet32-vp-eps-l2048
       unet32-subvp-eps-l2048 unet32-ve-l2048 uvit-edm-l2048 unet16-edm-cond-l2048 uvit-edm-cond-l2048
       unet16-edm-distill-l2048
       unet16-edm-cd-l2048 unet32-edm-other-l2048 unet32-edm-ft-m64 unet32-edm-ft-l2048
       unet16-edm-m4 unet16-edm-m4-seed1 unet32-edm-m4 uvit-edm-m4
       unet16-edm-l2048-seed1 uvit-edm-l2048-seed1 vae-conv-l2048 vae-mlp-l2048)
# the models named, in dependency order whatever order they are named in (a student named before its teacher would
# distil from the old teacher, which the teacher's run then replaces)
names=()
for name in "$@"; do
  [[ " ${order[*]} " == *" $name "* ]] || { echo "unknown model $name; valid: ${order[*]}" >&2; exit 2; }
done
for name in "${order[@]}"; do
  if [[ $# -eq 0 || " $* " == *" $name "* ]]; then names+=("$name"); fi
done
for name in "${names[@]}"; do
  dest="models/embedded/$name"
  start=$(date +%s)
  rc=0
  python -m models.training "models/embedded/configs/$name.toml" "$runs/$name" --float16 || rc=$?
  end=$(date +%s)
  # the wall time of every invocation on this run folder, added up (a run cut short too, before the script stops):
  # a run cut short and resumed is timed whole
  mkdir -p "$runs/$name"
  total=$(( $(cat "$runs/$name/wall_seconds" 2>/dev/null || echo 0) + end - start ))
  echo "$total" > "$runs/$name/wall_seconds"
  if (( rc != 0 )); then
    echo "$name: training stopped (exit $rc) after $total s in all; run again to resume" >&2
    exit "$rc"
  fi
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp" && cp "$runs/$name/model/"* "$dest.tmp/"
  python -c "import sys; from models.training import pack_loss_log; pack_loss_log(*sys.argv[1:])" "$runs/$name" "$dest.tmp"
  echo "{\"wall_seconds\": $total, \"threads\": $(nproc)}" > "$dest.tmp/train_time.json"
  # the shipped folder is replaced by two renames: at every moment one whole folder is at $dest or $dest.old
  rm -rf "$dest.old" && { [[ ! -e "$dest" ]] || mv "$dest" "$dest.old"; } && mv "$dest.tmp" "$dest" && rm -rf "$dest.old"
  echo "$name: $total s"
done
