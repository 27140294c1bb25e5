"""One optimizer factory for every learner: optax, with hyperparameters as state.

`make_optimizer(cfg, steps)` builds

  clip_by_global_norm -> [L2 weight decay] -> direction -> [decoupled decay] -> scale(-lr_t)

wrapped in `optax.inject_hyperparams`, so its hyperparameters are arrays in the
optimizer state (`opt_state.hyperparams`):

  log_learning_rate  the base learning rate, in log space (searched and stored so)
  weight_decay       L2 (added to the gradient) or decoupled ('adamw'), times lr_t
  lr_scale           the schedule's multiplier of the base rate at this step, in [0, 1]
  optimizer          index into `cfg.choices` when `cfg.name == 'switch'`

and lr_t = exp(log_learning_rate) * lr_scale. Because they are state, a population
of trials is one vmapped program whose members differ only in these arrays
(`with_hyperparams`), and a meta-learner can differentiate through them.

Config keys (`config.optimizer`): name, learning_rate, weight_decay, clip_norm,
schedule ('constant' | 'cosine' | 'wsd' | 'step'), warmup_steps, decay_fraction
('wsd'), decay_every / decay_rate ('step'), choices ('switch').

  >>> tx = make_optimizer(ml_collections.ConfigDict(dict(name='adam', learning_rate=1e-3)))
  >>> state = tx.init(params)
  >>> hyperparams(state)['log_learning_rate']   # log(1e-3)
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from metajax.errors import ConfigError, require_in

# Directions: a gradient transformation without the learning rate.
DIRECTIONS = {
    "adam": lambda: optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
    "adamw": lambda: optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8),
    "sgd": lambda: optax.trace(decay=0.9),          # heavy-ball momentum 0.9
    "rmsprop": lambda: optax.scale_by_rms(decay=0.9, eps=1e-8),
}
NAMES = tuple(DIRECTIONS) + ("switch",)
SCHEDULES = ("constant", "cosine", "wsd", "step")
DEFAULTS = dict(name="adam", learning_rate=1e-3, weight_decay=0.0, clip_norm=0.0,
                schedule="constant", warmup_steps=0, decay_fraction=0.2, decay_every=0,
                decay_rate=0.5, choices=("adam", "sgd", "rmsprop"))


def switch(choices: Sequence[str], index) -> optax.GradientTransformation:
  """The direction `choices[index]`; `index` may be traced (one program for every choice).

  The state holds every choice's state; only the chosen one advances. Under `vmap` over
  members with different indices this is a select over the choices' updates.
  """
  inner = [DIRECTIONS[c]() for c in choices]

  def init(params):
    return tuple(t.init(params) for t in inner)

  def update(grads, state, params=None):
    def branch(i):
      def run(operands):
        g, s = operands
        u, new = inner[i].update(g, s[i], params)
        return u, s[:i] + (new,) + s[i + 1:]
      return run
    return jax.lax.switch(index, [branch(i) for i in range(len(inner))], (grads, state))

  return optax.GradientTransformation(init, update)


def schedule(cfg, steps: int) -> optax.Schedule:
  """The learning-rate multiplier of `cfg.schedule` over `steps` steps: linear warmup over
  `warmup_steps`, then 1 ('constant'), cosine to 0 at `steps` ('cosine'), 1 then linear to 0
  over the last `decay_fraction` of `steps` ('wsd'), or `decay_rate` every `decay_every`
  steps ('step')."""
  warmup = max(1, cfg.warmup_steps)
  if cfg.schedule == "cosine" and not cfg.warmup_steps:  # no warmup: 1 at the first step, not 0
    return optax.cosine_decay_schedule(1.0, max(steps, 1))
  if cfg.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, max(steps, cfg.warmup_steps + 1))
  if cfg.schedule == "step":
    rest = optax.exponential_decay(1.0, cfg.decay_every, cfg.decay_rate, staircase=True)
  else:
    rest = optax.constant_schedule(1.0)
  parts, bounds = [rest], []
  if cfg.warmup_steps:
    parts, bounds = [optax.linear_schedule(0.0, 1.0, warmup), rest], [warmup]
  if cfg.schedule == "wsd":
    decay = max(1, round(steps * cfg.decay_fraction))
    parts.append(optax.linear_schedule(1.0, 0.0, decay))
    bounds.append(max(warmup if cfg.warmup_steps else 0, steps - decay))
  return parts[0] if not bounds else optax.join_schedules(parts, bounds)


def check(cfg, key: str = "optimizer") -> None:
  """ConfigError for a bad optimizer config (names `key`.field, the value and what is valid)."""
  unknown = sorted(set(cfg) - set(DEFAULTS))
  if unknown:
    raise ConfigError(f"{key}.{unknown[0]}", cfg[unknown[0]], "unknown optimizer setting",
                      ", ".join(sorted(DEFAULTS)))
  c = {**DEFAULTS, **dict(cfg)}
  require_in(f"{key}.name", c["name"], NAMES)
  require_in(f"{key}.schedule", c["schedule"], SCHEDULES)
  if not c["learning_rate"] > 0:
    raise ConfigError(f"{key}.learning_rate", c["learning_rate"], "must be positive", "> 0")
  for k in ("weight_decay", "clip_norm", "warmup_steps", "decay_every"):
    if c[k] < 0:
      raise ConfigError(f"{key}.{k}", c[k], "must be non-negative", ">= 0")
  if c["schedule"] == "step" and not c["decay_every"]:
    raise ConfigError(f"{key}.decay_every", c["decay_every"], "the 'step' schedule decays every "
                      "decay_every steps", ">= 1")
  if c["schedule"] == "wsd" and not 0 < c["decay_fraction"] < 1:
    raise ConfigError(f"{key}.decay_fraction", c["decay_fraction"],
                      "'wsd' decays over this fraction of the steps", "a fraction in (0, 1)")
  for name in c["choices"]:
    require_in(f"{key}.choices", name, tuple(DIRECTIONS))


def make_optimizer(cfg: Mapping[str, Any], steps: int = 0) -> optax.GradientTransformation:
  """The optimizer of `cfg` (missing keys take `DEFAULTS`) for a run of `steps` steps."""
  check(cfg)
  c = _Cfg({**DEFAULTS, **dict(cfg)})
  scale = schedule(c, steps)
  choices, decoupled = tuple(c.choices), c.name == "adamw"

  def build(log_learning_rate, weight_decay, lr_scale, optimizer):
    direction = switch(choices, optimizer) if c.name == "switch" else DIRECTIONS[c.name]()
    parts = [optax.clip_by_global_norm(c.clip_norm)] if c.clip_norm else []
    if not decoupled:
      parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(direction)
    if decoupled:
      parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.scale(-jnp.exp(log_learning_rate) * lr_scale))
    return optax.chain(*parts)

  return optax.inject_hyperparams(build)(
      log_learning_rate=math.log(c.learning_rate), weight_decay=float(c.weight_decay),
      lr_scale=scale, optimizer=0)


def hyperparams(opt_state) -> dict[str, jax.Array]:
  """The injected hyperparameters of a `make_optimizer` state (arrays, [P] for populations)."""
  return dict(opt_state.hyperparams)


def with_hyperparams(opt_state, **values):
  """`opt_state` with some hyperparameters replaced (same shapes and dtypes as stored)."""
  hp = dict(opt_state.hyperparams)
  for k, v in values.items():
    if k not in hp:
      raise KeyError(f"no hyperparameter {k!r}; the state has {sorted(hp)}")
    hp[k] = jnp.asarray(v, hp[k].dtype)
  return opt_state._replace(hyperparams=hp)


def learning_rate(opt_state) -> jax.Array:
  """The learning rate of the step just taken: exp(log_learning_rate) * lr_scale."""
  hp = opt_state.hyperparams
  return jnp.exp(hp["log_learning_rate"]) * hp["lr_scale"]


class _Cfg(dict):
  """Attribute access to a plain dict (configs may be ConfigDicts or dicts)."""
  __getattr__ = dict.__getitem__
