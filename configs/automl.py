"""AutoML: Hyperband over MLP, random forest and gradient boosting on a classification set.

  python -m launch.main --config=configs/automl.py --workdir=/tmp/automl \
      [--config.data.name=wine] [--config.search.scheduler=asha --config.search.max_trials=40]

On breast_cancer (scikit-learn ships it, so it runs offline) it should reach 0.97-0.99
validation and 0.95-0.98 test accuracy (49 Hyperband trials, seeds 0-2) in about a minute
on a 2-core CPU; measured figures are in BUILD_NOTES.md. The workdir gets report.md, a self-contained
report.html, metrics.jsonl, result.json, the resumable search state, and the selected model
(model.json + model.pkl: `metajax.load_trained(workdir).predict(X)`). Rerunning the same
command resumes without redoing finished rungs. `:tiny`: iris, six trials, seconds.

After the search, `selection` picks the final model: on small data (< 2,000 train+validation
rows) the top 5 configurations are re-scored out of fold over holdouts of train+validation, a
greedy ensemble is kept if it scores better, and the result is refit on train+validation
(with `search.time_budget_s`, each step only where its estimated cost fits in the time left:
the search stops at 1 - `selection.time_share` of the budget); the report warns when the
rows cannot separate the top two configurations (on breast_cancer they usually cannot).

Every run records its trials in the experience store (`store_path`) and, before searching,
reads it: the best configurations of the nearest past datasets fill part of the first rung
(`search.warm_*`; report.md and result.json say what was reused, from which datasets);
`--config.search.warm_start=False` searches cold. `--config.search.prior=DIR` centres the
first rung's learning rates on an hp_metalearn run's learned rates.

This file is the one definition of AutoML's defaults: `metajax.automl.AutoML(...)` builds
its config from it too.
"""

import ml_collections

# One search space per family: each hyperparameter is ('log_uniform', lo, hi) |
# ('uniform', lo, hi) | ('int', lo, hi) | ('choice', (a, b, ...)). layers, units and
# batch_size are structural (they shape the compiled program); the rest vary per member.
_NEURAL = dict(
    learning_rate=("log_uniform", 1e-3, 1e-1),
    batch_size=("choice", (16, 32, 64)),
    layers=("choice", (2, 3, 4)),
    units=("choice", (64, 128, 256)),
    optimizer=("choice", ("adam", "sgd", "rmsprop")),  # metajax.optim 'switch' choices
    dropout=("choice", (0.2, 0.5)),
)


