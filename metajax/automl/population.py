"""Neural families trained as vmapped populations: one compiled program per architecture.

Trials that share (family, layers, units, batch size) are stacked along a
leading population axis P: parameters, optimizer states, RNG keys and the
per-member hyperparameters (learning rate, weight decay, dropout, optimizer id)
are arrays with a leading [P]. One epoch of every member is one call of a
jitted `lax.scan` over steps, `vmap`ped over members; the population axis is
sharded over the mesh's `data` axis. P is fixed per search (the group size
padded to a power of two and a multiple of the device count; rungs that keep
fewer members pad with copies), so a search compiles one program per
architecture however the rungs shrink. Each epoch program also returns the
validation probabilities, so there is no separate evaluation program. Members continue from their own state
across rungs; each member's batches come from `fold_in(key, epoch)`, so its
training does not depend on which population it shares.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metajax import parallel

OPTIMIZERS = ("adam", "sgd", "rmsprop")


@dataclasses.dataclass(frozen=True)
class Arch:
  """Static shape of one population program (hashable: it keys the compile cache).

  in_shape: one example's shape ([D], [H, W, C] or [L] token ids).
  """
  family: str
  layers: int
  units: int
  batch_size: int
  in_shape: tuple[int, ...]
  num_classes: int
  steps_per_epoch: int
  vocab: int = 0


# ---------------------------------------------------------------- models
def _dense(rng, fan_in, fan_out, gain=2.0):
  return {"w": (rng.standard_normal((fan_in, fan_out)) * np.sqrt(gain / fan_in)).astype(np.float32),
          "b": np.zeros((fan_out,), np.float32)}


def init_params(arch: Arch, seed: int) -> dict:
  """Parameters of one member (a dict pytree of numpy arrays), drawn on the host from `seed`:
  no compiled program, and a member's start does not depend on its population."""
  rng = np.random.default_rng(seed)
  u, c = arch.units, arch.num_classes
  if arch.family == "mlp":
    dims = [int(np.prod(arch.in_shape))] + [u] * arch.layers
    p = {f"h{i}": _dense(rng, dims[i], dims[i + 1]) for i in range(arch.layers)}
    p["out"] = _dense(rng, u, c, 1.0)
  elif arch.family == "cnn":
    h, w, ch = arch.in_shape
    width = max(u // 2, 8)
    p = {}
    for i in range(arch.layers):
      p[f"c{i}"] = {"w": (rng.standard_normal((3, 3, ch, width)) * np.sqrt(2.0 / (9 * ch))
                          ).astype(np.float32), "b": np.zeros((width,), np.float32)}
      ch = width
      if h >= 4:
        h, w = h // 2, w // 2
    p["fc"] = _dense(rng, h * w * ch, u)
    p["out"] = _dense(rng, u, c, 1.0)
  elif arch.family == "gru":
    g = lambda *shape: (rng.standard_normal(shape) * np.sqrt(1.0 / u)).astype(np.float32)
    p = {"emb": (rng.standard_normal((arch.vocab, u)) * 0.1).astype(np.float32),
         "wx": g(u, 3 * u), "wh": g(u, 3 * u), "b": np.zeros((3 * u,), np.float32),
         "out": _dense(rng, u, c, 1.0)}
  else:
    raise ValueError(arch.family)
  return p


def _dropout(x, rate, key, train):
  if not train:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def apply(arch: Arch, p: dict, x, rate, key, train: bool):
  """Logits [B, C] for inputs x [B, *in_shape]; dropout `rate` is a traced scalar."""
  ks = jax.random.split(key, arch.layers + 1)
  if arch.family == "mlp":
    h = x.reshape(x.shape[0], -1)
    for i in range(arch.layers):
      h = jax.nn.relu(h @ p[f"h{i}"]["w"] + p[f"h{i}"]["b"])
      h = _dropout(h, rate, ks[i], train)
    return h @ p["out"]["w"] + p["out"]["b"]
  if arch.family == "cnn":
    h = x
    for i in range(arch.layers):
      h = jax.lax.conv_general_dilated(h, p[f"c{i}"]["w"], (1, 1), "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
      h = jax.nn.relu(h + p[f"c{i}"]["b"])
      if h.shape[1] >= 4:
        h = jax.lax.reduce_window(h, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0
    h = jax.nn.relu(h.reshape(h.shape[0], -1) @ p["fc"]["w"] + p["fc"]["b"])
    h = _dropout(h, rate, ks[0], train)
    return h @ p["out"]["w"] + p["out"]["b"]
  # gru: embedding -> GRU over tokens -> mean of hidden states over non-pad tokens
  mask = (x > 0).astype(jnp.float32)                      # [B, L]
  e = _dropout(p["emb"][x], rate, ks[0], train)          # [B, L, U]
  xs = jnp.einsum("blu,uv->lbv", e, p["wx"]) + p["b"]    # [L, B, 3U]

  def cell(h, inp):
    gx, m = inp
    gh = h @ p["wh"]
    r = jax.nn.sigmoid(gx[:, :arch.units] + gh[:, :arch.units])
    z = jax.nn.sigmoid(gx[:, arch.units:2 * arch.units] + gh[:, arch.units:2 * arch.units])
    n = jnp.tanh(gx[:, 2 * arch.units:] + r * gh[:, 2 * arch.units:])
    h_new = (1 - z) * n + z * h
    h = jnp.where(m[:, None] > 0, h_new, h)
    return h, h * m[:, None]

  _, hs = jax.lax.scan(cell, jnp.zeros((x.shape[0], arch.units)), (xs, mask.T))
  pooled = hs.sum(0) / jnp.maximum(mask.sum(1, keepdims=True), 1.0)
  pooled = _dropout(pooled, rate, ks[1], train)
  return pooled @ p["out"]["w"] + p["out"]["b"]


# ---------------------------------------------------------------- optimizer
def opt_update(g, opt, params, hp):
  """One step of the member's optimizer, picked per member by `hp['opt']` (a traced int).

  Same rules as optax.adam (0.9, 0.999), optax.sgd(momentum=0.9) and
  optax.rmsprop (decay 0.9), after optax.add_decayed_weights(wd); they share
  the slots mu / nu, so switching costs a few elementwise selects, not 3x state.
  opt: {'mu', 'nu', 'count'}; hp: scalars lr, wd, opt.
  """
  is_adam, is_sgd = hp["opt"] == 0, hp["opt"] == 1
  count = opt["count"] + 1
  b2 = jnp.where(is_adam, 0.999, 0.9)
  bc1 = 1 - 0.9 ** count.astype(jnp.float32)
  bc2 = 1 - b2 ** count.astype(jnp.float32)

  def leaf(g, p, mu, nu):
    g = g + hp["wd"] * p
    mu = jnp.where(is_sgd, 0.9 * mu + g, 0.9 * mu + 0.1 * g)
    nu = b2 * nu + (1 - b2) * g * g
    adam = (mu / bc1) / (jnp.sqrt(nu / bc2) + 1e-8)
    rms = g / (jnp.sqrt(nu) + 1e-8)
    u = jnp.where(is_sgd, mu, jnp.where(is_adam, adam, rms))
    return p - hp["lr"] * u, mu, nu

  out = jax.tree.map(leaf, g, params, opt["mu"], opt["nu"])
  pick = lambda i: jax.tree.map(lambda _, o: o[i], params, out)
  return pick(0), {"mu": pick(1), "nu": pick(2), "count": count}


# ---------------------------------------------------------------- population programs
def member_init(arch: Arch, seed: int) -> dict:
  """Host state of one member: params, optimizer slots, PRNG key, epochs done."""
  params = init_params(arch, seed)
  zeros = jax.tree.map(np.zeros_like, params)
  return {"params": params, "opt": {"mu": zeros, "nu": jax.tree.map(np.zeros_like, params),
                                    "count": np.zeros((), np.int32)},
          "key": np.array([0, seed & 0xFFFFFFFF], np.uint32), "epoch": np.zeros((), np.int32)}


def member_epoch(arch: Arch, st, hp, X, Y, Xv):
  """One epoch of one member over (X [N, ...], Y [N]) then its validation probabilities.

  Returns (state, mean train loss, probabilities on Xv [Nv, C]).
  """
  key = jax.random.fold_in(st["key"], st["epoch"] + 1)
  n = X.shape[0]
  perm = jax.random.permutation(key, n)[: arch.steps_per_epoch * arch.batch_size]
  idx = perm.reshape(arch.steps_per_epoch, arch.batch_size)

  def loss_fn(params, xb, yb, k):
    logits = apply(arch, params, xb, hp["dropout"], k, True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

  def step(carry, inp):
    params, opt = carry
    i, ib = inp
    loss, g = jax.value_and_grad(loss_fn)(params, X[ib], Y[ib], jax.random.fold_in(key, i))
    return opt_update(g, opt, params, hp), loss

  (params, opt), losses = jax.lax.scan(
      step, (st["params"], st["opt"]), (jnp.arange(arch.steps_per_epoch), idx))
  st = dict(st, params=params, opt=opt, epoch=st["epoch"] + 1)
  return st, losses.mean(), member_predict(arch, params, Xv)


def member_predict(arch: Arch, params, X):
  """Class probabilities [N, C] (eval mode, no dropout)."""
  return jax.nn.softmax(apply(arch, params, X, 0.0, jax.random.PRNGKey(0), False), -1)


class Programs:
  """Compiled population programs, cached per (arch, P); AOT so memory is known."""

  def __init__(self, mesh):
    self.mesh = mesh
    self._cache: dict[Any, Any] = {}
    self.compiles = 0

  def _compile(self, name, fn, args, donate=()):
    k = (name,) + tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(args))
    if k not in self._cache:
      t0 = time.perf_counter()
      compiled = jax.jit(fn, donate_argnums=donate).lower(*args).compile()
      mem = compiled.memory_analysis()
      nbytes = 0 if mem is None else (mem.argument_size_in_bytes + mem.output_size_in_bytes
                                      + mem.temp_size_in_bytes)
      self._cache[k] = (compiled, nbytes, time.perf_counter() - t0)
      self.compiles += 1
    return self._cache[k]

  def has_epoch(self, arch: Arch) -> bool:
    """Whether an epoch program of `arch` is compiled already (for any P)."""
    return any(k[0] == ("epoch", arch) for k in self._cache)

  def mean_compile_s(self) -> float:
    """Mean seconds per compile so far (0 before the first)."""
    times = [v[2] for v in self._cache.values()]
    return sum(times) / len(times) if times else 0.0

  def epoch(self, arch, state, hp, X, Y, Xv):
    """One epoch of every member: (state [P...], train loss [P], val probs [P, Nv, C], bytes)."""
    fn = jax.vmap(functools.partial(member_epoch, arch), in_axes=(0, 0, None, None, None))
    compiled, nbytes, _ = self._compile(("epoch", arch), fn, (state, hp, X, Y, Xv), donate=(0,))
    st, loss, probs = compiled(state, hp, X, Y, Xv)
    return st, loss, probs, nbytes

  def predict(self, arch, params, X, chunk: int = 1024):
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
  p = 1
  while p < n:
    p *= 2
  return max(p, devices) if max(p, devices) % devices == 0 else p * devices


def hp_arrays(hps: list[dict]) -> dict[str, np.ndarray]:
  """Per-member hyperparameter arrays [P] from trial hyperparameter dicts."""
  return {"lr": np.array([h["learning_rate"] for h in hps], np.float32),
          "wd": np.array([h.get("weight_decay", 0.0) for h in hps], np.float32),
          "dropout": np.array([h.get("dropout", 0.0) for h in hps], np.float32),
          "opt": np.array([OPTIMIZERS.index(h.get("optimizer", "adam")) for h in hps], np.int32)}


def train_population(programs: Programs, arch: Arch, size: int, seeds: list[int],
                     hps: list[dict], states: list[Any], epochs: int, X, Y, Xv,
                     stop: Callable[[], bool] = lambda: False):
  """Advances members by `epochs` epochs from their states (None: fresh init).

  stop(): checked after every epoch; True ends training early (the time budget),
  so the curve may be shorter than `epochs` (at least one epoch runs).

  size: the population size P of the program (>= members; the rest is padding).
  seeds, hps, states: one per member. X [N, ...], Y [N], Xv [Nv, ...]: replicated arrays.
  Returns (new host states, train loss per epoch [n, epochs], val probs [n, Nv, C]
  after the last epoch, program bytes).
  """
  n = len(hps)
  pad = lambda xs: list(xs) + [xs[0]] * (size - n)
  states = [member_init(arch, sd) if s is None else s for s, sd in zip(states, seeds)]
  st = parallel.shard_batch(jax.tree.map(lambda *a: np.stack(a), *pad(states)), programs.mesh)
  hp = parallel.shard_batch(hp_arrays(pad(hps)), programs.mesh)
  curves, probs, nbytes = [], None, 0
  for _ in range(epochs):
    st, loss, probs, nbytes = programs.epoch(arch, st, hp, X, Y, Xv)
    curves.append(loss)
    if len(curves) < epochs and stop():
      break
  host = jax.device_get(st)
  curves = np.stack([np.asarray(c) for c in curves], 1)
  out = [jax.tree.map(lambda a: a[i], host) for i in range(n)]
  return out, curves[:n], np.asarray(probs)[:n], nbytes
