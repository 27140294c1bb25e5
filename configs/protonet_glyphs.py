"""Prototypical Networks, conv4, on the offline glyphs dataset (the default job).

Train 20-way episodes (5 queries), test 5- and 20-way on glyphs meta-test and
5-way on the real UCI handwritten digits (cross-domain):

  python -m launch.main --config=configs/protonet_glyphs.py --workdir=runs/protonet_glyphs_1shot
  python -m launch.main --config=configs/protonet_glyphs.py --workdir=runs/protonet_glyphs_5shot \
      --config.shots=5 --config.eval.shots='(5,)'

`:tiny` (e.g. --config=configs/protonet_glyphs.py:tiny) runs a few steps on CPU.
Measured results are in BUILD_NOTES.md.
"""

import ml_collections


def get_config(mode: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "fewshot"
  c.seed = 0
  c.dataset = "glyphs"
  c.data_dir = ""  # '' -> $METAJAX_DATA_DIR or ~/.cache/metajax
  c.model = "conv4"
  # XLA's convolution beats im2col for ProtoNet's first-order step on CPU (bench/meta_step.py);
  # pool 'auto' = reshape-max on CPU. All implementations give the same values (tests/test_conv_impl.py).
  c.model_kwargs = ml_collections.ConfigDict({"filters": 64, "conv_impl": "xla", "pool_impl": "auto"})
  c.algorithm = "protonet"

  # Meta-training episodes.
  c.ways = 20
  c.shots = 1
  c.queries = 5
  c.meta_batch = 1
  c.rotations = True  # Omniglot augmentation: 4 rotations of a class are 4 classes

  c.optimizer = ml_collections.ConfigDict(
      {"name": "adam", "learning_rate": 1e-3, "decay_every": 1000, "decay_rate": 0.5, "clip_norm": 0.0})
  c.num_steps = 3000
  c.log_every = 50
  c.checkpoint_every = 500

  # Meta-test: every dataset x ways x shots; validation on the train dataset's 'val' split.
  c.eval = ml_collections.ConfigDict({
      "datasets": ("glyphs", "uci_digits"),
      "ways": (5, 20),
      "shots": (1,),
      "queries": 15,
      "episodes": 600,
      "batch": 20,
      "val_every": 500,
      "val_episodes": 100,
  })
  if mode == "tiny":
    c.model_kwargs.filters = 8
    c.ways, c.num_steps, c.log_every, c.checkpoint_every = 5, 4, 2, 2
    c.eval.ways, c.eval.queries, c.eval.episodes, c.eval.batch = (5,), 3, 4, 2
    c.eval.val_every, c.eval.val_episodes = 2, 2
  elif mode:
    raise ValueError(f"unknown config mode {mode!r}; valid: '' or 'tiny'")
  return c
