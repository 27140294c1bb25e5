"""The MAML sinusoid regression task family (Finn et al. 2017).

A task is y = A sin(x - phase) with A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5].
K support points and Q query points per task, drawn in JAX.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from metajax.data.episodes import EpisodeSpec, Tasks


@dataclasses.dataclass(frozen=True)
class Sinusoid:
  """The task family; `load()` returns it so it can stand where image datasets do."""
  name: str = "sinusoid"
  amplitude: tuple[float, float] = (0.1, 5.0)
  phase: tuple[float, float] = (0.0, jnp.pi)
  x_range: tuple[float, float] = (-5.0, 5.0)

  def sample(self, key: jax.Array, spec: EpisodeSpec) -> Tasks:
    """`spec.batch` tasks with `spec.shots` support and `spec.queries` query points.

    x, y: [B, K or Q, 1] float32. `spec.ways` is ignored (regression).
    """
    b, k, q = spec.batch, spec.shots, spec.queries
    ka, kp, kx = jax.random.split(key, 3)
    amp = jax.random.uniform(ka, (b, 1, 1), minval=self.amplitude[0], maxval=self.amplitude[1])
    phase = jax.random.uniform(kp, (b, 1, 1), minval=self.phase[0], maxval=self.phase[1])
    x = jax.random.uniform(kx, (b, k + q, 1), minval=self.x_range[0], maxval=self.x_range[1])
    y = amp * jnp.sin(x - phase)
    return Tasks(x[:, :k], y[:, :k], x[:, k:], y[:, k:])

  def curve(self, amplitude: float, phase: float, x: jax.Array) -> jax.Array:
    return amplitude * jnp.sin(x - phase)


def load(data_dir: str = "") -> Sinusoid:
  del data_dir  # generated on the fly
  return Sinusoid()
