"""Compression table of trained models: full, int8, pruned (+ fine-tune) and distilled.

Run (sources: a finished configs/multimodal_sortofclevr.py run, its student from
configs/distill_sortofclevr.py, and a ProtoNet run of configs/protonet_glyphs.py):
  python -m launch.main --config=configs/compress_models.py --workdir=/tmp/compress \
      --config.multimodal.source=/tmp/mm_soc --config.multimodal.distilled=/tmp/distill \
      --config.protonet.source=runs/quickstart
Tiny smoke run (seconds; trains tiny sources in the workdir, no distilled row):
  python -m launch.main --config=configs/compress_models.py:tiny --workdir=/tmp/c_tiny

Targets: int8 within 0.5 points of the full model's accuracy at about 4x smaller weights on
disk; the distilled student >= 95% of the teacher's relational accuracy with <= 1/4 of its
parameters. Reached with the default sources: int8 accuracy unchanged (multimodal 97.7 / 99.9,
ProtoNet 95.9) at 3.5x / 3.8x fewer bytes; 50% pruning + 200 steps 94.1 / 99.5 and 95.9; the
distilled student (configs/distill_sortofclevr.py) 54 / 87, short of its target. Results: BUILD_NOTES.md (Compression). Writes report.md and results.json; every
variant is a workdir under multimodal/ or protonet/ that `metajax.load_trained` reads.
"""

import ml_collections

from configs import common, multimodal_sortofclevr, protonet_glyphs


def get_config(mode: str = "") -> ml_collections.ConfigDict:
  common.check_mode(mode)
  c = common.config("compress", seed=0)
  # Sources: workdirs of finished runs; '' trains one with *_run inside the workdir first.
  # distilled: '' leaves the distilled row out.
  c.multimodal = ml_collections.ConfigDict(dict(
      source="", distilled="", eval_batch=500,
      source_run=multimodal_sortofclevr.get_config(mode)))
  c.protonet = ml_collections.ConfigDict(dict(
      source="", ways=5, shots=1, queries=15, episodes=600,
      source_run=protonet_glyphs.get_config(mode)))
  # Magnitude pruning of the rank >= 2 weights ('global' threshold or per 'layer'), then a
  # short fine-tune (adam(w), constant learning rate) with the masks fixed.
  c.prune = dict(sparsity=0.5, scope="global", learning_rate=1e-4, multimodal_steps=200,
                 protonet_steps=200)
  # CPU latency per example: median of `repeats` predict calls at batch 1 and `batch`.
  c.latency = dict(repeats=20, batch=128)

  if mode == "tiny":
    c.multimodal.source_run.eval.update(late_fusion_steps=0, ablations=(), ablation_steps=0)
    c.multimodal.source_run.eval.fewshot.episodes = 0
    c.multimodal.eval_batch = 64
    c.protonet.update(episodes=4, queries=3)
    c.protonet.source_run.eval.update(datasets=("glyphs",))
    c.prune.update(multimodal_steps=2, protonet_steps=2)
    c.latency.update(repeats=2, batch=4)
  return c
