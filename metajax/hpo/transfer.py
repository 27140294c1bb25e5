"""Zero-shot transfer: learned per-layer rates on a held-out dataset, one run, no search.

On each seed's stratified train / val / test split of the dataset, every candidate trains
once from the same initialisation (one vmapped, jitted program per dataset):

  default        the config's single learning rate (inner.default_lr) for every layer
  zero-shot E    the rates meta-learned by estimator E
  random i       one global log learning rate ~ U(random_log_lr), i < random_runs

Random search at 1x compute is the first random run; at Rx (R = random_runs, default 8) the
random run with the best validation accuracy. Reported: test accuracy, mean and 95% CI
over seeds.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from metajax import report
from metajax.hpo.inner import Problem, init_hparams
from metajax.hpo.spec import FamilySpec, InnerSpec
from metajax.hpo.tasks import Pool, Tasks, split_rows


def candidates(num_layers: int, inner: InnerSpec, learned: dict[str, dict], random_runs: int,
               log_lr_range: tuple, seed: int) -> tuple[list[str], dict]:
  """(names, stacked hparams [C, ...]) of every candidate; random LRs are a function of seed."""
  rng = np.random.default_rng([seed, 13])
  names, hps = ["default"], [init_hparams(num_layers, inner)]
  for est, hp in learned.items():
    names.append(f"zero-shot {est}")
    hps.append({k: jnp.asarray(v, jnp.float32) for k, v in hp.items()})
  for i, lr in enumerate(rng.uniform(*log_lr_range, size=random_runs)):
    names.append(f"random {i}")
    hps.append(init_hparams(num_layers, inner, float(lr)))
  return names, jax.tree.map(lambda *x: jnp.stack(x), *hps)


def _task(pool: Pool, rows: np.ndarray, family: FamilySpec) -> tuple[np.ndarray, np.ndarray]:
  x = pool.x[rows]
  if family.kind == "flat":
    x = x.astype(np.float32)
  return x, pool.y[rows].astype(np.int32)


def evaluate_dataset(family: FamilySpec, inner: InnerSpec, pool: Pool, learned: dict[str, dict],
                     random_runs: int, log_lr_range: tuple, seeds: int, seed: int = 0) -> dict:
  """Every candidate on `pool` over `seeds` splits: {'runs': {name: {metric: [per seed]}},
  'summary': {method: {'test_accuracy': (mean, ci95), ...}}}."""
  num_outputs = max(family.max_classes, pool.num_classes)
  shape = pool.x.shape[1:] if family.kind == "flat" else family.input_shape
  problem, program = _program(family, inner, num_outputs, tuple(shape))
  runs: dict[str, dict[str, list]] = {}
  for s in range(seeds):
    tr, va, te = split_rows(pool, seed + s)
    (xtr, ytr), (xva, yva), (xte, yte) = (_task(pool, r, family) for r in (tr, va, te))
    n_cls = np.int32(pool.num_classes)
    task = Tasks(xtr, ytr, np.int32(len(ytr)), xva, yva, np.int32(len(yva)), n_cls)
    names, hps = candidates(len(problem.names), inner, learned, random_runs, log_lr_range,
                            seed + s)
    out = jax.device_get(program(hps, task, xte, yte, jax.random.key(seed + s)))
    for i, name in enumerate(names):
      for k, v in out.items():
        runs.setdefault(name, {}).setdefault(k, []).append(float(v[i]))
  return {"runs": runs, "summary": summarise(runs, random_runs)}


@functools.lru_cache(maxsize=32)
def _program(family: FamilySpec, inner: InnerSpec, num_outputs: int, shape: tuple):
  """(Problem, jitted run of every candidate [C] on one split), cached by the static specs."""
  problem = Problem(family, inner, num_outputs, shape)

  def one(hp, task, xte, yte, key):
    state, vl, va, _ = problem.run(hp, task, key)
    tl, ta = problem.metrics(state.params, xte, yte, yte.shape[0], task.n_classes)
    return {"val_loss": vl, "val_accuracy": va, "test_loss": tl, "test_accuracy": ta}

  return problem, jax.jit(jax.vmap(one, (0, None, None, None, None)))


def summarise(runs: dict, random_runs: int) -> dict:
  """Per method, test accuracy (mean, ci95) over seeds; random search picks by validation."""
  out = {}
  for name, r in runs.items():
    if not name.startswith("random"):
      out[name] = {"test_accuracy": report.mean_ci95(r["test_accuracy"]),
                   "val_accuracy": report.mean_ci95(r["val_accuracy"])}
  rnd = [runs[f"random {i}"] for i in range(random_runs)]
  seeds = len(rnd[0]["test_accuracy"])
  for label, n in (("random search 1x", 1), (f"random search {random_runs}x", random_runs)):
    test, val = [], []
    for s in range(seeds):
      best = max(range(n), key=lambda i: rnd[i]["val_accuracy"][s])
      test.append(rnd[best]["test_accuracy"][s])
      val.append(rnd[best]["val_accuracy"][s])
    out[label] = {"test_accuracy": report.mean_ci95(test), "val_accuracy": report.mean_ci95(val)}
  return out
