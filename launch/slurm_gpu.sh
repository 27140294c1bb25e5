#!/bin/bash
# metajax on a Slurm GPU cluster: one process per GPU, the cluster detected by JAX.
#
#   sbatch --nodes=2 --gpus-per-node=8 launch/slurm_gpu.sh \
#       --config=configs/maml_glyphs.py --workdir=/shared/runs/maml
#
# srun starts one task per GPU (--ntasks-per-node = GPUs per node); in each task,
# `--distributed` makes jax.distributed.initialize() read SLURM_JOB_ID, SLURM_NTASKS,
# SLURM_PROCID, SLURM_LOCALID and SLURM_STEP_NODELIST: process 0 on the first node is the
# coordinator, every process sees its own GPU, and the mesh spans all of them. --workdir must
# be a directory every node shares (Orbax writes each process's shards there; only process 0
# writes metrics and reports). The meta-batch / population must divide by the GPU count.
# NOT TESTED on a Slurm cluster: what was tested is README "Scale out".
#SBATCH --job-name=metajax
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
# pip-installed CUDA jax: `pip install -e . "jax[cuda12]"` into .venv beforehand, on a node
# with network (compute nodes often have none).
srun --ntasks-per-node="${SLURM_NTASKS_PER_NODE:-8}" --kill-on-bad-exit=1 \
    .venv/bin/python -m launch.main --distributed "$@"
