"""Pieces every experiment config shares, so one concept has one name and one default.

  data       name, data_dir ('' -> $METAJAX_DATA_DIR or ~/.cache/metajax); per_host_shard
             where a driver can read only its process's shard of the training data
  model      name (a `metajax.models` registry name) and that model's arguments
  optimizer  the keys of `metajax.optim.make_optimizer`
  train      steps, log_every, checkpoint_every (and the experiment's batch size)

Each config file calls these and sets every value it uses, so `--config.x=y` can
override any hyperparameter and the file shows them all.
"""

import ml_collections


def config(experiment: str, seed: int = 0) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = experiment
  c.seed = seed
  return c


def data(name: str, data_dir: str = "", **kw) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(name=name, data_dir=data_dir, **kw))


def model(name: str, **kw) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(name=name, **kw))


def optimizer(name: str = "adam", learning_rate: float = 1e-3, *, weight_decay: float = 0.0,
              clip_norm: float = 0.0, schedule: str = "constant", warmup_steps: int = 0,
              decay_fraction: float = 0.2, decay_every: int = 0,
              decay_rate: float = 0.5) -> ml_collections.ConfigDict:
  """Every key of `metajax.optim.make_optimizer` (the 'switch' choices are AutoML's)."""
  return ml_collections.ConfigDict(dict(
      name=name, learning_rate=learning_rate, weight_decay=weight_decay, clip_norm=clip_norm,
      schedule=schedule, warmup_steps=warmup_steps, decay_fraction=decay_fraction,
      decay_every=decay_every, decay_rate=decay_rate))


def train(steps: int, log_every: int, checkpoint_every: int, **kw) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(steps=steps, log_every=log_every,
                                        checkpoint_every=checkpoint_every, **kw))


def check_mode(mode: str, valid=("", "tiny")) -> None:
  """ConfigError (key 'mode', listing `valid`) unless `mode` is one of `valid`."""
  from metajax.errors import ConfigError
  if mode not in valid:
    raise ConfigError("mode", mode, "unknown config mode", ", ".join(map(repr, valid)))
