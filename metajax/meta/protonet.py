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
from metajax.errors import ConfigError
from metajax.state import TrainState


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

  def init(self, key: jax.Array, tasks: Tasks) -> TrainState:
    variables = self.model.init(key, tasks.support_x[0], train=False)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    return TrainState.create(params, self.optimizer, model_state)

  def _logits(self, params, model_state, sx, sy, qx, train: bool):
    """Query logits [Q, C] of one episode and the model state after the pass."""
    x = jnp.concatenate([sx, qx])
    variables = {"params": params, **model_state}
    if train:
      emb, new_state = self.model.apply(variables, x, train=True, mutable=list(model_state))
    else:
      emb, new_state = self.model.apply(variables, x, train=False), model_state
    return proto_logits(emb[: sx.shape[0]], sy, emb[sx.shape[0]:]), new_state

  def _episode(self, params, model_state, sx, sy, qx, qy, train: bool):
    """Loss, accuracy and updated model state of one episode."""
    logits, new_state = self._logits(params, model_state, sx, sy, qx, train)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, qy).mean()
    acc = (jnp.argmax(logits, -1) == qy).mean()
    return loss, (acc, new_state)

  def train_step(self, state: TrainState, tasks: Tasks, key: jax.Array):
    """One outer step on a meta-batch; gradients and batch-norm stats averaged over tasks."""
    del key  # deterministic given the tasks

    def loss_fn(params):
      losses, (accs, states) = jax.vmap(
          lambda *t: self._episode(params, state.model_state, *t, train=True))(*tasks)
      return losses.mean(), (accs.mean(), jax.tree.map(lambda s: s.mean(0), states))

    (loss, (acc, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads, self.optimizer, model_state=model_state)
    return state, {"loss": loss, "accuracy": acc}

  def eval_step(self, state: TrainState, tasks: Tasks, key: jax.Array) -> dict:
    """Per-task query accuracy and loss, [B] each."""
    del key
    loss, (acc, _) = jax.vmap(
        lambda *t: self._episode(state.params, state.model_state, *t, train=False))(*tasks)
    return {"accuracy": acc, "loss": loss}

  def predict(self, state: TrainState, sx, sy, qx) -> jax.Array:
    """One task: logits [Q, S] of queries qx [Q, ...] against the prototypes of the support
    set (sx [S, ...], labels sy [S] in 0..S-1); classes absent from sy score -inf."""
    return self._logits(state.params, state.model_state, sx, sy, qx, train=False)[0]


def build(cfg, model_fn, optimizer: optax.GradientTransformation, ways: int, task: str) -> ProtoNet:
  """ProtoNet from the `learner` sub-config (`name='protonet'`, no other setting) and an
  embedding model `model_fn(None)`; `ways` is unused (prototypes take any N)."""
  del ways
  extra = sorted(set(dict(cfg)) - {"name"})
  if extra:
    raise ConfigError(f"learner.{extra[0]}", cfg[extra[0]], "ProtoNet has no such setting",
                      "learner.name only")
  if task != "classification":
    raise ConfigError("learner.name", cfg["name"], "ProtoNet classifies, but the data is a "
                      "regression task family", "maml, fomaml, anil, lslr, metasgd")
  return ProtoNet(model=model_fn(None), optimizer=optimizer)
