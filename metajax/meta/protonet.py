"""Prototypical Networks (Snell et al. 2017): classify queries by squared Euclidean
distance to the mean embedding (prototype) of each class's support examples.

Batch norm: batch statistics of the episode (support and query embedded in one
pass) while training, running averages at evaluation, so evaluation is not
transductive.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metajax.data.episodes import Tasks
from metajax.meta.base import MetaState


def prototypes(emb: jax.Array, labels: jax.Array, num_classes: int) -> tuple[jax.Array, jax.Array]:
  """Class means of `emb` [S, D] under integer `labels` [S] -> ([num_classes, D], counts [num_classes])."""
  one_hot = jax.nn.one_hot(labels, num_classes, dtype=emb.dtype)       # [S, C]
  counts = one_hot.sum(0)
  return (one_hot.T @ emb) / jnp.maximum(counts, 1)[:, None], counts


def proto_logits(support_emb, support_y, query_emb) -> jax.Array:
  """Negative squared distances [Q, C] of queries to prototypes; C = support size (a
  static upper bound on the classes), absent classes masked to -inf."""
  protos, counts = prototypes(support_emb, support_y, support_emb.shape[0])
  d2 = (jnp.sum(query_emb**2, -1, keepdims=True) - 2 * query_emb @ protos.T
        + jnp.sum(protos**2, -1)[None])
  return jnp.where(counts[None] > 0, -d2, -jnp.inf)


@dataclasses.dataclass(frozen=True)
class ProtoNet:
  """ProtoNet learner: `model` maps [B, ...] inputs to [B, D] embeddings."""
  model: nn.Module
  optimizer: optax.GradientTransformation
  num_ways: None = None  # any N-way at evaluation
  batch_norm: str = "batch statistics in training, running averages at evaluation"

  def init(self, key: jax.Array, tasks: Tasks) -> MetaState:
    variables = self.model.init(key, tasks.support_x[0], train=False)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return MetaState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                     opt_state=self.optimizer.init(params))

  def _episode(self, params, model_state, sx, sy, qx, qy, train: bool):
    """Loss, accuracy and updated model state of one episode."""
    x = jnp.concatenate([sx, qx])
    variables = {"params": params, **model_state}
    if train:
      emb, new_state = self.model.apply(variables, x, train=True, mutable=list(model_state))
    else:
      emb, new_state = self.model.apply(variables, x, train=False), model_state
    logits = proto_logits(emb[: sx.shape[0]], sy, emb[sx.shape[0]:])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, qy).mean()
    acc = (jnp.argmax(logits, -1) == qy).mean()
    return loss, (acc, new_state)

  def train_step(self, state: MetaState, tasks: Tasks, key: jax.Array):
    """One outer step on a meta-batch; gradients and batch-norm stats averaged over tasks."""
    del key  # deterministic given the tasks

    def loss_fn(params):
      losses, (accs, states) = jax.vmap(
          lambda *t: self._episode(params, state.model_state, *t, train=True))(*tasks)
      return losses.mean(), (accs.mean(), jax.tree.map(lambda s: s.mean(0), states))

    (loss, (acc, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          model_state=model_state, opt_state=opt_state)
    return state, {"loss": loss, "accuracy": acc}

  def eval_step(self, state: MetaState, tasks: Tasks, key: jax.Array) -> dict:
    """Per-task query accuracy and loss, [B] each."""
    del key
    loss, (acc, _) = jax.vmap(
        lambda *t: self._episode(state.params, state.model_state, *t, train=False))(*tasks)
    return {"accuracy": acc, "loss": loss}


def build(config, task_kind: str) -> ProtoNet:
  from metajax import models
  from metajax.errors import ConfigError
  from metajax.optim import make_optimizer
  if task_kind != "classification":
    raise ConfigError("algorithm", config.algorithm,
                      f"ProtoNet classifies, but dataset {config.dataset!r} is a regression task family",
                      "maml, fomaml, lslr, metasgd for regression")
  model = models.make(config.model, None, **config.get("model_kwargs", {}))
  return ProtoNet(model=model, optimizer=make_optimizer(config.optimizer))
