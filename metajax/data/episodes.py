"""Episodic sampling in pure JAX: a key and a class-indexed array -> a meta-batch of tasks.

One jit-compiled, vmapped call draws `batch` N-way K-shot Q-query tasks with
static shapes, so the train step never recompiles and sampling runs on the
accelerator beside the step (it is a gather: far cheaper than a meta-step).

Within a task, the N classes are drawn without replacement in random order and
labelled 0..N-1 in that order, so the class -> label map is a fresh permutation
per task; support and query examples of a class are disjoint, and both sets are
shuffled so no model can rely on example order.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metajax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
  """Static shape of a meta-batch: `batch` tasks of `ways` classes, `shots` + `queries` each.

  rotations: Omniglot augmentation, each class x 4 rotations (0/90/180/270 deg) as new classes.
  """
  ways: int
  shots: int
  queries: int
  batch: int = 1
  rotations: bool = False

  def validate(self, images_shape: tuple[int, ...], split: str = "split",
               where: str | None = None) -> None:
    """ConfigError unless tasks of this spec can be drawn from `[classes, examples, ...]`.

    The message calls the array 'the `split` split', or `where` when given.
    """
    for key in ("ways", "shots", "queries", "batch"):
      if getattr(self, key) <= 0:
        raise ConfigError(key, getattr(self, key), "must be positive", ">= 1")
    where = where or f"the {split} split"
    if len(images_shape) < 2:
      raise ConfigError("images", tuple(images_shape), "needs a class and an example axis",
                        "an array [classes, examples, ...]")
    classes, examples = images_shape[:2]
    available = classes * (4 if self.rotations else 1)
    if self.ways > available:
      raise ConfigError("ways", self.ways, f"{where} has {available} classes"
                        + (" (with rotations)" if self.rotations else ""), f"1..{available}")
    if self.shots + self.queries > examples:
      raise ConfigError("shots", self.shots,
                        f"shots + queries = {self.shots} + {self.queries} exceeds the "
                        f"{examples} examples per class of {where}",
                        f"shots + queries <= {examples}")
    if self.rotations and (len(images_shape) < 4 or images_shape[2] != images_shape[3]):
      raise ConfigError("rotations", True, f"rotations need square images, got {images_shape[2:]}",
                        "False for non-square images")


class Tasks(NamedTuple):
  """A meta-batch. x: [B, N*K or N*Q, *example_shape]; y: [B, N*K or N*Q] (int32 labels or floats)."""
  support_x: jax.Array
  support_y: jax.Array
  query_x: jax.Array
  query_y: jax.Array


def _rotate(x: jax.Array, k: jax.Array) -> jax.Array:
  """Rotates images [..., H, W, C] by k * 90 degrees (k traced)."""
  return jax.lax.switch(k, [lambda a, i=i: jnp.rot90(a, i, axes=(-3, -2)) for i in range(4)], x)


def _one_task(key: jax.Array, images: jax.Array, spec: EpisodeSpec) -> Tasks:
  classes, examples = images.shape[:2]
  n, k, q = spec.ways, spec.shots, spec.queries
  k_cls, k_ex, k_s, k_q = jax.random.split(key, 4)
  drawn = jax.random.choice(k_cls, classes * (4 if spec.rotations else 1), (n,), replace=False)
  base = drawn // 4 if spec.rotations else drawn
  ex = jax.vmap(lambda kk: jax.random.permutation(kk, examples)[: k + q])(jax.random.split(k_ex, n))
  x = images[base[:, None], ex]                                 # [N, K+Q, ...]
  if spec.rotations:
    x = jax.vmap(_rotate)(x, drawn % 4)
  if images.dtype == jnp.uint8:
    x = x.astype(jnp.float32) / 255.0
  labels = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None], (n, k + q))
  flat = lambda a: a.reshape((-1,) + a.shape[2:])
  sx, sy = flat(x[:, :k]), flat(labels[:, :k])
  qx, qy = flat(x[:, k:]), flat(labels[:, k:])
  ps, pq = jax.random.permutation(k_s, n * k), jax.random.permutation(k_q, n * q)
  return Tasks(sx[ps], sy[ps], qx[pq], qy[pq])


def sample_tasks(key: jax.Array, images: jax.Array, spec: EpisodeSpec) -> Tasks:
  """Draws `spec.batch` tasks from `images` [classes, examples, *shape].

  uint8 inputs come back as float32 in [0, 1]; other dtypes are passed through
  (e.g. class-indexed embeddings). Deterministic per key. Jit it with `spec`
  static (see `make_sampler`). A spec the array cannot serve (more ways than classes,
  shots + queries above the examples per class) is a ConfigError naming the values.
  """
  spec.validate(tuple(images.shape), where=f"images of shape {tuple(images.shape)}")
  images = jnp.asarray(images)
  return jax.vmap(lambda kk: _one_task(kk, images, spec))(jax.random.split(key, spec.batch))


def make_sampler(spec: EpisodeSpec, out_sharding=None):
  """A jitted `(key, images) -> Tasks`, its outputs laid out as `out_sharding` (e.g. batch over `data`)."""
  fn = lambda key, images: sample_tasks(key, images, spec)
  return jax.jit(fn, out_shardings=out_sharding)
