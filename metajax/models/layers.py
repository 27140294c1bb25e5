"""Convolution and pooling written as slices + matmuls, for fast meta-learning on CPU.

XLA's CPU convolutions run at about half the speed of PyTorch's oneDNN ones on
conv4-sized layers, and under `vmap` with per-task weights (MAML) every
convolution becomes a grouped convolution, slower still. Written as patches x
matmul, a stride-1 convolution is a plain dot (a batched dot under `vmap`),
which XLA CPU runs well, and its first and second derivatives are dots, pads and
slices too. Likewise a 2x2 max-pool from strided taps with a select-based derivative
avoids `reduce_window`, whose second derivative is slow on CPU.

All functions take NHWC inputs and HWIO kernels (Flax's layouts) and give the
same values and derivatives as `flax.linen.Conv` / `flax.linen.max_pool`
(see tests/test_conv_impl.py).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

CONV_IMPLS = ("xla", "im2col")


def _same_pad(x: jax.Array, kh: int, kw: int) -> jax.Array:
  """Zero-pads H and W like XLA/Flax 'SAME' at stride 1: (k-1)//2 before, the rest after."""
  return jnp.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))


def conv2d(x: jax.Array, kernel: jax.Array, impl: str = "im2col") -> jax.Array:
  """Stride-1 'SAME' cross-correlation, as `flax.linen.Conv` computes it (no bias).

  x: [N, H, W, C]; kernel: [kh, kw, C, F] -> [N, H, W, F].
  impl: 'xla' (lax.conv_general_dilated) or 'im2col' (patches [N*H*W, kh*kw*C]
  built from kh*kw shifted slices, times kernel [kh*kw*C, F]: one dot).
  """
  kh, kw, c, f = kernel.shape
  n, h, w, _ = x.shape
  if impl == "xla":
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  xp = _same_pad(x, kh, kw)
  taps = [xp[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]
  if impl == "im2col":
    # Tap-major, channel-minor: matches kernel.reshape(kh*kw*C, F).
    patches = jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]
    out = patches.reshape(n * h * w, kh * kw * c) @ kernel.reshape(kh * kw * c, f)
    return out.reshape(n, h, w, f)
  raise ValueError(f"conv impl {impl!r}: expected one of {CONV_IMPLS}")


def _pool_taps(x: jax.Array) -> tuple[jax.Array, ...]:
  """The four [N, H // 2, W // 2, C] taps of 2x2 stride-2 windows, in row-major window order."""
  n, h, w, c = x.shape
  h, w = h // 2, w // 2
  y = x[:, : 2 * h, : 2 * w, :].reshape(n, h, 2, w, 2, c)
  return y[:, :, 0, :, 0], y[:, :, 0, :, 1], y[:, :, 1, :, 0], y[:, :, 1, :, 1]


@jax.custom_jvp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """2x2 stride-2 'VALID' max-pool (odd trailing rows/columns dropped) from strided taps.

  x: [N, H, W, C] -> [N, H // 2, W // 2, C]; the values of `nn.max_pool(x, (2, 2),
  strides=(2, 2))` and its derivatives, ties included: the tangent (and so the gradient)
  flows through the first maximal element of each window, as `reduce_window`'s does, by
  selects whose masks have zero derivative, so second-order MAML differentiates only
  selects. (Differentiating `max` itself instead, over a reshaped window axis, was slower,
  and XLA CPU's algebraic simplifier miscompiled its vmapped second-order gradient:
  tests/test_conv_impl.py::test_vmapped_maml_gradient_matches_xla_ops.)
  """
  a, b, c, d = _pool_taps(x)
  return jnp.maximum(jnp.maximum(a, b), jnp.maximum(c, d))


@max_pool_2x2.defjvp
def _max_pool_2x2_jvp(primals, tangents):
  (x,), (tx,) = primals, tangents
  (a, b, c, d), (ta, tb, tc, td) = _pool_taps(x), _pool_taps(tx)
  first, second = a >= b, c >= d  # ties: the earlier element, as reduce_window
  top, bottom = jnp.where(first, a, b), jnp.where(second, c, d)
  upper = top >= bottom
  return (jnp.where(upper, top, bottom),
          jnp.where(upper, jnp.where(first, ta, tb), jnp.where(second, tc, td)))


class Conv(nn.Module):
  """Drop-in for `nn.Conv(features, kernel_size, padding='SAME')` at stride 1.

  Same parameter names, shapes and initialisers ('kernel' [kh, kw, C, F],
  `kernel_init`, default lecun normal; 'bias' [F], zeros), so parameter trees are interchangeable.
  x: [N, H, W, C] -> [N, H, W, F].
  """
  features: int
  kernel_size: Sequence[int] = (3, 3)
  impl: str = "im2col"
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
    y = conv2d(x, kernel, self.impl)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros_init(), (self.features,))
    return y
