"""Outer optimizers by name, from `config.optimizer`."""

from __future__ import annotations

import optax

from metajax.errors import ConfigError
from metajax.registry import Registry

OPTIMIZERS = Registry("optimizer.name")
OPTIMIZERS.register("adam", optax.adam)
OPTIMIZERS.register("adamw", optax.adamw)
OPTIMIZERS.register("sgd", optax.sgd)
OPTIMIZERS.register("rmsprop", optax.rmsprop)


def make_optimizer(cfg) -> optax.GradientTransformation:
  """`cfg`: name, learning_rate, and optionally decay_every / decay_rate (staircase
  exponential decay; 0 = constant) and clip_norm (0 = none)."""
  factory = OPTIMIZERS.get(cfg.name)
  if not cfg.learning_rate > 0:
    raise ConfigError("optimizer.learning_rate", cfg.learning_rate, "must be positive", "> 0")
  decay_every = cfg.get("decay_every", 0)
  if decay_every < 0:
    raise ConfigError("optimizer.decay_every", decay_every, "must be >= 0", "0 (constant) or a step count")
  lr = cfg.learning_rate
  if decay_every:
    lr = optax.exponential_decay(cfg.learning_rate, decay_every, cfg.get("decay_rate", 0.5),
                                 staircase=True)
  opt = factory(lr)
  if cfg.get("clip_norm", 0):
    opt = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt)
  return opt
