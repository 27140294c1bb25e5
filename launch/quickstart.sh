#!/usr/bin/env bash
# Creates the environment if missing, then runs the main job: Prototypical Networks
# meta-trained on the offline glyphs dataset (generated on first use), evaluated on
# glyphs meta-test and the real UCI digits, ending with the report.
# Extra arguments go to the launcher, e.g. --config.train.steps=500.
source "$(dirname "$0")/env.sh"
WORKDIR="${WORKDIR:-runs/quickstart}"
python -m launch.main --config=configs/protonet_glyphs.py --workdir="$WORKDIR" "$@"
echo
cat "$WORKDIR/report.md"
echo
echo "(report: $WORKDIR/report.md, plots beside it; TensorBoard: tensorboard --logdir $WORKDIR)"
