"""Knowledge distillation of a multimodal teacher into a smaller student.

  logits = teacher_logits(teacher_predict, teacher_params, split, mesh)   # [Q, C], once
  step = make_distill_step(student, tx, temperature=2.0, alpha=0.7, regression_weight=10.0)
  state, metrics = jax.jit(step, donate_argnums=0)(state, batch, key)   # pure

The teacher's logits on every training question are computed once, on all modalities,
before training (one teacher forward per question instead of one per step that draws it),
and gathered into each batch as `batch['teacher_logits']` [B, C].
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax import parallel
from metajax.state import TrainState


def distill_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array,
                 temperature: float, alpha: float) -> tuple[jax.Array, jax.Array]:
  """Per-example (soft, hard) losses [B] each (Hinton et al. 2015).

  soft: T^2 KL(softmax(teacher / T) || softmax(student / T)) (the T^2 keeps its gradient
  on the scale of the hard loss); hard: cross-entropy of `labels`. The training loss is
  alpha * soft + (1 - alpha) * hard. logits [B, C]; labels [B] int.
  """
  t = temperature
  soft = t * t * optax.losses.kl_divergence_with_log_targets(
      jax.nn.log_softmax(student_logits / t), jax.nn.log_softmax(teacher_logits / t))
  hard = optax.softmax_cross_entropy_with_integer_labels(student_logits, labels)
  return soft, hard


def make_distill_step(student, tx: optax.GradientTransformation, temperature: float,
                      alpha: float, regression_weight: float = 0.0,
                      questions_per_scene: int = 1) -> Callable:
  """A pure `(state, batch, key) -> (state, metrics)` step of the student.

  Loss: weighted mean of alpha * soft + (1 - alpha) * hard (`distill_loss`) plus
  `regression_weight` x the weighted mean squared error of `target_xy` (the auxiliary the
  teacher trained with), weights `batch['weight']` [B]. Metrics: train/loss, soft, hard,
  regression_mse, accuracy, agreement (with the teacher's answer), grad_norm.
  """
  inputs = ("image", "text", "text_mask", "table_cat", "table_num", "table_mask")

  def loss_fn(params, batch):
    out = student.apply({"params": params}, {k: batch[k] for k in inputs},
                        questions_per_scene=questions_per_scene)
    w = batch["weight"]
    mean = lambda x: (w * x).sum() / jnp.maximum(w.sum(), 1.0)
    soft, hard = distill_loss(out["logits"], batch["teacher_logits"], batch["answer"],
                              temperature, alpha)
    reg = mean(((out["regression"] - batch["target_xy"]) ** 2).mean(-1))
    answer = out["logits"].argmax(-1)
    loss = alpha * mean(soft) + (1 - alpha) * mean(hard) + regression_weight * reg
    return loss, {"train/soft": mean(soft), "train/hard": mean(hard),
                  "train/regression_mse": reg, "train/accuracy": mean(answer == batch["answer"]),
                  "train/agreement": mean(answer == batch["teacher_logits"].argmax(-1))}

  def step(state: TrainState, batch, key):
    del key  # deterministic: no dropout in the student's training
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
    metrics = {"train/loss": loss, "train/grad_norm": optax.tree.norm(grads), **aux}
    return state.apply_gradients(grads, tx), metrics

  return step


def teacher_logits(predict, params, split, mesh, batch_size: int = 512) -> np.ndarray:
  """Logits [Q, C] float32 of `predict` (a `steps.make_predict`) on every question of
  `split` (a `sort_of_clevr.Split`), all modalities present, a scene's questions together;
  batches hold a fixed number of scenes (one compile), the last padded by repetition."""
  by_scene = split.by_image
  per, n_dev = by_scene.shape[1], mesh.devices.size
  chunk = max(n_dev, batch_size // per // n_dev * n_dev)
  out = None
  for s in range(0, len(by_scene), chunk):
    part = np.arange(s, min(s + chunk, len(by_scene)))
    padded = np.concatenate([part, np.repeat(part[:1], chunk - len(part))])
    q = by_scene[padded].reshape(-1)
    logits = np.asarray(predict(params, parallel.shard_batch(split.batch(q, per), mesh),
                                questions_per_scene=per)["logits"], np.float32)
    out = np.zeros((split.size, logits.shape[-1]), np.float32) if out is None else out
    n = len(part) * per
    out[q[:n]] = logits[:n]
  return out
