"""Neural families trained as vmapped populations: one compiled program per architecture.

A family is a registered `metajax.models` Linen module (`Arch.module`). Trials that share
(family, layers, units, batch size) are stacked along a leading population axis P into
one `Member` pytree: a `metajax.state.TrainState` whose optimizer is `metajax.optim`'s
'switch' (adam | sgd | rmsprop picked per member by the traced `optimizer` index, the
learning rate in log space and the weight decay in the optimizer state), plus each member's
seed and dropout rate. Members are initialised by `vmap(model.init)` over typed keys
`jax.random.key(seed)`, so a member's start does not depend on its population.

One epoch of every member is one call of a jitted `lax.scan` over steps, `vmap`ped over
members, which also returns the validation probabilities; the population axis is sharded
over the mesh's `data` axis. P is fixed per search (the group size padded to a power of two
and a multiple of the device count; rungs that keep fewer members pad with copies), so a
search compiles one epoch program per architecture however the rungs shrink (plus one
small init program, and a predict program for the models it evaluates). Members continue
from their own state across rungs; each member's batches come from
`fold_in(key(seed), epoch)`, so its training does not depend on which population it shares.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from metajax import models, optim, parallel
from metajax.state import TrainState

OPTIMIZERS = tuple(optim.DEFAULTS["choices"])  # the per-member `optimizer` index into these
# One optimizer for every member: its hyperparameters are per-member arrays in the state.
TX = optim.make_optimizer(dict(name="switch", choices=OPTIMIZERS))
# Threefry makes init programs slow to compile at XLA's default optimisation level.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


@dataclasses.dataclass(frozen=True)
class Arch:
  """Static shape of one population program (hashable: it keys the compile cache).

  in_shape: one example's shape ([D], [H, W, C] or [L] token ids); vocab: gru only.
  """
  family: str
  layers: int
  units: int
  batch_size: int
  in_shape: tuple[int, ...]
  num_classes: int
  steps_per_epoch: int
  vocab: int = 0

  def model_kwargs(self) -> dict[str, Any]:
    """The `metajax.models` constructor arguments of this family's network (dropout aside)."""
    u, c = self.units, self.num_classes
    if self.family == "mlp":
      return dict(num_outputs=c, hidden=(u,) * self.layers, init_scale=2.0)  # He: ReLU stack
    if self.family == "cnn":
      return dict(num_outputs=c, features=(max(u // 2, 8),) * self.layers, hidden=u)
    if self.family == "gru":
      return dict(num_outputs=c, vocab_size=self.vocab, units=u)
    raise ValueError(f"no neural family {self.family!r}")

  def module(self, dropout=0.0):
    """The Linen module; `dropout` may be a traced per-member rate."""
    return models.make(self.family, dropout=dropout, **self.model_kwargs())

  def spec(self, dropout: float = 0.0) -> dict[str, Any]:
    """JSON-ready {'name', **kwargs} of the module (for the saved model card)."""
    return models.spec(dict(name=self.family, dropout=float(dropout), **self.model_kwargs()))

  def dummy(self) -> jax.Array:
    return jnp.zeros((1,) + self.in_shape, jnp.int32 if self.family == "gru" else jnp.float32)


@struct.dataclass
class Member:
  """One member (or, with a leading [P] on every leaf, a population).

  state: TrainState (params, optimizer state with the member's hyperparameters, step).
  seed: uint32; the member's key is jax.random.key(seed): init from fold_in(key, 0),
    epoch e's batches and dropout from fold_in(key, e) (e >= 1).
  dropout: float32 rate of the member's dropout layers.
  """
  state: TrainState
  seed: jax.Array
  dropout: jax.Array


def hp_arrays(hps: list[dict]) -> dict[str, np.ndarray]:
  """Per-member hyperparameter arrays [P] from trial hyperparameter dicts."""
  return {"log_learning_rate": np.log(np.array([h["learning_rate"] for h in hps], np.float64)
                                      ).astype(np.float32),
          "weight_decay": np.array([h.get("weight_decay", 0.0) for h in hps], np.float32),
          "optimizer": np.array([OPTIMIZERS.index(h.get("optimizer", "adam")) for h in hps],
                                np.int32),
          "dropout": np.array([h.get("dropout", 0.0) for h in hps], np.float32)}


# ---------------------------------------------------------------- one member (vmapped)
def member_init(arch: Arch, seed, hp) -> Member:
  """A fresh member from its seed (uint32 scalar) and hyperparameters (scalars of hp_arrays)."""
  key = jax.random.key(seed)
  params = arch.module().init(jax.random.fold_in(key, 0), arch.dummy(), train=False)["params"]
  state = TrainState.create(params, TX)
  opt_state = optim.with_hyperparams(
      state.opt_state, log_learning_rate=hp["log_learning_rate"],
      weight_decay=hp["weight_decay"], optimizer=hp["optimizer"])
  return Member(state.replace(opt_state=opt_state), seed, hp["dropout"])


def train_step(model, state: TrainState, batch, key) -> tuple[TrainState, dict]:
  """One optimizer step on batch (x [B, ...], y [B]); key: the step's dropout key."""
  x, y = batch

  def loss_fn(params):
    logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads, TX), {"loss": loss}


def member_epoch(arch: Arch, m: Member, X, Y, Xv):
  """One epoch of one member over (X [N, ...], Y [N]) then its validation probabilities.

  Returns (member, mean train loss, probabilities on Xv [Nv, C]).
  """
  epoch = m.state.step // arch.steps_per_epoch + 1
  key = jax.random.fold_in(jax.random.key(m.seed), epoch)
  perm = jax.random.permutation(key, X.shape[0])[: arch.steps_per_epoch * arch.batch_size]
  idx = perm.reshape(arch.steps_per_epoch, arch.batch_size)
  model = arch.module(m.dropout)  # built here: the rate is this member's traced value

  def step(state, inp):
    i, ib = inp
    state, metrics = train_step(model, state, (X[ib], Y[ib]), jax.random.fold_in(key, i))
    return state, metrics["loss"]

  state, losses = jax.lax.scan(step, m.state, (jnp.arange(arch.steps_per_epoch), idx))
  return m.replace(state=state), losses.mean(), member_predict(arch, state.params, Xv)


def member_predict(arch: Arch, params, X):
  """Class probabilities [N, C] (eval mode, no dropout)."""
  return jax.nn.softmax(arch.module().apply({"params": params}, X, train=False), -1)


# ---------------------------------------------------------------- compiled population programs
class Programs:
  """Compiled population programs, cached per (kind, arch, shapes); AOT so memory is known.

  `compiles` counts every compile; `compiles_by[kind]` splits it into init / epoch / predict.
  """

  def __init__(self, mesh):
    self.mesh = mesh
    self._cache: dict[Any, Any] = {}
    self.compiles = 0
    self.compiles_by: collections.Counter = collections.Counter()

  def _compile(self, name, fn, args, donate=(), options=None):
    k = (name,) + tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args))
    if k not in self._cache:
      t0 = time.perf_counter()
      # every output has the population axis first: keep it split over `data`
      lowered = jax.jit(fn, donate_argnums=donate,
                        out_shardings=parallel.batch_sharding(self.mesh)).lower(*args)
      compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
      mem = compiled.memory_analysis()
      nbytes = 0 if mem is None else (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                      + mem.temp_size_in_bytes)
      self._cache[k] = (compiled, nbytes, time.perf_counter() - t0)
      self.compiles += 1
      self.compiles_by[name[0]] += 1
    return self._cache[k]

  def signatures(self) -> list[str]:
    """'kind|key' of every program compiled here, stable across processes (a resumed run
    counts the union of its processes' programs)."""
    return sorted(f"{k[0][0]}|{k!r}" for k in self._cache)

  def has_epoch(self, arch: Arch) -> bool:
    """Whether an epoch program of `arch` is compiled already (for any P)."""
    return any(k[0] == ("epoch", arch) for k in self._cache)

  def mean_compile_s(self) -> float:
    """Mean seconds per epoch compile so far (0 before the first)."""
    times = [v[2] for k, v in self._cache.items() if k[0][0] == "epoch"]
    return sum(times) / len(times) if times else 0.0

  def init(self, arch: Arch, seeds, hp) -> Member:
    """Fresh members [P] from seeds [P] (uint32) and hp_arrays [P], on the mesh."""
    fn = jax.vmap(functools.partial(member_init, arch))
    args = parallel.shard_batch((seeds, hp), self.mesh)
    # Runs once per member: compiled for compile speed (~3x faster; values within 1 ulp).
    return self._compile(("init", arch), fn, args, options=INIT_COMPILER_OPTIONS)[0](*args)

  def epoch(self, arch: Arch, members: Member, X, Y, Xv):
    """One epoch of every member: (members [P], train loss [P], val probs [P, Nv, C], bytes)."""
    fn = jax.vmap(functools.partial(member_epoch, arch), in_axes=(0, None, None, None))
    compiled, nbytes, _ = self._compile(("epoch", arch), fn, (members, X, Y, Xv), donate=(0,))
    members, loss, probs = compiled(members, X, Y, Xv)
    return members, loss, probs, nbytes

  def predict(self, arch: Arch, params, X, chunk: int = 1024):
    """Probabilities [P, N, C] in fixed-size chunks (one compile however large N is)."""
    fn = jax.vmap(functools.partial(member_predict, arch), in_axes=(0, None))
    n = X.shape[0]
    size = min(chunk, n)
    out = []
    for s in range(0, n, size):
      xb = X[s:s + size]
      pad = size - xb.shape[0]
      if pad:
        xb = np.concatenate([xb, np.repeat(xb[-1:], pad, 0)])
      xb = parallel.replicate(jnp.asarray(xb), self.mesh)
      out.append(np.asarray(self._compile(("predict", arch), fn, (params, xb))[0](params, xb))
                 [:, : size - pad])
    return np.concatenate(out, 1)


