"""Few-shot on a finished Sort-of-CLEVR multimodal run, without retraining it.

Reads the trained run in `trained` (read-only) and writes report.md, results.json and the
episodic head's checkpoints to --workdir (rerun: the head resumes from its checkpoint):
  python -m launch.main --config=configs/multimodal_fewshot.py --workdir=/tmp/mm_fs \\
      --config.trained=/tmp/mm_soc
Tiny smoke run (seconds; without --config.trained it first trains the tiny model in
<workdir>/trained):
  python -m launch.main --config=configs/multimodal_fewshot.py:tiny --workdir=/tmp/mm_fs_tiny

5-way colour-of-the-closest-object episodes on the test split: the frozen fused embeddings
sit at chance (20%); the episodic head (last 2 encoder blocks fine-tuned with the ProtoNet
loss on synthetic colours, none of them a test class) is clearly above it. Results:
BUILD_NOTES.md. The eval.fewshot keys are those of configs/multimodal_sortofclevr.py.
"""

import ml_collections

from configs import common
from configs import multimodal_sortofclevr
from configs.multimodal_sortofclevr import fewshot_config


def get_config(mode: str = "") -> ml_collections.ConfigDict:
  common.check_mode(mode)
  c = common.config("multimodal_fewshot", seed=0)
  # The workdir of a finished Sort-of-CLEVR run, or '' to train trained_run in
  # <workdir>/trained first (resumable like any run; its own baselines and few-shot off).
  c.trained = ""
  c.trained_run = multimodal_sortofclevr.get_config(mode)
  c.trained_run.eval.update(late_fusion_steps=0, ablations=(), ablation_steps=0)
  c.trained_run.eval.fewshot.episodes = 0
  c.data_dir = ""    # '' -> the trained run's data.data_dir
  c.eval = dict(batch_size=500 if mode != "tiny" else 64, fewshot=fewshot_config(mode))
  return c
