"""MAML family on sinusoid regression, the MAML protocol (Finn et al. 2017, sec. 5.1).

MLP 40-40, K=10 support and 10 query points, 1 inner SGD step, meta-batch 25, Adam 1e-3,
70,000 steps; meta-test: 600 tasks at K=5 and K=10, MSE on 100 query points after 0..10
steps. The mode picks the algorithm, comma-separated with `tiny` (`learner.name` sets the
flags in `metajax.meta.maml.VARIANTS`): maml (default), fomaml, anil, lslr, metasgd.

Inner step alpha = 0.001, as the authors' released code runs this experiment (its
`update_lr` default; the paper's text says 0.01). At 0.01 the meta-learned initialisation is
so sharp that fixed-alpha steps on K=5 points diverge after the fourth (mean MSE 0.56 after
1 step, 0.84 after 5, overflow by 8); at 0.001 every curve but ANIL's K=5 one falls
monotonically to step 10 (ANIL adapts a linear head on features scaled for one step).

  python -m launch.main --config=configs/maml_sinusoid.py --workdir=runs/maml_sinusoid
  python -m launch.main --config=configs/maml_sinusoid.py:metasgd --workdir=runs/metasgd_sinusoid

Published MAML (K=5, 1 / 5 / 10 test steps): MSE about 0.67 / 0.38 / 0.35. Expected here
(BUILD_NOTES.md, about 2 min of training on a 2-core CPU): maml 0.56 / 0.27 / 0.24, lslr
0.50 / 0.23 / 0.21, metasgd 0.43 / 0.11 / 0.08.
Mode `tiny` (e.g. --config=configs/maml_sinusoid.py:lslr,tiny) runs a few steps on CPU.
"""

import ml_collections

from configs import common
from metajax.errors import ConfigError
from metajax.meta.maml import VARIANTS


def get_config(mode: str = "") -> ml_collections.ConfigDict:
  parts = [p for p in mode.split(",") if p]
  for p in parts:
    common.check_mode(p, ("tiny", *VARIANTS))
  algorithms = [p for p in parts if p in VARIANTS] or ["maml"]
  if len(algorithms) > 1:
    raise ConfigError("mode", mode, f"it names {len(algorithms)} algorithms",
                      "at most one of " + ", ".join(VARIANTS) + ", with 'tiny'")

  c = common.config("fewshot", seed=0)
  c.data = common.data("sinusoid", data_dir="")  # generated on the fly
  c.model = common.model("mlp", hidden=(40, 40))
  # Every field of metajax.meta.maml.MAMLConfig (its `task` follows from the data).
  c.learner = ml_collections.ConfigDict(dict(
      name="maml", inner_steps=1, inner_lr=0.001,
      eval_inner_steps=ml_collections.config_dict.placeholder(int),  # None: inner_steps
      curve_steps=10, first_order=False, head_only=False,
      head=ml_collections.config_dict.placeholder(str),  # ANIL's head; None: the last module
      learn_lr="none", inner_optimizer="sgd", remat=False, unroll=True, multi_step_loss=False,
      msl_anneal_steps=1000, batch_norm="transductive", task_batching="vmap"))
  c.learner.update(name=algorithms[0], **VARIANTS[algorithms[0]])
  # ways: 1 (a task family, not classes); rotations: images only.
  c.episodes = ml_collections.ConfigDict(dict(ways=1, shots=10, queries=10, rotations=False))
  c.train = common.train(steps=70000, log_every=500, checkpoint_every=5000, meta_batch=25)
  c.optimizer = common.optimizer("adam", 1e-3)
  c.eval = ml_collections.ConfigDict(dict(
      datasets=("sinusoid",), ways=(1,), shots=(5, 10), queries=100, episodes=600, batch=25,
      val_every=5000, val_episodes=100))
  if "tiny" in parts:
    c.model.hidden = (8, 8)
    c.train.meta_batch, c.train.steps, c.train.log_every, c.train.checkpoint_every = 2, 2, 1, 2
    c.eval.shots, c.eval.queries, c.eval.episodes, c.eval.batch = (5,), 5, 2, 2
    c.eval.val_every, c.eval.val_episodes = 2, 2
    c.learner.curve_steps = 2
  return c
