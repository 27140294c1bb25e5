#!/usr/bin/env bash
# Creates the environment if missing, then runs the main job: Prototypical Networks
# meta-trained on the offline glyphs dataset (generated on first use), evaluated on
# glyphs meta-test and the real UCI digits, ending with the report.
# Extra arguments go to the launcher, e.g. --config.train.steps=100 --workdir=runs/quickcheck
# (the workdir defaults to runs/quickstart; its report is the one printed).
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/env.sh
workdir="${WORKDIR:-runs/quickstart}"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --workdir=*) workdir="${1#--workdir=}" ;;
    --workdir) [ $# -ge 2 ] || { echo "metajax: --workdir needs a value" >&2; exit 2; }
               workdir="$2"; shift ;;
    *) args+=("$1") ;;
  esac
  shift
done
python -m launch.main --config=configs/protonet_glyphs.py --workdir="$workdir" ${args[@]+"${args[@]}"}
echo
cat "$workdir/report.md"
echo
echo "(report: $workdir/report.md, plots beside it; TensorBoard: tensorboard --logdir $workdir)"
