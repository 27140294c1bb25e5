"""Training and evaluation steps of the multimodal transformer, for any dataset.

  step = make_train_step(model, tx, drop=(0.1, 0.0, 0.3), regression_weight=1.0)
  state, metrics = jax.jit(step, donate_argnums=0)(state, batch, key)   # pure
  predict = make_predict(model)          # host value checks, then a jitted apply
  out = predict(params, batch)           # {'answer', 'logits', 'embedding'}

A training batch holds the model inputs (images and tables once per scene when
`questions_per_scene` > 1), `answer` [B] class ids, `target_xy` [B, R] auxiliary
regression targets and `weight` [B] per-example loss weights (e.g. a curriculum).
The state is `metajax.state.TrainState`; the optimizer comes from `metajax.optim`.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax import parallel
from metajax.multimodal.checks import check_values
from metajax.multimodal.model import MODALITIES
from metajax.state import TrainState

INPUT_KEYS = ("image", "text", "text_mask", "table_cat", "table_num", "table_mask")
_KEYS_OF = {"image": ("image",), "text": ("text", "text_mask"),
            "table": ("table_cat", "table_num", "table_mask")}


def modality_keys(present=(1, 1, 1)) -> tuple[str, ...]:
  """The model-input keys of the modalities marked present, in (image, text, table) order."""
  return tuple(k for m, p in zip(MODALITIES, present) if p for k in _KEYS_OF[m])


def make_train_step(model, tx: optax.GradientTransformation, drop: Sequence[float] = (0, 0, 0),
                    regression_weight: float = 0.0, keys: tuple[str, ...] = INPUT_KEYS,
                    questions_per_scene: int = 1) -> Callable:
  """A pure `(state, batch, key) -> (state, metrics)` training step.

  Loss: weighted mean cross-entropy of `answer` plus `regression_weight` x the weighted
  mean squared error of `target_xy` (weights: `batch['weight']` [B]). The model sees only
  the input `keys` of the batch (a modality left out is never computed), and each example
  loses each modality with probability `drop` (image, text, table). Metrics: scalars
  train/loss, ce, regression_mse, accuracy, grad_norm.
  """
  drop_p = jnp.asarray(drop, jnp.float32)

  def loss_fn(params, batch, key):
    b = batch["answer"].shape[0]
    # Modality dropout: each example loses each modality with its own probability, so the
    # model learns to answer from whatever is present.
    present = jax.random.uniform(key, (b, len(MODALITIES))) >= drop_p
    out = model.apply({"params": params}, {**{k: batch[k] for k in keys}, "present": present},
                      questions_per_scene=questions_per_scene)
    w = batch["weight"]
    mean = lambda x: (w * x).sum() / jnp.maximum(w.sum(), 1.0)
    ce = mean(optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["answer"]))
    reg = mean(((out["regression"] - batch["target_xy"]) ** 2).mean(-1))
    acc = mean(out["logits"].argmax(-1) == batch["answer"])
    return ce + regression_weight * reg, {"train/ce": ce, "train/regression_mse": reg,
                                          "train/accuracy": acc}

  def step(state: TrainState, batch, key):
    key = jax.random.fold_in(key, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
    metrics = {"train/loss": loss, "train/grad_norm": optax.tree.norm(grads), **aux}
    return state.apply_gradients(grads, tx), metrics

  return step


@functools.partial(jax.jit, static_argnames=("model", "questions_per_scene"))
def _predict(model, params, batch, present, questions_per_scene=1):
  # The model is a static argument: equal modules (same config) share one compiled program.
  inputs = dict(batch) if present is None else {**batch, "present": present}
  out = model.apply({"params": params}, inputs, questions_per_scene=questions_per_scene)
  return {"answer": out["logits"].argmax(-1), "logits": out["logits"],
          "embedding": out["embedding"]}


def make_predict(model, keys: tuple[str, ...] = INPUT_KEYS):
  """`(params, batch, present=None, questions_per_scene=1) -> {'answer' [B], 'logits' [B, C],
  'embedding' [B, D]}` on the input `keys` of `batch`: values checked on the host
  (`check_values`), then one jitted apply. `present` [B, 3] bool (None: all present)."""
  def predict(params, batch, present=None, questions_per_scene=1):
    inputs = {k: batch[k] for k in keys if k in batch}
    check_values(model.cfg, inputs)
    return _predict(model, params, inputs, present, questions_per_scene=questions_per_scene)
  return predict


def predict_scenes(predict, params, make_batch: Callable[[np.ndarray, int], Mapping],
                   by_scene: np.ndarray, scenes: np.ndarray, mesh, batch_size: int,
                   present=(1, 1, 1)) -> tuple[np.ndarray, np.ndarray]:
  """Answers [N] and embeddings [N, D] of every question of `scenes` (N = by_scene.size;
  rows of other questions stay 0).

  by_scene [S, r]: the question indices of each scene; make_batch(q, r): the inputs of
  questions q, r consecutive ones per scene. Each scene's questions run together (its
  image tokens built once); batches hold a fixed number of scenes, a multiple of the mesh
  size (one compile), the last one padded by repeating a scene.
  """
  per = by_scene.shape[1]
  n_dev = mesh.devices.size
  chunk = max(n_dev, batch_size // per // n_dev * n_dev)
  pres = parallel.shard_batch(np.tile(np.array(present, bool), (chunk * per, 1)), mesh)
  answers, emb = np.zeros(by_scene.size, np.int64), None
  for s in range(0, len(scenes), chunk):
    part = scenes[s:s + chunk]
    padded = np.concatenate([part, np.repeat(part[:1], chunk - len(part))])
    q = by_scene[padded].reshape(-1)
    out = parallel.to_host(predict(params, parallel.shard_batch(make_batch(q, per), mesh), pres,
                                   questions_per_scene=per))  # gathered from every process
    n = len(part) * per
    answers[q[:n]] = np.asarray(out["answer"])[:n]
    e = np.asarray(out["embedding"], np.float32)
    emb = np.zeros((by_scene.size, e.shape[-1]), np.float32) if emb is None else emb
    emb[q[:n]] = e[:n]
  return answers, emb


def grouped_accuracy(correct: np.ndarray, labels: np.ndarray, names: Sequence[str],
                     prefix: str = "", keep_empty: bool = True) -> dict[str, float]:
  """{prefix + names[i]: mean of `correct` [N] where `labels` [N] == i}; a group with no
  example is NaN (`keep_empty`) or left out."""
  out = {}
  for i, name in enumerate(names):
    hit = labels == i
    if hit.any() or keep_empty:
      out[prefix + name] = float(correct[hit].mean()) if hit.any() else float("nan")
  return out
