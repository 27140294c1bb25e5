"""Few-shot classification on embeddings with a ProtoNet head (no training).

Given embeddings [N, D] of labelled examples (e.g. the fused embeddings of a trained
multimodal model, for classes it never answered), N-way K-shot episodes are drawn from
the class-indexed array [C, m, D] with `metajax.data.episodes.sample_tasks`, and each
query is labelled by its nearest class prototype.

  >>> protonet_accuracy(key, emb, labels, classes=6, ways=5, shots=(1, 5), queries=5,
  ...                   episodes=500)      # {1: (mean, ci95), 5: (mean, ci95)}
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metajax import report
from metajax.data.episodes import EpisodeSpec, sample_tasks
from metajax.errors import ConfigError
from metajax.meta.protonet import proto_logits


@functools.partial(jax.jit, static_argnames="spec")
def episode_accuracy(key: jax.Array, embeddings: jax.Array, spec: EpisodeSpec) -> jax.Array:
  """Query accuracy [spec.batch] of a ProtoNet over class-indexed `embeddings` [C, E, D]."""
  tasks = sample_tasks(key, embeddings, spec)

  def one(sx, sy, qx, qy):
    return (proto_logits(sx, sy, qx).argmax(-1) == qy).mean()

  return jax.vmap(one)(*tasks)


def class_indexed(emb: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
  """[classes, m, D]: the first m examples of each class, m the smallest class count."""
  m = min(int((labels == c).sum()) for c in range(classes))
  return np.stack([emb[labels == c][:m] for c in range(classes)])


def check_episodes(labels: np.ndarray, classes: int, ways: int, shots: Sequence[int],
                   queries: int, episodes: int, where: str = "examples", prefix: str = "") -> None:
  """ConfigError (before any compute) when `labels` [N] cannot hold the episodes; its key is
  `prefix` + the EpisodeSpec field (e.g. prefix 'eval.fewshot.')."""
  m = min(int((labels == c).sum()) for c in range(classes))
  for k in sorted(set(shots)):
    try:
      EpisodeSpec(ways, k, queries, episodes).validate((classes, m), split=where)
    except ConfigError as e:
      raise ConfigError(prefix + e.key, e.value, e.why, e.valid) from None


def protonet_accuracy(key: jax.Array, emb: np.ndarray, labels: np.ndarray, classes: int,
                      ways: int, shots: Sequence[int], queries: int, episodes: int
                      ) -> dict[int, tuple[float, float]]:
  """{K: (mean, 95% CI half-width) of query accuracy over `episodes` ways-way K-shot
  episodes} for embeddings `emb` [N, D] with class `labels` [N] in 0..classes-1."""
  x = jnp.asarray(class_indexed(emb, labels, classes))
  out = {}
  for k in sorted(set(shots)):
    acc = np.asarray(episode_accuracy(key, x, EpisodeSpec(ways, k, queries, episodes)))
    out[k] = report.mean_ci95(acc)
  return out
