"""Prototypical Networks, conv4, on the offline glyphs dataset (the default job).

Train 20-way 1-shot episodes (5 queries, rotations as new classes), test 5- and 20-way on
glyphs meta-test and 5-way on the real UCI handwritten digits (cross-domain):

  python -m launch.main --config=configs/protonet_glyphs.py --workdir=runs/protonet_glyphs_1shot
  python -m launch.main --config=configs/protonet_glyphs.py --workdir=runs/protonet_glyphs_5shot \
      --config.episodes.shots=5 --config.eval.shots='(5,)' --config.train.steps=2000

Should reach about 97% (5-way) and 91% (20-way) on glyphs and 83% on UCI digits at 1 shot;
99%, 96% and 93% at 5 shots (600 episodes, +-0.2 to 0.7 points 95% CI; measurements with
their dates in BUILD_NOTES.md). `bash launch/quickstart.sh` runs the first command.
Mode `tiny` (--config=configs/protonet_glyphs.py:tiny) runs a few steps on CPU.
"""

import ml_collections

from configs import common


def get_config(mode: str = "") -> ml_collections.ConfigDict:
  common.check_mode(mode)
  c = common.config("fewshot", seed=0)
  c.data = common.data("glyphs", data_dir="")  # '' -> $METAJAX_DATA_DIR or ~/.cache/metajax
  # XLA's convolution beats im2col for ProtoNet's first-order step on CPU (bench/meta_step.py);
  # pool 'auto' = strided-tap max-pool on CPU. All implementations give the same values
  # (tests/test_conv_impl.py).
  c.model = common.model("conv4", filters=64, depth=4, conv_impl="xla", pool_impl="auto")
  c.learner = ml_collections.ConfigDict(dict(name="protonet"))  # no other setting

  # Meta-training episodes; rotations: Omniglot augmentation, 4 rotations of a class are 4 classes.
  c.episodes = ml_collections.ConfigDict(dict(ways=20, shots=1, queries=5, rotations=True))
  c.train = common.train(steps=3000, log_every=50, checkpoint_every=500, meta_batch=1)
  c.optimizer = common.optimizer("adam", 1e-3, schedule="step", decay_every=1000, decay_rate=0.5)

  # Meta-test: every dataset x ways x shots; validation on the train dataset's 'val' split.
  c.eval = ml_collections.ConfigDict(dict(
      datasets=("glyphs", "uci_digits"), ways=(5, 20), shots=(1,), queries=15, episodes=600,
      batch=20, val_every=500, val_episodes=100))
  if mode == "tiny":
    c.model.filters = 8
    c.episodes.ways = 5
    c.train.steps, c.train.log_every, c.train.checkpoint_every = 4, 2, 2
    c.eval.ways, c.eval.queries, c.eval.episodes, c.eval.batch = (5,), 3, 4, 2
    c.eval.val_every, c.eval.val_episodes = 2, 2
  return c