def get_config(mode: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "automl"
  c.seed = 0

  c.data = ml_collections.ConfigDict(dict(
      name="breast_cancer",  # a metajax.data name (tables, texts, images) or tfds:NAME
      data_dir="",           # tfds / image sets: '' -> their default directory
      max_rows=0,            # 0: every row; else a stratified subsample
      val_frac=0.2,
      test_frac=0.2,
      seq_len=64,            # text: tokens per document
      vocab_size=2000,       # text: BPE vocabulary trained offline on the training split
  ))

  c.search = ml_collections.ConfigDict(dict(
      metric="accuracy",     # accuracy | balanced_accuracy | f1 | log_loss (on validation)
      scheduler="hyperband",  # sh | hyperband | asha
      sampler="sobol",       # sobol | random
      eta=3,
      min_budget=1.0,        # epochs (neural) / units of `trees_per_budget` trees (ensembles)
      max_budget=27.0,
      n_trials=27,           # successive halving: trials in the first rung
      max_trials=0,          # hyperband / asha: cap on trials started (0: none)
      hyperband_iterations=1,  # 0: repeat brackets until the time budget
      asha_workers=8,        # asha: jobs per simulated wave
      group_size=4,          # consecutive samples sharing architecture + batch size
      trees_per_budget=4,    # random-forest trees per budget unit
      boost_per_budget=16,   # gradient-boosting iterations per budget unit (432 at 27)
      time_budget_s=0.0,     # 0: no wall-clock limit; else search + final selection together
      progress=True,         # one console line per rung (trials, best so far, time left)
      families=(),           # empty: every family that fits the data (mlp/cnn/gru, rf, gbm;
                             # texts also linear: TF-IDF + logistic regression)
      # Warm start (metajax/automl/warmstart.py): before searching, read the experience store
      # and seed the first rung with the best configurations of the nearest past datasets.
      warm_start=True,       # False: cold start (the search is still recorded in the store)
      warm_frac=0.34,        # at most this share of the first rung comes from the store
      warm_neighbours=3,     # past datasets consulted, nearest first
      warm_max_distance=1.0,  # metafeatures.distance beyond which a dataset is no neighbour
      prior="",              # learned learning rates: a JSON file or a metajax.hpo workdir
  ))

  c.space = ml_collections.ConfigDict(dict(
      mlp=dict(_NEURAL),
      cnn=dict(_NEURAL, units=("choice", (32, 64, 128))),  # conv channels = units // 2
      gru=dict(_NEURAL, layers=("choice", (1,)), units=("choice", (32, 64, 128))),
      # the tree families get as many knobs as the neural ones ('none': no class weights)
      rf=dict(max_depth=("choice", (0, 8, 16, 32)),  # 0: unlimited
              max_features=("choice", ("sqrt", "log2", 0.3, 0.5, 0.8, 1.0)),
              min_samples_leaf=("int", 1, 8),
              criterion=("choice", ("gini", "entropy")),
              class_weight=("choice", ("none", "balanced"))),
      gbm=dict(learning_rate=("log_uniform", 1e-2, 3e-1),
               max_leaf_nodes=("choice", (7, 15, 31, 63, 127)),
               max_depth=("choice", (0, 4, 8)),  # 0: unlimited
               l2_regularization=("log_uniform", 1e-4, 10.0),
               min_samples_leaf=("int", 2, 60),
               max_features=("uniform", 0.3, 1.0),  # share of features per split
               class_weight=("choice", ("none", "balanced"))),
      # logistic regression: on TF-IDF word 1-2-grams for texts, else the
      # flat features; fitted once (no budget axis)
      linear=dict(C=("log_uniform", 1e-2, 1e3),
                  class_weight=("choice", ("none", "balanced"))),
  ))

  # The final model (metajax/automl/selection.py): on small data the top configurations are
  # re-scored out-of-fold over stratified holdouts of train+validation (each of the search's
  # own split sizes), an ensemble is kept when it scores better, then a refit on train+validation.
  c.selection = ml_collections.ConfigDict(dict(
      top_k=5,               # candidates: the leaderboard's top configurations
      small_rows=2000,       # fewer train+validation rows: out-of-fold scores over holdouts
      time_share=0.25,       # with a time budget: its share kept for holdouts and refit
      ensemble=True,         # greedy ensemble selection (Caruana et al.), kept if it scores better
      ensemble_rounds=25,    # greedy additions, with replacement
      refit=True,            # retrain the chosen configuration(s) on train+validation
  ))

  # Beside the search, at the same budget: random search, and the hand-set configuration a
  # practitioner would try first (of the first neural family searched), trained to max_budget.
  c.baselines = ml_collections.ConfigDict(dict(
      enabled=True,
      hand_set=dict(
          mlp=dict(learning_rate=1e-3, batch_size=32, layers=2, units=128, optimizer="adam",
                   dropout=0.2),
          cnn=dict(learning_rate=1e-3, batch_size=32, layers=2, units=64, optimizer="adam",
                   dropout=0.2),
          gru=dict(learning_rate=1e-3, batch_size=32, layers=1, units=64, optimizer="adam",
                   dropout=0.2)),
  ))

  c.num_devices = 0  # population axis over this many devices (0: all)
  # JAX's persistent compilation cache ('' for none): a later search on data of the same
  # shapes loads its programs instead of compiling them (metajax/compile_cache.py)
  c.compile_cache = "~/.cache/metajax/jax_compilation_cache"
  # the experience store ('' for none; '{workdir}' is substituted); the file name carries the
  # store's schema version, so an older store is left as it is
  c.store_path = "~/.cache/metajax/automl_experience.v2.sqlite"

  if mode == "tiny":  # seconds on CPU: iris, six trials, budgets 1 and 3
    c.data.name = "iris"
    c.search.scheduler = "sh"
    c.search.n_trials = 6
    c.search.group_size = 3
    c.search.max_budget = 3.0
    c.search.families = ("mlp", "rf")
    # the hand-set default's architecture: search and baselines share one compiled program
    c.space.mlp.units = ("choice", (128,))
    c.space.mlp.layers = ("choice", (2,))
    c.space.mlp.batch_size = ("choice", (32,))
    c.store_path = "{workdir}/experience.sqlite"
  elif mode:
    from metajax.errors import ConfigError
    raise ConfigError("mode", mode, "unknown config mode", "'', 'tiny'")
  return c
