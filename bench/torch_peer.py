"""The PyTorch peer of bench/meta_step.py: the same meta-steps written in each form PyTorch has.

MAML (conv4 and sinusoid), `torch.func` over a `functional_call` of the module:
  'loop'  a Python loop over tasks: per task `grad` of the support loss (second order
          unless `first_order`, which detaches the inner gradients), query loss at the
          adapted weights; the query losses averaged, one outer `backward`, one Adam step.
          The fastest form on a 2-core CPU for conv4.
  'vmap'  the same task function `vmap`ped over tasks (the functorch MAML-Omniglot
          example's form).
  (learn2learn's `MAML`, a third form, is in bench/l2l_peer.py: it needs its own venv.)
ProtoNet (one episode per step, no per-task weights, so nothing to loop or vmap over):
  'eager'          plain eager PyTorch, NCHW;
  'channels_last'  the same with the model and images in channels-last layout (oneDNN's
                   preferred layout on CPU);
  'compile'        the loss (forward) under `torch.compile` (inductor, C++ on CPU); the first
                   step pays the compile.

Batch norm matches metajax: MAML normalises every pass with its own batch statistics and keeps
no running averages (metajax's 'transductive' mode); ProtoNet uses batch statistics in
training and tracks running averages (momentum 0.1 = Flax's 0.9) for evaluation.
CPU build, oneDNN; PyTorch's threading is left as it is.

The loop form and learn2learn give the same outer gradient (to float64 rounding), and the loop
form's matches central differences of the outer loss (checked with tanh and average pooling,
which have no kinks). With batch norm, the vmap form's second-order gradient differs from
theirs by about 1-2% on conv4-8 (0.2% on the smooth variant; first order, or without batch
norm, all agree): vmap is timed as a form users run, not as a reference.

`make(kind, form, **shape)` returns `(step, batch)`: `step(batch)` runs one meta-step
(forward, backward, Adam update) and returns the loss as a float.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

FORMS = {"maml": ("loop", "vmap"), "sinusoid": ("loop", "vmap"),
         "protonet": ("eager", "channels_last", "compile")}


def conv4(num_outputs: int | None, filters: int = 64, in_channels: int = 1,
          running_stats: bool = False) -> nn.Module:
  """4 x [3x3 conv, batch norm, ReLU, 2x2 max-pool] (+ linear head); NCHW.

  running_stats: track running BN averages (ProtoNet); False = batch statistics only, as
  metajax's transductive MAML (and as `vmap` requires: it cannot update buffers in place).
  """
  layers, c = [], in_channels
  for _ in range(4):
    layers += [nn.Conv2d(c, filters, 3, padding=1),
               nn.BatchNorm2d(filters, eps=1e-5, momentum=0.1, track_running_stats=running_stats),
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


def conv4_batch(ways=5, shots=1, queries=15, meta_batch=32, seed=0):
  """(support_x [B, N*K, 1, 28, 28], support_y [B, N*K], query_x, query_y): random images
  (speed does not depend on pixel values), labels 0..N-1 in blocks."""
  rng = np.random.default_rng(seed)
  label = lambda k: torch.arange(ways).repeat_interleave(k).repeat(meta_batch, 1)
  return (_images(rng, meta_batch, ways * shots), label(shots),
          _images(rng, meta_batch, ways * queries), label(queries))


def sinusoid_batch(meta_batch=25, shots=10, queries=10, seed=0):
  """Sinusoid tasks (Finn et al. 2017): amplitude U(0.1, 5), phase U(0, pi), x U(-5, 5);
  (support_x, support_y, query_x, query_y), each [B, n, 1]."""
  rng = np.random.default_rng(seed)
  amp = rng.uniform(0.1, 5.0, (meta_batch, 1, 1))
  phase = rng.uniform(0, np.pi, (meta_batch, 1, 1))
  x = rng.uniform(-5, 5, (meta_batch, shots + queries, 1))
  y = amp * np.sin(x - phase)
  t = lambda a: torch.from_numpy(a.astype(np.float32))
  return t(x[:, :shots]), t(y[:, :shots]), t(x[:, shots:]), t(y[:, shots:])


def make_maml(net: nn.Module, loss_fn, inner_steps: int, inner_lr: float, first_order: bool,
              form: str = "loop", lr: float = 1e-3):
  """A MAML meta-step over `batch` = (support_x, support_y, query_x, query_y), tasks first."""
  if form not in FORMS["maml"]:
    raise ValueError(f"MAML form {form!r}: expected one of {FORMS['maml']}")
  params = dict(net.named_parameters())
  buffers = dict(net.named_buffers())
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
    if form == "vmap":
      loss = vmap(task_loss)(*b).mean()
    else:
      n = b[0].shape[0]
      loss = sum(task_loss(*(t[i] for t in b)) for i in range(n)) / n
    loss.backward()
    opt.step()
    return float(loss.detach())

  return step


def make_conv4_maml(form="loop", ways=5, shots=1, queries=15, meta_batch=32, inner_steps=1,
                    first_order=False, filters=64, inner_lr=0.4, seed=0):
  """conv4 MAML N-way K-shot on random 28x28x1 images."""
  torch.manual_seed(seed)
  batch = conv4_batch(ways, shots, queries, meta_batch, seed)
  step = make_maml(conv4(ways, filters), F.cross_entropy, inner_steps, inner_lr, first_order, form)
  return step, batch


def make_sinusoid_maml(form="vmap", meta_batch=25, shots=10, queries=10, inner_steps=1,
                       first_order=False, inner_lr=0.01, seed=0):
  """MAML sinusoid regression (Finn et al. 2017): MLP 40-40, inner SGD lr 0.01, Adam 1e-3."""
  torch.manual_seed(seed)
  batch = sinusoid_batch(meta_batch, shots, queries, seed)
  step = make_maml(mlp(), F.mse_loss, inner_steps, inner_lr, first_order, form)
  return step, batch


def make_protonet(form="eager", ways=5, shots=5, queries=15, filters=64, seed=0, lr=1e-3):
  """ProtoNet episode step: embed support and query in one pass, squared-Euclidean logits, CE."""
  if form not in FORMS["protonet"]:
    raise ValueError(f"ProtoNet form {form!r}: expected one of {FORMS['protonet']}")
  torch.manual_seed(seed)
  net = conv4(None, filters, running_stats=True).train()
  sx, sy, qx, qy = (t[0] for t in conv4_batch(ways, shots, queries, 1, seed))
  if form == "channels_last":
    net = net.to(memory_format=torch.channels_last)
    sx, qx = (x.contiguous(memory_format=torch.channels_last) for x in (sx, qx))
  opt = torch.optim.Adam(net.parameters(), lr=lr)

  def loss_fn(sx, sy, qx, qy):
    z = net(torch.cat([sx, qx]))
    zs, zq = z[: sx.shape[0]], z[sx.shape[0]:]
    protos = torch.zeros(ways, z.shape[1]).index_add_(0, sy, zs) / shots
    return F.cross_entropy(-torch.cdist(zq, protos).pow(2), qy)

  loss_fn = torch.compile(loss_fn) if form == "compile" else loss_fn

  def step(b):
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(*b)
    loss.backward()
    opt.step()
    return float(loss.detach())

  return step, (sx, sy, qx, qy)


def make(kind: str, form: str, **shape):
  """`(step, batch)` of a bench row: kind 'maml' (conv4), 'sinusoid' or 'protonet'."""
  if kind == "maml":
    return make_conv4_maml(form, **shape)
  if kind == "sinusoid":
    return make_sinusoid_maml(form, **shape)
  if kind == "protonet":
    return make_protonet(form, **shape)
  raise ValueError(f"kind {kind!r}: expected maml, sinusoid or protonet")
