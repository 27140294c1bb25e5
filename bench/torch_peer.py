"""The PyTorch peer of bench/meta_step.py: the same meta-steps written idiomatically with torch.func.

MAML follows the functorch MAML-Omniglot example (functional_call + grad inside,
vmap over tasks, autograd .backward() outside; second order unless
`first_order`, which detaches the inner gradients). ProtoNet is plain eager
PyTorch (no per-task weights, nothing to transform). CPU build, NCHW, oneDNN.

Each `make_*` returns `(step, batch)`: `step(batch)` runs one meta-step
(forward, backward, Adam update) and returns the loss as a float.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


def conv4(num_outputs: int | None, filters: int = 64, in_channels: int = 1) -> nn.Module:
  """4 x [3x3 conv, batch norm (batch statistics), ReLU, 2x2 max-pool] (+ linear head); NCHW."""
  layers, c = [], in_channels
  for _ in range(4):
    layers += [nn.Conv2d(c, filters, 3, padding=1),
               # Batch statistics only, as under vmap in the functorch example.
               nn.BatchNorm2d(filters, momentum=0.1, track_running_stats=False),
               nn.ReLU(), nn.MaxPool2d(2)]
    c = filters
  layers.append(nn.Flatten())
  if num_outputs is not None:
    layers.append(nn.Linear(filters, num_outputs))
  return nn.Sequential(*layers)


def mlp(hidden=(40, 40)) -> nn.Module:
  layers, d = [], 1
  for h in hidden:
    layers += [nn.Linear(d, h), nn.ReLU()]
    d = h
  layers.append(nn.Linear(d, 1))
  return nn.Sequential(*layers)


def _images(rng, b, n, size=28):
  return torch.from_numpy(rng.random((b, n, 1, size, size), dtype=np.float32))


def make_maml(net: nn.Module, batch, loss_fn, inner_steps: int, inner_lr: float,
              first_order: bool, task_batching: str = "vmap", lr: float = 1e-3):
  """A MAML meta-step over `batch` = (support_x, support_y, query_x, query_y), tasks first."""
  params = {k: v for k, v in net.named_parameters()}
  buffers = {k: v for k, v in net.named_buffers()}
  opt = torch.optim.Adam(net.parameters(), lr=lr)

  def inner_loss(p, x, y):
    return loss_fn(functional_call(net, (p, buffers), (x,)), y)

  def task_loss(sx, sy, qx, qy):
    p = params
    for _ in range(inner_steps):
      g = grad(inner_loss)(p, sx, sy)
      p = {k: p[k] - inner_lr * (g[k].detach() if first_order else g[k]) for k in p}
    return inner_loss(p, qx, qy)

  def step(b):
    opt.zero_grad(set_to_none=True)
    if task_batching == "vmap":
      losses = vmap(task_loss)(*b)
    else:  # a Python loop over tasks
      losses = torch.stack([task_loss(*(t[i] for t in b)) for i in range(b[0].shape[0])])
    loss = losses.mean()
    loss.backward()
    opt.step()
    return float(loss.detach())

  return step


def make_conv4_maml(ways=5, shots=1, queries=15, meta_batch=32, inner_steps=1, first_order=False,
                    filters=64, task_batching="vmap", seed=0):
  """conv4 MAML N-way K-shot on random 28x28x1 images (speed does not depend on pixel values)."""
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  net = conv4(ways, filters)
  label = lambda k: torch.arange(ways).repeat_interleave(k).repeat(meta_batch, 1)
  batch = (_images(rng, meta_batch, ways * shots), label(shots),
           _images(rng, meta_batch, ways * queries), label(queries))
  step = make_maml(net, batch, F.cross_entropy, inner_steps, 0.4, first_order, task_batching)
  return step, batch


def make_sinusoid_maml(meta_batch=25, shots=10, queries=10, inner_steps=1, first_order=False,
                       task_batching="vmap", seed=0):
  """MAML sinusoid regression (Finn et al. 2017): MLP 40-40, inner SGD lr 0.01, Adam 1e-3."""
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  amp = rng.uniform(0.1, 5.0, (meta_batch, 1, 1))
  phase = rng.uniform(0, np.pi, (meta_batch, 1, 1))
  x = rng.uniform(-5, 5, (meta_batch, shots + queries, 1))
  y = amp * np.sin(x - phase)
  t = lambda a: torch.from_numpy(a.astype(np.float32))
  batch = (t(x[:, :shots]), t(y[:, :shots]), t(x[:, shots:]), t(y[:, shots:]))
  step = make_maml(mlp(), batch, F.mse_loss, inner_steps, 0.01, first_order, task_batching)
  return step, batch


def make_protonet(ways=5, shots=5, queries=15, filters=64, seed=0, lr=1e-3):
  """ProtoNet episode step: embed support and query together, squared-Euclidean logits, CE."""
  torch.manual_seed(seed)
  rng = np.random.default_rng(seed)
  net = conv4(None, filters)
  opt = torch.optim.Adam(net.parameters(), lr=lr)
  sx, qx = _images(rng, 1, ways * shots)[0], _images(rng, 1, ways * queries)[0]
  sy = torch.arange(ways).repeat_interleave(shots)
  qy = torch.arange(ways).repeat_interleave(queries)
  batch = (sx, sy, qx, qy)

  def step(b):
    sx, sy, qx, qy = b
    opt.zero_grad(set_to_none=True)
    z = net(torch.cat([sx, qx]))
    zs, zq = z[: sx.shape[0]], z[sx.shape[0]:]
    protos = torch.zeros(ways, z.shape[1]).index_add_(0, sy, zs) / shots
    logits = -torch.cdist(zq, protos).pow(2)
    loss = F.cross_entropy(logits, qy)
    loss.backward()
    opt.step()
    return float(loss.detach())

  return step, batch
