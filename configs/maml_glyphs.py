"""MAML family on the offline glyphs dataset, the MAML Omniglot protocol (Finn et al. 2017).

conv4 (64 filters), 5-way 1-shot, 1 inner SGD step (alpha=0.4; 3 at meta-test), second order,
transductive batch norm, meta-batch 32, Adam 1e-3, rotations as new classes; meta-test on
glyphs (new scripts' classes) and the real UCI digits. The mode picks the algorithm and
sizes, comma-separated (`learner.name` sets the flags in `metajax.meta.maml.VARIANTS`):

  maml (default) | fomaml (first order) | anil (head only) | lslr (learned per-layer per-step
  rates) | metasgd (learned per-parameter rates); 20way (5 steps, alpha=0.1, meta-batch 16);
  tiny (a few steps on CPU, for tests)

  python -m launch.main --config=configs/maml_glyphs.py --workdir=runs/maml_glyphs_1shot
  python -m launch.main --config=configs/maml_glyphs.py:lslr --workdir=runs/lslr_glyphs_1shot
  python -m launch.main --config=configs/maml_glyphs.py:fomaml,20way --workdir=runs/fomaml_20way
  python -m launch.main --config=configs/maml_glyphs.py --workdir=runs/maml_glyphs_5shot \
      --config.episodes.shots=5 --config.eval.shots='(5,)'

MAML on Omniglot reaches 98.7% 5-way 1-shot; glyphs is an offline stand-in, so numbers are not
comparable, and the full 60,000 steps were not run on CPU. A one-minute run,
`--config.train.steps=150 --config.model.filters=32 --config.train.meta_batch=8
--config.eval.queries=5`, should reach
about 73% (maml), 58% (fomaml), 76% (lslr) and 75% (metasgd) on glyphs 5-way 1-shot and
about 48% on UCI digits (BUILD_NOTES.md).
"""

import ml_collections

from configs import common
from metajax.errors import ConfigError
from metajax.meta.maml import VARIANTS


def get_config(mode: str = "") -> ml_collections.ConfigDict:
  parts = [p for p in mode.split(",") if p]
  for p in parts:
    common.check_mode(p, ("tiny", "20way", *VARIANTS))
  algorithms = [p for p in parts if p in VARIANTS] or ["maml"]
  if len(algorithms) > 1:
    raise ConfigError("mode", mode, f"it names {len(algorithms)} algorithms",
                      "at most one of " + ", ".join(VARIANTS) + ", with 'tiny'")

  c = common.config("fewshot", seed=0)
  c.data = common.data("glyphs", data_dir="")  # '' -> $METAJAX_DATA_DIR or ~/.cache/metajax
  # conv/pool 'auto': im2col + strided-tap max-pool on CPU (same function, derivatives and
  # parameters as nn.Conv / nn.max_pool, ~13x faster for vmapped per-task weights), XLA ops
  # elsewhere. task_batching 'scan': each task's meta-gradient inside a lax.scan, summed
  # (faster than 'vmap' on CPU, at less memory: BUILD_NOTES.md); task_chunk 0: one task per
  # device per iteration, so a meta-batch sharded over the devices scans locally.
  c.model = common.model("conv4", filters=64, depth=4, conv_impl="auto", pool_impl="auto")
  # Every field of metajax.meta.maml.MAMLConfig (its `task` follows from the data).
  c.learner = ml_collections.ConfigDict(dict(
      name="maml", inner_steps=1, inner_lr=0.4, eval_inner_steps=3, curve_steps=10,
      first_order=False, head_only=False, head=ml_collections.config_dict.placeholder(str),
      learn_lr="none", inner_optimizer="sgd", remat=False, unroll=True, multi_step_loss=False,
      msl_anneal_steps=1000, batch_norm="transductive", task_batching="scan",
      task_chunk=0))
  c.learner.update(name=algorithms[0], **VARIANTS[algorithms[0]])
  c.episodes = ml_collections.ConfigDict(dict(ways=5, shots=1, queries=5, rotations=True))
  c.train = common.train(steps=60000, log_every=100, checkpoint_every=1000, meta_batch=32)
  c.optimizer = common.optimizer("adam", 1e-3)
  c.eval = ml_collections.ConfigDict(dict(
      datasets=("glyphs", "uci_digits"), ways=(5,), shots=(1,), queries=15, episodes=600,
      batch=20, val_every=1000, val_episodes=100))
  if "20way" in parts:
    c.episodes.ways, c.train.meta_batch, c.eval.ways = 20, 16, (20,)
    c.learner.inner_steps, c.learner.inner_lr, c.learner.eval_inner_steps = 5, 0.1, 5
  if "tiny" in parts:
    c.model.filters, c.model.depth = 4, 1
    c.episodes.queries = 2
    c.train.meta_batch, c.train.steps, c.train.log_every, c.train.checkpoint_every = 2, 2, 1, 2
    c.eval.queries, c.eval.episodes, c.eval.batch = 2, 2, 2
    c.eval.val_every, c.eval.val_episodes = 2, 2
    c.learner.curve_steps, c.learner.eval_inner_steps = 1, 1
  return c
