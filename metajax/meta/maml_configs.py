"""Shared config builders for the MAML-family configs in `configs/` (one place per protocol).

`configs/<algorithm>_<dataset>.py` call these with their algorithm name, so every
algorithm runs the same protocol and differs only in `config.algorithm` (and the
flags `metajax.meta.maml.VARIANTS` derives from it). Modes: '' (the published
protocol), 'tiny' (seconds on CPU, for tests), '20way' (images only).
"""

from __future__ import annotations

import ml_collections


def _maml(**kw) -> ml_collections.ConfigDict:
  """`config.maml`: the inner loop. Variant flags (first_order, head_only, learn_lr) come from
  `config.algorithm` unless set here; every field of `MAMLConfig` may be overridden."""
  base = {"inner_steps": 1, "inner_lr": 0.01, "eval_inner_steps": None, "curve_steps": 10,
          "inner_optimizer": "sgd", "remat": False, "unroll": True, "multi_step_loss": False,
          "msl_anneal_steps": 1000, "batch_norm": "transductive", "task_batching": "vmap"}
  base.update(kw)
  return ml_collections.ConfigDict(base)


def sinusoid(algorithm: str, mode: str = "") -> ml_collections.ConfigDict:
  """MAML sinusoid regression (Finn et al. 2017, sec. 5.1): MLP 40-40, K=10 support and
  10 query points, 1 inner SGD step with alpha=0.01, meta-batch 25, Adam 1e-3, 70k steps.
  Meta-test: 600 tasks, K=5 and K=10, MSE on 100 query points after 0..10 steps."""
  c = ml_collections.ConfigDict()
  c.experiment = "fewshot"
  c.seed = 0
  c.dataset = "sinusoid"
  c.data_dir = ""
  c.model = "mlp"
  c.model_kwargs = ml_collections.ConfigDict({"hidden": (40, 40)})
  c.algorithm = algorithm
  c.ways, c.shots, c.queries, c.meta_batch, c.rotations = 1, 10, 10, 25, False
  c.optimizer = ml_collections.ConfigDict(
      {"name": "adam", "learning_rate": 1e-3, "decay_every": 0, "decay_rate": 0.5, "clip_norm": 0.0})
  c.num_steps = 70000
  c.log_every = 500
  c.checkpoint_every = 5000
  c.maml = _maml(inner_steps=1, inner_lr=0.01)
  c.eval = ml_collections.ConfigDict({
      "datasets": ("sinusoid",), "ways": (1,), "shots": (5, 10), "queries": 100,
      "episodes": 600, "batch": 25, "val_every": 5000, "val_episodes": 100})
  if mode == "tiny":
    c.model_kwargs.hidden = (8, 8)
    c.meta_batch, c.num_steps, c.log_every, c.checkpoint_every = 2, 2, 1, 2
    c.eval.shots, c.eval.queries, c.eval.episodes, c.eval.batch = (5,), 5, 2, 2
    c.eval.val_every, c.eval.val_episodes = 2, 2
    c.maml.curve_steps = 2
  elif mode:
    raise ValueError(f"unknown config mode {mode!r}; valid: '' or 'tiny'")
  return c


def images(algorithm: str, mode: str = "") -> ml_collections.ConfigDict:
  """MAML few-shot classification, Omniglot protocol (Finn et al. 2017, sec. 5.2) on the offline
  glyphs dataset: conv4 with 64 filters, 5-way, 1 inner step with alpha=0.4 (3 at meta-test),
  meta-batch 32, Adam 1e-3, rotations as new classes. '20way': 5 steps, alpha=0.1, meta-batch 16.
  Meta-test: 600 episodes of glyphs (new scripts' classes) and the real UCI digits."""
  c = ml_collections.ConfigDict()
  c.experiment = "fewshot"
  c.seed = 0
  c.dataset = "glyphs"
  c.data_dir = ""
  c.model = "conv4"
  # 'auto': im2col conv + reshape pool on CPU (same function and parameters as nn.Conv /
  # nn.max_pool, ~13x faster for vmapped per-task weights), XLA ops elsewhere.
  c.model_kwargs = ml_collections.ConfigDict(
      {"filters": 64, "depth": 4, "conv_impl": "auto", "pool_impl": "auto"})
  c.algorithm = algorithm
  c.ways, c.shots, c.queries, c.meta_batch, c.rotations = 5, 1, 5, 32, True
  c.optimizer = ml_collections.ConfigDict(
      {"name": "adam", "learning_rate": 1e-3, "decay_every": 0, "decay_rate": 0.5, "clip_norm": 0.0})
  c.num_steps = 60000
  c.log_every = 100
  c.checkpoint_every = 1000
  c.maml = _maml(inner_steps=1, inner_lr=0.4, eval_inner_steps=3)
  c.eval = ml_collections.ConfigDict({
      "datasets": ("glyphs", "uci_digits"), "ways": (5,), "shots": (1,), "queries": 15,
      "episodes": 600, "batch": 20, "val_every": 1000, "val_episodes": 100})
  if mode == "20way":
    c.ways, c.meta_batch, c.eval.ways = 20, 16, (20,)
    c.maml.inner_steps, c.maml.inner_lr, c.maml.eval_inner_steps = 5, 0.1, 5
  elif mode == "tiny":
    c.model_kwargs.filters, c.model_kwargs.depth = 4, 1
    c.queries, c.meta_batch, c.num_steps, c.log_every, c.checkpoint_every = 2, 2, 2, 1, 2
    c.eval.queries, c.eval.episodes, c.eval.batch = 2, 2, 2
    c.eval.val_every, c.eval.val_episodes = 2, 2
    c.maml.curve_steps, c.maml.eval_inner_steps = 1, 1
  elif mode:
    raise ValueError(f"unknown config mode {mode!r}; valid: '', '20way' or 'tiny'")
  return c
