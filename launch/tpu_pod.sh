#!/bin/bash
# metajax on a Cloud TPU VM pod slice: the same command on every worker.
#
#   bash launch/tpu_pod.sh NAME ZONE --config=configs/maml_glyphs.py --workdir=/mnt/shared/runs/maml
#
# Runs `python -m launch.main --distributed ARGS` on all workers of TPU VM NAME at once
# (gcloud ... ssh --worker=all). On a TPU VM, jax.distributed.initialize() takes the
# process count, this worker's id and the coordinator from the TPU metadata server, so no
# address is given. The checkout and .venv (`pip install -e . "jax[tpu]"`) must exist at the
# same path on every worker (first: the same command with `git clone` / `bash
# launch/test.sh`); --workdir must be a directory all workers share (an NFS or Filestore
# mount: metajax's run log writes with Python's os, so not a gs:// path).
# NOT TESTED on a TPU pod: what was tested is README "Scale out".
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash launch/tpu_pod.sh TPU_NAME ZONE --config=... --workdir=... [flags]" >&2
  exit 2
fi
name="$1" zone="$2"
shift 2
repo="${METAJAX_REMOTE_DIR:-~/metajax}"
gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all \
    --command="cd $repo && .venv/bin/python -m launch.main --distributed $(printf '%q ' "$@")"
