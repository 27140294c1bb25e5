"""learn2learn's `MAML` as a peer of bench/meta_step.py (conv4 and sinusoid rows).

The form of learn2learn's own MAML-Omniglot example: per task `maml.clone()`, `adapt` on the
support loss (`torch.autograd.grad`, `create_graph` unless first order), query loss, and
`backward` per task (so one task's graph is alive at a time); gradients averaged over the
meta-batch, one Adam step. Same conv4 / MLP, batches and hyperparameters as
bench/torch_peer.py.

learn2learn 0.2.0 is an sdist that does not build on Python 3.11 as published, and it wants
torchvision; it runs from a venv of its own (.venv-l2l at the repository root, found by
bench/meta_step.py):

  python3.11 -m venv .venv-l2l && printf '*\\n' > .venv-l2l/.gitignore
  .venv-l2l/bin/pip install torch==2.13.0 torchvision==0.28.0 "numpy<2" cython
  .venv-l2l/bin/pip download --no-deps --no-binary :all: learn2learn==0.2.0
  tar xzf learn2learn-0.2.0.tar.gz
  cd learn2learn-0.2.0 && ../.venv-l2l/bin/cythonize -3 learn2learn/data/*.pyx
  ../.venv-l2l/bin/pip install --no-build-isolation . torch==2.13.0 torchvision==0.28.0 "numpy<2"

The torchvision 0.28.0 wheel on this machine's index is a CUDA build (its `_C.so` needs
libc10_cuda.so), so `import torchvision`, and with it `import learn2learn` (its __init__
imports learn2learn.vision), fails beside the CPU torch. `load_maml` then imports
learn2learn's `algorithms/maml.py` (which needs torch only) without running the package's
__init__; the measured code is learn2learn's own.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_peer as tp  # noqa: E402


def load_maml():
  """(learn2learn.algorithms.MAML, version, how it was imported)."""
  try:
    import learn2learn as l2l
    return l2l.algorithms.MAML, l2l.__version__, "import learn2learn"
  except Exception as e:  # noqa: BLE001 - any import failure: try the algorithms module alone
    error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    for name in [m for m in sys.modules if m == "learn2learn" or m.startswith("learn2learn.")]:
      del sys.modules[name]
  spec = importlib.util.find_spec("learn2learn")
  if spec is None:
    raise ImportError("learn2learn is not installed in this interpreter")
  root = spec.submodule_search_locations[0]
  packages = (("learn2learn", root), ("learn2learn.algorithms", os.path.join(root, "algorithms")))
  for name, path in packages:
    pkg = types.ModuleType(name)
    pkg.__path__ = [path]
    sys.modules[name] = pkg
  from learn2learn._version import __version__
  from learn2learn.algorithms.maml import MAML
  return MAML, __version__, f"learn2learn.algorithms.maml alone (import learn2learn: {error})"


def make_maml(net, loss_fn, inner_steps: int, inner_lr: float, first_order: bool, lr: float = 1e-3):
  """A learn2learn MAML meta-step over `batch` = (support_x, support_y, query_x, query_y)."""
  MAML, _, _ = load_maml()
  maml = MAML(net, lr=inner_lr, first_order=first_order)
  opt = torch.optim.Adam(maml.parameters(), lr=lr)

  def step(b):
    opt.zero_grad(set_to_none=True)
    n, total = b[0].shape[0], 0.0
    for i in range(n):
      sx, sy, qx, qy = (t[i] for t in b)
      learner = maml.clone()
      for _ in range(inner_steps):
        learner.adapt(loss_fn(learner(sx), sy))
      loss = loss_fn(learner(qx), qy) / n
      loss.backward()
      total += float(loss.detach())
    opt.step()
    return total

  return step


def make(kind: str, ways=5, shots=1, queries=15, meta_batch=32, inner_steps=1, first_order=False,
         filters=64, seed=0):
  """`(step, batch)` of a bench row: kind 'maml' (conv4) or 'sinusoid'."""
  torch.manual_seed(seed)
  if kind == "maml":
    batch = tp.conv4_batch(ways, shots, queries, meta_batch, seed)
    return make_maml(tp.conv4(ways, filters), F.cross_entropy, inner_steps, 0.4, first_order), batch
  if kind == "sinusoid":
    batch = tp.sinusoid_batch(meta_batch, seed=seed)
    return make_maml(tp.mlp(), F.mse_loss, inner_steps, 0.01, first_order), batch
  raise ValueError(f"learn2learn peer: kind {kind!r} has no MAML form (maml or sinusoid)")
