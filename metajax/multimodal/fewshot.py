"""Few-shot classification on fused multimodal embeddings with a ProtoNet head.

The novel task: for the question "what shape is the object closest to the <c> object?",
name the *colour* of that closest object. Colours are never an answer in training (answers
are yes/no, shapes, counts), so the classes are seen only in the K support examples of
each episode. Episodes come from `metajax.data.episodes.sample_tasks` over the
class-indexed embeddings [6 colours, examples, D].
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metajax import report
from metajax.data import sort_of_clevr as soc
from metajax.data.episodes import EpisodeSpec, sample_tasks
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


def closest_questions(split) -> tuple[np.ndarray, np.ndarray]:
  """Indices of the 'closest' questions of `split` and the colour of each closest object."""
  idx = np.flatnonzero(split.d["q_family"] == soc.FAMILIES.index("closest"))
  return idx, split.d["q_target"][idx]


def check(config, split) -> None:
  """ConfigError (before training) when the test split cannot hold the requested episodes."""
  idx, labels = closest_questions(split)
  m = min(int((labels == c).sum()) for c in range(len(soc.COLOURS)))
  for k in sorted({1, config.fewshot.shots}):
    EpisodeSpec(config.fewshot.ways, k, config.fewshot.queries, config.fewshot.episodes).validate(
        (len(soc.COLOURS), m), split="test ('closest' questions per colour)")


def evaluate_closest_colour(config, mcfg, model, params, predict, split, mesh) -> dict:
  """ProtoNet accuracy (mean, 95% CI over episodes) on embeddings of the trained model and of
  the same architecture at random initialisation (the floor an untrained encoder gives)."""
  from metajax.multimodal.model import MultimodalTransformer, example_batch
  from metajax.multimodal.train import evaluate
  idx, labels = closest_questions(split)
  fresh = MultimodalTransformer(mcfg).init(jax.random.key(config.seed + 1),
                                           example_batch(mcfg))["params"]
  fs = config.fewshot
  results = {}
  for name, p in (("trained", params), ("random init", fresh)):
    _, emb = evaluate(predict, p, split, mesh, config.eval.batch_size, indices=idx,
                      want_embeddings=True)
    emb = jnp.asarray(class_indexed(emb, labels, len(soc.COLOURS)))
    for k in sorted({1, fs.shots}):
      spec = EpisodeSpec(fs.ways, k, fs.queries, fs.episodes)
      acc = np.asarray(episode_accuracy(jax.random.key(config.seed), emb, spec))
      results[(name, k)] = report.mean_ci95(acc)
  desc = (f"{fs.ways}-way K-shot, {fs.queries} queries per class, {fs.episodes} episodes over "
          f"the test 'closest' questions: name the colour of the closest object (colours are "
          f"never a training answer). Chance is {100 / fs.ways:.0f}%.")
  return {"results": results, "description": desc}
