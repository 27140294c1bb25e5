"""Meta-test evaluation, independent of any experiment: draw tasks, adapt, score.

  sample = sampler(dataset, 'test', EpisodeSpec(5, 1, 15, batch=20))
  per_episode = evaluate(jax.jit(learner.eval_step), state, sample, 600, 20, key)
  means, curves = summarise(per_episode)      # {'accuracy': (mean, ci95), ...}
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import numpy as np

from metajax import parallel
from metajax.data.episodes import EpisodeSpec, Tasks, make_sampler
from metajax.data.sinusoid import Sinusoid
from metajax.report import mean_ci95


def task_kind(dataset) -> str:
  """'regression' for a function family (sinusoid), 'classification' for class images."""
  return "regression" if isinstance(dataset, Sinusoid) else "classification"


def sampler(dataset, split: str, spec: EpisodeSpec, sharding=None,
            on_device: dict | None = None) -> Callable[[jax.Array], Tasks]:
  """key -> `spec.batch` tasks [B, ...] of `dataset`'s `split`, laid out as `sharding`.

  Class images are copied to the devices once (replicated over the sharding's mesh) and
  kept in `on_device`, so settings that share a split share its copy. A task family
  (sinusoid) is drawn on the fly.
  """
  if isinstance(dataset, Sinusoid):
    return jax.jit(lambda key: dataset.sample(key, spec), out_shardings=sharding)
  on_device = {} if on_device is None else on_device
  if (dataset.name, split) not in on_device:
    images = dataset.splits[split]
    on_device[dataset.name, split] = (parallel.replicate(images, sharding.mesh) if sharding
                                      else jax.numpy.asarray(images))
  images, fn = on_device[dataset.name, split], make_sampler(spec, sharding)
  return lambda key: fn(key, images)


def evaluate(eval_fn, state, sample_fn, episodes: int, batch: int, key,
             on_batch: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
  """Per-episode metrics over `episodes` tasks, drawn `batch` at a time from `key`.

  eval_fn(state, tasks, key) -> {metric: [batch] or [batch, S]}; returns {metric:
  [episodes] or [episodes, S]} as numpy. Deterministic per key. `on_batch()` runs after each
  of the ceil(episodes / batch) batches (a progress bar).
  """
  out: dict[str, list] = {}
  for i in range(math.ceil(episodes / batch)):
    k_tasks, k_step = jax.random.split(jax.random.fold_in(key, i))
    metrics = jax.device_get(eval_fn(state, sample_fn(k_tasks), k_step))
    for name, value in metrics.items():
      out.setdefault(name, []).append(np.asarray(value))
    if on_batch is not None:
      on_batch()
  return {name: np.concatenate(v)[:episodes] for name, v in out.items()}


def summarise(per_episode: dict[str, np.ndarray]):
  """({metric: (mean, ci95)} of the [E] metrics, {metric: [(step, mean, ci95), ...]} of the
  [E, S] curves)."""
  means = {k: mean_ci95(v) for k, v in per_episode.items() if v.ndim == 1}
  curves = {k: [(j, *mean_ci95(v[:, j])) for j in range(v.shape[1])]
            for k, v in per_episode.items() if v.ndim == 2}
  return means, curves