def bucket(n: int, devices: int) -> int:
  """Population size padded to a power of two and a multiple of the device count."""
  p = 1 << max(0, math.ceil(math.log2(max(n, 1))))
  return max(p, devices) if max(p, devices) % devices == 0 else p * devices


def stack(members: list) -> Any:
  """Host members -> one host pytree with a leading [P]."""
  return jax.tree.map(lambda *a: np.stack(a), *members)


def unstack(tree, n: int) -> list:
  """The first `n` members of a host pytree with a leading [P]."""
  return [jax.tree.map(lambda a: a[i], tree) for i in range(n)]


def train_population(programs: Programs, arch: Arch, size: int, seeds: list[int],
                     hps: list[dict], states: list[Any], epochs: int, X, Y, Xv,
                     stop: Callable[[], bool] = lambda: False):
  """Advances members by `epochs` epochs from their states (None: fresh init).

  stop(): checked after every epoch; True ends training early (the time budget),
  so the curve may be shorter than `epochs` (at least one epoch runs).

  size: the population size P of the program (>= members; the rest is padding).
  seeds, hps, states: one per member. X [N, ...], Y [N], Xv [Nv, ...]: replicated arrays.
  Returns (new host Members, train loss per epoch [n, epochs], val probs [n, Nv, C]
  after the last epoch, program bytes).
  """
  n = len(hps)
  pad = lambda xs: list(xs) + [xs[0]] * (size - n)
  seeds, hps, states = pad([s & 0xFFFFFFFF for s in seeds]), pad(hps), pad(states)
  if any(s is None for s in states):
    fresh = programs.init(arch, np.array(seeds, np.uint32), hp_arrays(hps))
    if all(s is None for s in states):
      members = fresh
    else:  # some continue: take the fresh ones from the init program, the rest as they were
      fresh = unstack(jax.device_get(fresh), size)
      members = stack([f if s is None else s for f, s in zip(fresh, states)])
  else:
    members = stack(states)
  members = parallel.shard_batch(members, programs.mesh)
  curves, probs, nbytes = [], None, 0
  for _ in range(epochs):
    members, loss, probs, nbytes = programs.epoch(arch, members, X, Y, Xv)
    curves.append(loss)
    if len(curves) < epochs and stop():
      break
  curves = np.stack([np.asarray(c) for c in curves], 1)
  return unstack(jax.device_get(members), n), curves[:n], np.asarray(probs)[:n], nbytes
