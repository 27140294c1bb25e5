"""MAML and its variants as pure functions over a params pytree.

One learner covers five algorithms, picked by flags of `MAMLConfig`:

  maml     second-order MAML (Finn et al. 2017): inner SGD steps, outer
           gradient through them.
  fomaml   `first_order=True`: inner gradients are constants (stop_gradient),
           so d(adapted)/d(init) = I.
  anil     `head_only=True`: only the head (the model's last top-level module)
           is adapted; the body is meta-learned by the outer loss only.
  lslr     `learn_lr='per_layer_step'` (MAML++): one log learning rate per
           parameter tensor and inner step, meta-learned.
  metasgd  `learn_lr='per_param'` (Li et al. 2017): one log learning rate per
           parameter entry, shared by all steps, meta-learned.

The inner loop is a `lax.scan` of `inner_steps` updates
`fast <- fast - lr * direction(grad)`, where `direction` is an optax transform
(identity = SGD; e.g. `optax.scale_by_adam(eps_root=1e-8)`); `remat=True`
wraps the step in `jax.checkpoint` so second-order memory stays flat as steps grow
(conv4-8 temp memory 7.55 / 7.60 MB at 2 / 8 steps, vs 12.8 / 35.8 MB without);
`multi_step_loss=True` is MAML++'s annealed sum of query losses after every step.
Learned rates live in log space in `TrainState.params['log_lr']`, so they are
checkpointed and updated with the weights. `VARIANTS` holds, once, the flags each
algorithm name sets; `build` makes a learner from a `learner` sub-config.

Batch norm (Linen `BatchNorm` with a `batch_stats` collection):
  'transductive' (default, as in the published MAML numbers): every forward pass
      uses the batch statistics of the set it sees (the support set in the
      inner loop, the query set for the outer loss and at meta-test); running
      averages are never used; BN scale/bias are adapted like other weights.
  'per_step' (MAML++ BNWB + BNRS): one copy of BN scale/bias per inner step
      (meta-learned, not adapted) and one set of running statistics per step,
      accumulated over meta-training; meta-test normalises with those running
      statistics, so it is not transductive. Steps past `inner_steps` reuse the
      last copy.

Tasks of a meta-batch are batched inside one jitted step as `task_batching` says
(`metajax.meta.batching`: 'vmap', 'map', or 'scan' over chunks of `task_chunk` tasks).
The code holds no sharding annotations, so a meta-batch sharded along a mesh axis just works.

Example on your own Linen model (5-way classification)::

  import flax.linen as nn, optax
  from metajax.meta.maml import MAML, MAMLConfig

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=True):
      return nn.Dense(5)(nn.relu(nn.Dense(64)(x.reshape(len(x), -1))))

  learner = MAML(Net(), optax.adam(1e-3), MAMLConfig(inner_steps=5, learn_lr='per_layer_step'),
                 num_ways=5)
  state = learner.init(key, tasks)               # tasks: metajax.data.episodes.Tasks, [B, N*K, ...]
  step = jax.jit(learner.train_step)
  state, metrics = step(state, tasks, key)       # {'loss', 'accuracy'}
  curves = jax.jit(learner.eval_step)(state, tasks, key)  # {'accuracy_by_step': [B, 11], ...}
  logits = jax.jit(learner.predict)(state, sx, sy, qx)    # one task: [Q, 5] after adapting
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from metajax.data.episodes import Tasks
from metajax.meta.batching import TASK_BATCHING, mean_over_chunks, over_tasks, resolve_chunk
from metajax.errors import ConfigError, require_in
from metajax.state import TrainState

LEARN_LR = ("none", "per_layer_step", "per_param")
BATCH_NORM = ("transductive", "per_step")
TASKS = ("classification", "regression")
INNER_OPTIMIZERS = {
    "sgd": optax.identity,
    "momentum": lambda: optax.trace(0.9),
    "adam": lambda: optax.scale_by_adam(eps_root=1e-8),  # eps_root: finite 2nd-order grads at g = 0
}
VARIANTS = {  # learner.name -> the MAMLConfig flags that name sets (the only place they live)
    "maml": {}, "fomaml": {"first_order": True}, "anil": {"head_only": True},
    "lslr": {"learn_lr": "per_layer_step"}, "metasgd": {"learn_lr": "per_param"},
}


@dataclasses.dataclass(frozen=True)
class MAMLConfig:
  """Static settings of the inner loop (see the module docstring)."""
  inner_steps: int = 1            # adaptation steps in meta-training
  inner_lr: float = 0.01          # alpha, or the initial value of learned rates
  first_order: bool = False
  head_only: bool = False         # ANIL
  head: str | None = None         # top-level module adapted by ANIL; None: the last one
  learn_lr: str = "none"
  inner_optimizer: str = "sgd"    # the update direction; see INNER_OPTIMIZERS
  remat: bool = False             # jax.checkpoint each inner step
  unroll: bool = True             # unroll the scan (XLA CPU runs convs in while loops slowly);
                                  # ignored with remat, which needs the rolled loop to save memory
  multi_step_loss: bool = False   # MAML++ MSL
  msl_anneal_steps: int = 1000    # outer steps over which MSL weights go from uniform to last-step-only
  batch_norm: str = "transductive"
  task_batching: str = "vmap"
  task_chunk: int = 1             # 'scan': tasks vmapped per iteration; divides the meta-batch
                                  # (in a config, 0 = jax.device_count(): one task per device)
  eval_inner_steps: int | None = None  # steps for the final meta-test metric; None: inner_steps
  curve_steps: int = 10           # eval_step also reports metrics after 0..curve_steps steps
  task: str = "classification"    # or 'regression' (MSE on float targets)

  def validate(self) -> None:
    for key in ("inner_steps", "curve_steps", "msl_anneal_steps", "task_chunk"):
      if getattr(self, key) <= 0:
        raise ConfigError(f"learner.{key}", getattr(self, key), "must be positive", ">= 1")
    if not self.inner_lr > 0:
      raise ConfigError("learner.inner_lr", self.inner_lr, "must be positive", "> 0")
    if self.eval_inner_steps is not None and self.eval_inner_steps <= 0:
      raise ConfigError("learner.eval_inner_steps", self.eval_inner_steps, "must be positive",
                        ">= 1, or None for inner_steps")
    for key, valid in (("learn_lr", LEARN_LR), ("batch_norm", BATCH_NORM), ("task", TASKS),
                       ("task_batching", TASK_BATCHING), ("inner_optimizer", INNER_OPTIMIZERS)):
      require_in(f"learner.{key}", getattr(self, key), valid)

  @property
  def test_steps(self) -> int:
    return self.eval_inner_steps or self.inner_steps


def _flat(tree) -> dict[tuple, Any]:
  return traverse_util.flatten_dict(tree) if tree else {}


def _nest(flat: dict[tuple, Any]):
  return traverse_util.unflatten_dict(flat) if flat else {}


@dataclasses.dataclass(frozen=True)
class MAML:
  """MAML-family learner: `model` maps [n, ...] inputs to [n, num_ways] logits (or [n, D] regression).

  TrainState.params = {'model': weights, 'log_lr': log inner rates (LSLR/Meta-SGD only),
  'bn': per-step BN scale/bias [S+1, ...] ('per_step' batch norm only)};
  model_state = the model's 'batch_stats' ([S+1, ...] per step in 'per_step' mode, unused otherwise).
  """
  model: nn.Module
  optimizer: optax.GradientTransformation
  config: MAMLConfig = MAMLConfig()
  num_ways: int | None = None  # the head's fixed N (classification); None for regression

  def __post_init__(self):
    self.config.validate()
    if self.config.task == "classification" and not (self.num_ways or 0) > 0:
      raise ConfigError("episodes.ways", self.num_ways,
                        "MAML's classifier head fixes N: pass num_ways", "the N of the N-way tasks")

  # ---------------------------------------------------------------- params

  def _bn_keys(self, params, model_state) -> set:
    """Param paths of normalisation layers: modules that own 'batch_stats'."""
    owners = {k[:-1] for k in _flat(model_state.get("batch_stats", {}))}
    return {k for k in _flat(params) if k[:-1] in owners}

  def _adapted_keys(self, flat_model: dict) -> list[tuple]:
    """Paths of the weights the inner loop adapts (all, or the head for ANIL)."""
    keys = list(flat_model)
    if self.config.head_only:
      head = self.config.head or keys[-1][0]  # Linen keeps creation order: the last module
      keys = [k for k in keys if k[0] == head]
      if not keys:
        raise ConfigError("learner.head", head, "no top-level module of that name",
                          ", ".join(sorted({k[0] for k in flat_model})))
    return keys

  def _check_model(self, key, x, y) -> None:
    """ConfigError if the model cannot take `x` [n, ...] or its output does not match `y`."""
    try:
      out = jax.eval_shape(lambda k: self.model.init_with_output(k, x, train=False)[0], key)
    except Exception as e:  # noqa: BLE001 - report any shape error as bad input
      raise ConfigError("model", type(self.model).__name__,
                        f"it cannot take inputs of shape {tuple(x.shape[1:])}: "
                        f"{type(e).__name__}: {str(e).splitlines()[0]}",
                        "a model for this input shape") from None
    if self.config.task == "classification":
      if out.ndim != 2 or out.shape[-1] != self.num_ways:
        raise ConfigError("episodes.ways", self.num_ways,
                          f"the model outputs {tuple(out.shape[1:])} per example, not {self.num_ways} logits",
                          f"a model with num_outputs={self.num_ways}")
    elif out.shape != y.shape:
      raise ConfigError("model", type(self.model).__name__,
                        f"its output {tuple(out.shape)} does not match the targets {tuple(y.shape)}",
                        "num_outputs = the target size")

  def init(self, key: jax.Array, tasks: Tasks) -> TrainState:
    """Meta-parameters from the first task of `tasks` (shapes only are used)."""
    c = self.config
    self._check_model(key, tasks.support_x[0], tasks.support_y[0])
    variables = self.model.init(key, tasks.support_x[0], train=False)
    params = variables["params"]
    model_state = {k: v for k, v in variables.items() if k != "params"}
    flat = _flat(params)
    meta: dict[str, Any] = {}
    if c.batch_norm == "per_step":
      bn = self._bn_keys(params, model_state)
      stack = lambda a: jnp.broadcast_to(a, (c.inner_steps + 1,) + a.shape)
      meta["bn"] = _nest({k: stack(v) for k, v in flat.items() if k in bn})
      flat = {k: v for k, v in flat.items() if k not in bn}
      model_state = jax.tree.map(stack, model_state)
    meta["model"] = _nest(flat)
    adapted = self._adapted_keys(flat)
    log_lr = math.log(c.inner_lr)
    if c.learn_lr == "per_layer_step":
      meta["log_lr"] = _nest({k: jnp.full((c.inner_steps,), log_lr, jnp.float32) for k in adapted})
    elif c.learn_lr == "per_param":
      meta["log_lr"] = _nest({k: jnp.full(flat[k].shape, log_lr, flat[k].dtype) for k in adapted})
    return TrainState.create(meta, self.optimizer, model_state)

  # ---------------------------------------------------------------- one task

  def _forward(self, meta, model_state, fast, x, s, train: bool):
    """Model output on x [n, ...] with adapted weights `fast` after `s` inner steps.

    Returns (output, batch_stats after this pass or None).
    """
    c = self.config
    flat = {**_flat(meta["model"]), **fast}
    if c.batch_norm == "transductive":
      out, _ = self.model.apply({"params": _nest(flat), **model_state}, x, train=True,
                                mutable=["batch_stats"])
      return out, None
    i = jnp.minimum(s, c.inner_steps)
    flat.update({k: v[i] for k, v in _flat(meta["bn"]).items()})
    stats = jax.tree.map(lambda a: a[i], model_state)
    variables = {"params": _nest(flat), **stats}
    if train:
      out, new = self.model.apply(variables, x, train=True, mutable=["batch_stats"])
      return out, jax.lax.stop_gradient(dict(new))
    return self.model.apply(variables, x, train=False), None

  def _metrics(self, out, y):
    """(loss, accuracy) of outputs against targets; accuracy is NaN-free 0 for regression."""
    if self.config.task == "regression":
      return jnp.mean((out - y) ** 2), jnp.zeros(())
    loss = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
    return loss, (jnp.argmax(out, -1) == y).mean()

  def _lr(self, meta, s) -> dict:
    """Inner learning rate per adapted path at step s (scalar, or per entry for Meta-SGD)."""
    c = self.config
    if c.learn_lr == "none":
      return None
    log_lr = _flat(meta["log_lr"])
    if c.learn_lr == "per_layer_step":  # steps past training reuse the last rate
      return {k: jnp.exp(v[jnp.minimum(s, c.inner_steps - 1)]) for k, v in log_lr.items()}
    return {k: jnp.exp(v) for k, v in log_lr.items()}

  def _inner(self, meta, model_state, sx, sy, train: bool):
    """The inner update on the support set (sx [n, ...], sy [n]): (step, carry) with
    `step((fast, opt_state), s) -> ((fast, opt_state), batch_stats after the pass or None)`."""
    c = self.config
    flat = _flat(meta["model"])
    fast = {k: flat[k] for k in self._adapted_keys(flat)}
    direction = INNER_OPTIMIZERS[c.inner_optimizer]()

    def support_loss(fast, s):
      out, stats = self._forward(meta, model_state, fast, sx, s, train)
      return self._metrics(out, sy)[0], stats

    def step(carry, s):
      fast, opt_state = carry
      (_, stats), grads = jax.value_and_grad(support_loss, has_aux=True)(fast, s)
      if c.first_order:
        grads = jax.lax.stop_gradient(grads)
      updates, opt_state = direction.update(grads, opt_state, fast)
      lr = self._lr(meta, s)
      fast = {k: w - (c.inner_lr if lr is None else lr[k]) * updates[k] for k, w in fast.items()}
      return (fast, opt_state), stats

    return step, (fast, direction.init(fast))

  def adapt(self, meta, model_state, sx, sy, qx, qy, num_steps: int, train: bool,
            every_step: bool):
    """Runs `num_steps` inner steps on the support set (sx [n, ...], sy [n]) and scores the query set.

    Returns (loss, accuracy, stats): loss/accuracy are [num_steps + 1] (after 0..num_steps
    steps) if `every_step`, else [1] (after num_steps); stats: per-step batch_stats
    [inner_steps + 1, ...] ('per_step' BN in training) or None.
    """
    c = self.config
    inner, carry = self._inner(meta, model_state, sx, sy, train)
    initial = carry[0]

    def query(fast, s):
      out, stats = self._forward(meta, model_state, fast, qx, s, train)
      return self._metrics(out, qy), stats

    def step(carry, s):
      carry, stats = inner(carry, s)
      q = query(carry[0], s + 1)[0] if every_step else (jnp.zeros(()), jnp.zeros(()))
      return carry, (q, stats)

    if c.remat:
      step = jax.checkpoint(step)
    (fast, _), (qs, stats) = jax.lax.scan(step, carry, jnp.arange(num_steps),
                                          unroll=c.unroll and not c.remat)
    if every_step:
      (l0, a0), _ = query(initial, 0)
      loss, acc = jnp.concatenate([l0[None], qs[0]]), jnp.concatenate([a0[None], qs[1]])
      last_stats = query(fast, num_steps)[1] if stats is not None else None
    else:
      (loss, acc), last_stats = query(fast, num_steps)
      loss, acc = loss[None], acc[None]
    if stats is not None:  # stats of support passes 0..S-1, then of the final query pass
      stats = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), stats, last_stats)
    return loss, acc, stats

  def predict(self, state: TrainState, sx, sy, qx) -> jax.Array:
    """One task: outputs on the queries qx [Q, ...] ([Q, num_ways] logits, or [Q, D]) after
    `test_steps` inner steps on the support set (sx [n, ...], sy [n]), as at meta-test."""
    c = self.config
    inner, carry = self._inner(state.params, state.model_state, sx, sy, train=False)
    (fast, _), _ = jax.lax.scan(inner, carry, jnp.arange(c.test_steps), unroll=c.unroll)
    return self._forward(state.params, state.model_state, fast, qx, c.test_steps, train=False)[0]

  def _over_tasks(self, fn, tasks: Tasks):
    return over_tasks(fn, tasks, self.config.task_batching)

  # ---------------------------------------------------------------- steps

  def meta_loss(self, params, model_state, tasks: Tasks, step):
    """Mean query loss over the meta-batch after `inner_steps` steps (MSL: annealed sum over steps).

    Returns (loss, (accuracy, new model_state)); differentiate w.r.t. `params`.
    """
    c = self.config
    msl = c.multi_step_loss

    def one(sx, sy, qx, qy):
      loss, acc, stats = self.adapt(params, model_state, sx, sy, qx, qy, c.inner_steps,
                                    train=True, every_step=msl)
      if msl:  # weights: uniform at step 0 -> all on the last step after msl_anneal_steps
        t = jnp.minimum(step / c.msl_anneal_steps, 1.0)
        w = (1 - t) / c.inner_steps + t * (jnp.arange(c.inner_steps) == c.inner_steps - 1)
        return jnp.sum(w * loss[1:]), (loss[-1], acc[-1], stats)
      return loss[-1], (loss[-1], acc[-1], stats)

    objective, (loss, acc, stats) = self._over_tasks(one, tasks)
    new_state = model_state if not stats else {"batch_stats": jax.tree.map(
        lambda a: a.mean(0), stats["batch_stats"])}
    return objective.mean(), (loss.mean(), acc.mean(), new_state)

  def meta_gradient(self, state: TrainState, tasks: Tasks):
    """(meta-gradient w.r.t. state.params, metrics, new model_state) of one meta-batch."""
    value_and_grad = jax.value_and_grad(self.meta_loss, has_aux=True)
    if self.config.task_batching == "scan":  # each chunk's gradient inside the loop, summed
      per_step = self.config.batch_norm == "per_step"  # only then does a pass update model_state

      def chunk_gradient(chunk):
        (_, (loss, acc, stats)), grads = value_and_grad(
            state.params, state.model_state, chunk, state.step)
        return grads, loss, acc, (stats if per_step else {})

      zero = lambda tree: jax.tree.map(jnp.zeros_like, tree)
      zeros = (zero(state.params), jnp.zeros(()), jnp.zeros(()),
               zero(state.model_state) if per_step else {})
      grads, loss, acc, model_state = mean_over_chunks(
          chunk_gradient, tasks, self.config.task_chunk, zeros)
      model_state = model_state if per_step else state.model_state
    else:
      (_, (loss, acc, model_state)), grads = value_and_grad(
          state.params, state.model_state, tasks, state.step)
    metrics = {"loss": loss, **({"accuracy": acc} if self.config.task == "classification" else {})}
    return grads, metrics, model_state

  def train_step(self, state: TrainState, tasks: Tasks, key: jax.Array):
    """One outer step on a meta-batch ([B, ...] tasks) -> (state, {'loss', 'accuracy'})."""
    del key  # deterministic given the tasks
    grads, metrics, model_state = self.meta_gradient(state, tasks)
    return state.apply_gradients(grads, self.optimizer, model_state=model_state), metrics

  def eval_step(self, state: TrainState, tasks: Tasks, key: jax.Array) -> dict:
    """Per-task query metrics after adapting on the support set.

    classification: 'accuracy', 'loss' [B] after `eval_inner_steps`; 'accuracy_by_step',
    'loss_by_step' [B, T+1] after 0..T steps, T = max(curve_steps, eval_inner_steps).
    regression: 'mse' [B] and 'mse_by_step' [B, T+1].
    """
    del key
    c = self.config
    steps = max(c.curve_steps, c.test_steps)
    loss, acc, _ = self._over_tasks(
        lambda *t: self.adapt(state.params, state.model_state, *t, steps, train=False,
                              every_step=True), tasks)
    if c.task == "regression":
      return {"mse": loss[:, c.test_steps], "mse_by_step": loss}
    return {"accuracy": acc[:, c.test_steps], "loss": loss[:, c.test_steps],
            "accuracy_by_step": acc, "loss_by_step": loss}

  def learning_rates(self, state: TrainState) -> dict[str, Any]:
    """'layer/param' -> learned inner rates: [S] (LSLR) or the per-entry array (Meta-SGD)."""
    if self.config.learn_lr == "none":
      return {}
    log_lr = _flat(jax.device_get(state.params["log_lr"]))
    return {"/".join(k): jnp.exp(v) for k, v in log_lr.items()}


def build(cfg, model_fn, optimizer: optax.GradientTransformation, ways: int, task: str) -> MAML:
  """The MAML-family learner of `cfg` (the `learner` sub-config: `name` and MAMLConfig fields).

  model_fn(num_outputs) -> the model; `ways` fixes the head (classification); `task`:
  'classification' or 'regression' (from the data). A flag that `VARIANTS[cfg.name]` sets
  must hold its value there: `name='fomaml'` with `first_order=False` is refused.
  """
  cfg = dict(cfg)
  name = cfg.pop("name")
  require_in("learner.name", name, VARIANTS)
  fields = {f.name for f in dataclasses.fields(MAMLConfig)} - {"task"}
  for key, value in cfg.items():
    if key not in fields:
      raise ConfigError(f"learner.{key}", value, "unknown MAML option", ", ".join(sorted(fields)))
  for key, value in VARIANTS[name].items():
    if cfg.get(key, value) != value:
      raise ConfigError(f"learner.{key}", cfg[key], f"learner.name={name!r} sets it",
                        f"{value!r}, or another learner.name")
  if "task_chunk" in cfg:
    cfg["task_chunk"] = resolve_chunk(cfg["task_chunk"])
  config = MAMLConfig(**{**VARIANTS[name], **cfg, "task": task})
  num_ways = ways if task == "classification" else None
  return MAML(model=model_fn(num_ways or 1), optimizer=optimizer, config=config, num_ways=num_ways)
