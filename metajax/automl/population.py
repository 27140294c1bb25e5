"""Neural families trained as vmapped populations: one compiled program per family.

A family is a registered `metajax.models` Linen module (`Arch.module`). An `Arch` is the
static shape of one program: for `mlp` the largest (layers, units, batch size) of the
search space, so every trial of the family shares it; `gru` the largest units and batch
size (it has one layer); `cnn` keeps layers and units structural (one program per width and
depth: its pooling is not masked) and shares the batch size. Members are
stacked along a leading population axis P into one `Member` pytree: a
`metajax.state.TrainState` whose optimizer is `metajax.optim`'s 'switch' (adam | sgd |
rmsprop picked per member by the traced `optimizer` index, the learning rate in log space
and the weight decay in the optimizer state), plus each member's seed, dropout rate and its
own layers, units and batch size as data. An mlp or gru member's inactive layers and units
are masked (`MLP` / `GRU` with `active_*`), so it computes exactly its smaller network.

Batch size as data: a member with batch b takes N // b steps per epoch (one pass over its
shuffled training rows, the last partial batch dropped, as a program of exactly its size
would), each step on a batch of the program's largest size whose rows past b have weight 0.
An epoch call loops `lax.fori_loop` for the population's most steps (a traced count, so it
does not key the program); a member whose own epoch is over keeps its state unchanged. The
executor puts members of one batch size together, so few steps are idle.

One epoch of every member is one call of the jitted loop, `vmap`ped over members, which
also returns the validation probabilities; the population axis is sharded over the mesh's
`data` axis. P is fixed per search (the group size padded to a power of two and a multiple
of the device count; rungs that keep fewer members pad with copies). Members are initialised
by `vmap(model.init)` over typed keys `jax.random.key(seed)`, continue from their own state
across rungs, and take epoch e's batches from `fold_in(key(seed), e)`, so a member's
training does not depend on which population it shares.

`Programs` compiles ahead of time, optionally in a background thread (`Programs.prefetch`,
so compiles overlap the tree trials), and counts compiles and their seconds.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import math
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from metajax import compile_cache, models, optim, parallel
from metajax.state import TrainState

OPTIMIZERS = tuple(optim.DEFAULTS["choices"])  # the per-member `optimizer` index into these
# One optimizer for every member: its hyperparameters are per-member arrays in the state.
TX = optim.make_optimizer(dict(name="switch", choices=OPTIMIZERS))
# Threefry makes init programs slow to compile at XLA's default optimisation level.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
# Families whose network size is per-member data (masked): which of (layers, units).
MASKED = {"mlp": ("layers", "units"), "gru": ("units",)}


@dataclasses.dataclass(frozen=True)
class Arch:
  """Static shape of one population program (hashable: it keys the compile cache).

  layers, units, batch_size: the largest a member of the program may have (a member's own
  are data: `Member.layers/units/batch_size`; those a family does not mask are exact).
  in_shape: one example's shape ([D], [H, W, C] or [L] token ids); vocab: gru only.
  steps_per_epoch: N // batch_size, the epoch length of a member at the full batch size
  (a member with batch b takes N // b steps).
  own_layers, own_units: the network of the trial this Arch was made for (0: the Arch's),
  which `spec` describes; not part of the program's identity (equality, hash, repr).
  """
  family: str
  layers: int
  units: int
  batch_size: int
  in_shape: tuple[int, ...]
  num_classes: int
  steps_per_epoch: int
  vocab: int = 0
  own_layers: int = dataclasses.field(default=0, compare=False, repr=False)
  own_units: int = dataclasses.field(default=0, compare=False, repr=False)

  def model_kwargs(self, layers: int | None = None, units: int | None = None) -> dict[str, Any]:
    """The `metajax.models` constructor arguments of this family's network (dropout aside),
    at this shape or at a member's own (layers, units)."""
    L, u, c = layers or self.layers, units or self.units, self.num_classes
    if self.family == "mlp":
      return dict(num_outputs=c, hidden=(u,) * L, init_scale=2.0)  # He: ReLU stack
    if self.family == "cnn":
      return dict(num_outputs=c, features=(max(u // 2, 8),) * L, hidden=u)
    if self.family == "gru":
      return dict(num_outputs=c, vocab_size=self.vocab, units=u)
    raise ValueError(f"no neural family {self.family!r}")

  def module(self, dropout=0.0, layers=None, units=None):
    """The Linen module; `dropout` (and the member's `layers`, `units` where the family
    masks them: `MASKED`) may be traced per-member values."""
    size = dict(layers=layers, units=units)
    extra = {f"active_{k}": size[k] for k in MASKED.get(self.family, ())}
    return models.make(self.family, dropout=dropout, **self.model_kwargs(), **extra)

  def spec(self, dropout: float = 0.0, layers: int | None = None,
           units: int | None = None) -> dict[str, Any]:
    """JSON-ready {'name', **kwargs} of the network a member computes (for the saved model
    card): (layers, units), default the trial's own, else this shape."""
    kw = self.model_kwargs(layers or self.own_layers or None, units or self.own_units or None)
    return models.spec(dict(name=self.family, dropout=float(dropout), **kw))

  def dummy(self) -> jax.Array:
    return jnp.zeros((1,) + self.in_shape, jnp.int32 if self.family == "gru" else jnp.float32)


@struct.dataclass
class Member:
  """One member (or, with a leading [P] on every leaf, a population).

  state: TrainState (params, optimizer state with the member's hyperparameters, step).
  seed: uint32; the member's key is jax.random.key(seed): init from fold_in(key, 0),
    epoch e's batches and dropout from fold_in(key, e) (e >= 1).
  dropout: float32 rate of the member's dropout layers.
  layers, units, batch_size: int32, the member's own network and batch (<= the Arch's).
  """
  state: TrainState
  seed: jax.Array
  dropout: jax.Array
  layers: jax.Array
  units: jax.Array
  batch_size: jax.Array


STRUCTURE = ("layers", "units", "batch_size")


def hp_arrays(hps: list[dict], arch: Arch | None = None) -> dict[str, np.ndarray]:
  """Per-member hyperparameter arrays [P] from trial hyperparameter dicts; a structural one
  (layers, units, batch_size) missing from a dict is the Arch's (omitted without an Arch)."""
  out = {"log_learning_rate": np.log(np.array([h["learning_rate"] for h in hps], np.float64)
                                     ).astype(np.float32),
         "weight_decay": np.array([h.get("weight_decay", 0.0) for h in hps], np.float32),
         "optimizer": np.array([OPTIMIZERS.index(h.get("optimizer", "adam")) for h in hps],
                               np.int32),
         "dropout": np.array([h.get("dropout", 0.0) for h in hps], np.float32)}
  for k in STRUCTURE if arch is not None else ():
    out[k] = np.array([min(int(h.get(k, getattr(arch, k))), getattr(arch, k)) for h in hps],
                      np.int32)
  return out


def check_members(arch: Arch, hps: list[dict]) -> None:
  """ValueError when a member does not fit the program: larger than the Arch, or (cnn,
  gru) of another width or depth."""
  for h in hps:
    for k in STRUCTURE:
      v = int(h.get(k, getattr(arch, k)))
      exact = k != "batch_size" and k not in MASKED.get(arch.family, ())
      if v > getattr(arch, k) or (exact and v != getattr(arch, k)):
        raise ValueError(f"{k}={v} does not fit the {arch.family} program with {k}="
                         f"{getattr(arch, k)}" + (" (must be equal)" if exact else ""))


# ---------------------------------------------------------------- one member (vmapped)
def member_init(arch: Arch, seed, hp) -> Member:
  """A fresh member from its seed (uint32 scalar) and hyperparameters (scalars of hp_arrays)."""
  key = jax.random.key(seed)
  size = {k: hp.get(k, jnp.int32(getattr(arch, k))) for k in STRUCTURE}
  module = arch.module(0.0, size["layers"], size["units"])
  params = module.init(jax.random.fold_in(key, 0), arch.dummy(), train=False)["params"]
  state = TrainState.create(params, TX)
  opt_state = optim.with_hyperparams(
      state.opt_state, log_learning_rate=hp["log_learning_rate"],
      weight_decay=hp["weight_decay"], optimizer=hp["optimizer"])
  return Member(state.replace(opt_state=opt_state), seed, hp["dropout"], **size)


def train_step(model, state: TrainState, batch, key) -> tuple[TrainState, dict]:
  """One optimizer step on batch (x [B, ...], y [B], row weights w [B] summing to 1);
  key: the step's dropout key. The loss is the w-weighted cross-entropy."""
  x, y, w = batch

  def loss_fn(params):
    logits = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
    return (optax.softmax_cross_entropy_with_integer_labels(logits, y) * w).sum()

  loss, grads = jax.value_and_grad(loss_fn)(state.params)
  return state.apply_gradients(grads, TX), {"loss": loss}


def member_steps(m: Member, n: int):
  """Steps in one epoch of member `m` over n rows: N // its batch size (at least 1)."""
  return jnp.maximum(1, n // m.batch_size)


def member_epoch(arch: Arch, m: Member, X, Y, Xv, n_steps):
  """One epoch of one member over (X [N, ...], Y [N]) then its validation probabilities.

  n_steps: int32 scalar, the population's most steps (>= this member's N // batch size).
  Returns (member, mean train loss, probabilities on Xv [Nv, C]).
  """
  n, B = X.shape[0], arch.batch_size
  steps = member_steps(m, n)
  epoch = m.state.step // steps + 1
  key = jax.random.fold_in(jax.random.key(m.seed), epoch)
  perm = jax.random.permutation(key, n)
  rows = jnp.arange(B)
  w = (rows < m.batch_size).astype(jnp.float32) / m.batch_size  # rows past the batch: 0
  model = arch.module(m.dropout, m.layers, m.units)  # built here: this member's traced values

  def step(i, carry):
    state, total = carry
    ib = perm[(i * m.batch_size + rows) % n]  # batch i: perm[i*b : (i+1)*b] (+ masked rows)
    new, metrics = train_step(model, state, (X[ib], Y[ib], w), jax.random.fold_in(key, i))
    live = i < steps
    state = jax.tree.map(lambda a, b: jnp.where(live, a, b), new, state)
    return state, total + jnp.where(live, metrics["loss"], 0.0)

  state, total = jax.lax.fori_loop(0, n_steps, step, (m.state, jnp.zeros((), jnp.float32)))
  m = m.replace(state=state)
  return m, total / steps, member_predict(arch, m, Xv)


def member_predict(arch: Arch, m: Member, X):
  """Class probabilities [N, C] of member `m` (eval mode, no dropout)."""
  logits = arch.module(0.0, m.layers, m.units).apply({"params": m.state.params}, X, train=False)
  return jax.nn.softmax(logits, -1)


# ---------------------------------------------------------------- compiled population programs
def _abstract(tree, sharding):
  """ShapeDtypeStructs of `tree` (arrays or structs) placed with `sharding`."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), tree)


class Programs:
  """Compiled population programs, cached per (kind, arch, shapes); AOT so memory is known.

  `compiles` counts every compile (a load from JAX's persistent cache included: `cache_hits`);
  `compiles_by[kind]` splits it into init / epoch / predict. `compile_s` sums the seconds
  spent compiling (in the background or not); `wait_s` the seconds callers were blocked
  waiting for a compile (what the search paid).
  """

  def __init__(self, mesh):
    self.mesh = mesh
    self._cache: dict[Any, concurrent.futures.Future] = {}
    self._lock = threading.Lock()
    self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="compile")
    self.compiles = 0
    self.compiles_by: collections.Counter = collections.Counter()
    self.compile_s = 0.0
    self.wait_s = 0.0
    self.cache_hits = 0  # of `compiles`, how many JAX loaded from its persistent cache

  def _build(self, name, fn, args, donate, options):
    t0, hits = time.perf_counter(), compile_cache.hits()
    # every output has the population axis first: keep it split over `data`
    lowered = jax.jit(fn, donate_argnums=donate,
                      out_shardings=parallel.batch_sharding(self.mesh)).lower(*args)
    compiled = lowered.compile(compiler_options=options) if options else lowered.compile()
    mem = compiled.memory_analysis()
    nbytes = 0 if mem is None else (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                    + mem.temp_size_in_bytes)
    secs = time.perf_counter() - t0
    with self._lock:
      self.compiles += 1
      self.compiles_by[name[0]] += 1
      self.compile_s += secs
      self.cache_hits += compile_cache.hits() > hits
    return compiled, nbytes, secs

  def _future(self, name, fn, args, donate=(), options=None, background=False):
    k = (name,) + tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args))
    with self._lock:
      fut = self._cache.get(k)
      if fut is None:
        if background:
          fut = self._pool.submit(self._build, name, fn, args, donate, options)
        else:
          fut = concurrent.futures.Future()
          fut.set_running_or_notify_cancel()
        self._cache[k] = fut
        build_here = not background
      else:
        build_here = False
    if build_here:
      try:
        fut.set_result(self._build(name, fn, args, donate, options))
      except BaseException as e:
        fut.set_exception(e)
        with self._lock:
          self._cache.pop(k, None)
        raise
    return fut

  def _compile(self, name, fn, args, donate=(), options=None):
    fut = self._future(name, fn, args, donate, options)
    if not fut.done():
      t0 = time.perf_counter()
      fut.result()
      self.wait_s += time.perf_counter() - t0
    return fut.result()

  def signatures(self) -> list[str]:
    """'kind|key' of every program compiled here, stable across processes (a resumed run
    counts the union of its processes' programs)."""
    with self._lock:
      keys = [k for k, f in self._cache.items() if f.done() and f.exception() is None]
    return sorted(f"{k[0][0]}|{k!r}" for k in keys)

  def has_epoch(self, arch: Arch) -> bool:
    """Whether an epoch program of `arch` is compiled or compiling (for any P)."""
    return any(k[0] == ("epoch", arch) for k in self._cache)

  def ready(self, arch: Arch, timeout: float | None = None) -> bool:
    """Waits up to `timeout` seconds (None: for ever) for `arch`'s init and epoch programs
    started so far; whether they are all compiled (a failed compile counts: it raises later)."""
    with self._lock:
      futs = [f for k, f in self._cache.items() if k[0] in (("init", arch), ("epoch", arch))]
    t0 = time.perf_counter()
    done, pending = concurrent.futures.wait(futs, timeout)
    self.wait_s += time.perf_counter() - t0
    return not pending

  # ---- the programs; `abstract` args (prefetch) have the shapes and shardings of real ones
  def _init_args(self, arch: Arch, size: int):
    hp = hp_arrays([{"learning_rate": 1.0}] * size, arch)
    return (jax.ShapeDtypeStruct((size,), jnp.uint32, sharding=parallel.batch_sharding(
        self.mesh)), _abstract(hp, parallel.batch_sharding(self.mesh)))

  def _init_fn(self, arch: Arch):
    return jax.vmap(functools.partial(member_init, arch))

  def _epoch_fn(self, arch: Arch):
    return jax.vmap(functools.partial(member_epoch, arch), in_axes=(0, None, None, None, None))

  def prefetch(self, arch: Arch, size: int, X, Y, Xv) -> None:
    """Starts compiling `arch`'s init and epoch programs for populations of `size` in the
    background (X, Y, Xv: the replicated data it will train on); returns at once."""
    if self.has_epoch(arch):
      return
    init_args = self._init_args(arch, size)
    members = _abstract(jax.eval_shape(self._init_fn(arch), *init_args),
                        parallel.batch_sharding(self.mesh))
    rep = parallel.replicated(self.mesh)
    data = _abstract((X, Y, Xv), rep) + (jax.ShapeDtypeStruct((), jnp.int32, sharding=rep),)
    self._future(("init", arch), self._init_fn(arch), init_args, options=INIT_COMPILER_OPTIONS,
                 background=True)
    self._future(("epoch", arch), self._epoch_fn(arch), (members,) + data, donate=(0,),
                 background=True)

  def init(self, arch: Arch, seeds, hp) -> Member:
    """Fresh members [P] from seeds [P] (uint32) and hp_arrays [P], on the mesh."""
    hp = {**hp_arrays([{"learning_rate": 1.0}] * len(seeds), arch), **hp}  # Arch's sizes
    args = parallel.shard_batch((seeds, hp), self.mesh)
    # Runs once per member: compiled for compile speed (~3x faster; values within 1 ulp).
    return self._compile(("init", arch), self._init_fn(arch), args,
                         options=INIT_COMPILER_OPTIONS)[0](*args)

  def epoch(self, arch: Arch, members: Member, X, Y, Xv):
    """One epoch of every member: (members [P], train loss [P], val probs [P, Nv, C], bytes)."""
    n_steps = int(np.max(np.maximum(1, X.shape[0] // parallel.to_host(members.batch_size))))
    n_steps = parallel.replicate(jnp.int32(n_steps), self.mesh)
    compiled, nbytes, _ = self._compile(("epoch", arch), self._epoch_fn(arch),
                                        (members, X, Y, Xv, n_steps), donate=(0,))
    members, loss, probs = compiled(members, X, Y, Xv, n_steps)
    return members, loss, probs, nbytes

  def predict(self, arch: Arch, members: Member, X, chunk: int = 1024):
    """Probabilities [P, N, C] of members [P] in fixed-size chunks (one compile however
    large N is)."""
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
      probs = self._compile(("predict", arch), fn, (members, xb))[0](members, xb)
      out.append(parallel.to_host(probs)[:, : size - pad])
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
  seeds, hps, states: one per member (a hp dict's layers, units and batch_size are the
  member's own, default the Arch's). X [N, ...], Y [N], Xv [Nv, ...]: replicated arrays.
  Returns (new host Members, train loss per epoch [n, epochs], val probs [n, Nv, C]
  after the last epoch, program bytes).
  """
  n = len(hps)
  check_members(arch, hps)
  pad = lambda xs: list(xs) + [xs[0]] * (size - n)
  seeds, hps, states = pad([s & 0xFFFFFFFF for s in seeds]), pad(hps), pad(states)
  if any(s is None for s in states):
    fresh = programs.init(arch, np.array(seeds, np.uint32), hp_arrays(hps, arch))
    if all(s is None for s in states):
      members = fresh
    else:  # some continue: take the fresh ones from the init program, the rest as they were
      fresh = unstack(parallel.to_host(fresh), size)
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
  curves = np.stack([parallel.to_host(c) for c in curves], 1)
  return unstack(parallel.to_host(members), n), curves[:n], parallel.to_host(probs)[:n], nbytes
