"""Hyperparameter meta-learning experiment: `run(config, workdir)` (configs/hp_metalearn.py).

Sections: validation -> data (pools per family, split by dataset) -> learners (one per
estimator x family) -> workdir -> mesh and shardings -> state (init or resume) -> loop
(tasks, meta-steps, log, meta-validate, checkpoint) -> learned_rates.json -> zero-shot
transfer to the meta-test datasets -> results.json and report.md.
"""

from __future__ import annotations

import functools
import json
import os
import time

import jax
import numpy as np

from metajax import checkpoint, optim, parallel, runlog
from metajax.errors import ConfigError
from metajax.experiments import hp_metalearn_report
from metajax.hpo import learned, meta, spec, tasks as tasks_lib, transfer
from metajax.hpo.inner import Problem


# ---------------------------------------------------------------- data

def load_pools(config, family: spec.FamilySpec, names, notes: list[str]) -> list[tasks_lib.Pool]:
  """The pools of `names` for `family`; a dataset not on this machine (optional package or
  prepared tfds directory missing) is skipped with a note when `data.skip_missing`."""
  d, pools = config.data, []
  max_rows = config.families[family.name].get("max_rows", d.max_rows)
  for name in names:
    try:
      pools.append(tasks_lib.load_pool(name, family, d.data_dir, max_rows, d.max_classes,
                                       config.seed))
    except tasks_lib.MissingData as e:
      if not d.skip_missing:
        raise
      notes.append(f"{family.name}: skipped {name} ({e.value} {e.why}; {e.valid})")
  return pools


def task_shape(config) -> tasks_lib.TaskShape:
  t = config.tasks
  return tasks_lib.TaskShape(int(t.min_classes), float(t.min_row_frac),
                             float(t.min_feature_frac))


# ---------------------------------------------------------------- programs

# Cached by the hashable static specs, so a second run in one process (a notebook, the
# tests, a resumed run) reuses the compiled programs.
@functools.lru_cache(maxsize=32)
def programs(fam: spec.FamilySpec, inner: spec.InnerSpec, mspec: spec.MetaSpec, optimizer: tuple,
             steps: int, mesh):
  """(learner, state sharding, jitted meta_step) of one family and estimator."""
  lrn = meta.MetaLearner(fam, inner, mspec, optim.make_optimizer(dict(optimizer), steps))
  sh = meta.shardings(jax.eval_shape(lrn.init, jax.random.key(0)), mesh)
  shard, repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  step = jax.jit(lrn.meta_step, in_shardings=(sh, shard, repl), out_shardings=(sh, repl),
                 donate_argnums=0)
  return lrn, sh, step


@functools.lru_cache(maxsize=16)
def evaluator(fam: spec.FamilySpec, inner: spec.InnerSpec, windows: int, mesh):
  """Jitted meta-validation (`meta.evaluate`) of one family, tasks split over the mesh."""
  repl = parallel.replicated(mesh)
  fn = functools.partial(meta.evaluate, Problem(fam, inner), windows)
  return jax.jit(fn, in_shardings=(repl, parallel.batch_sharding(mesh), repl),
                 out_shardings=repl)


# ---------------------------------------------------------------- main

def run(config, workdir: str) -> dict:
  """Meta-learns per-layer rates for every `run_families` x `meta.estimators`, transfers
  them zero-shot to the meta-test datasets and writes the report; returns
  {'report', 'results', 'learned_rates'}."""
  t_start = time.time()
  spec.check(config)
  runlog.check_workdir(workdir)
  inner = spec.inner_spec(config)
  estimators = tuple(config.meta.estimators)
  windows = config.inner.steps // config.meta.unroll

  # Data: meta-train pools (tasks) and meta-test pools (transfer), split by dataset.
  notes: list[str] = []
  fams, dists, val_tasks, test_pools = {}, {}, {}, {}
  for name in config.run_families:
    fam = spec.family_spec(config, name)
    pools = load_pools(config, fam, fam.train_datasets, notes)
    if not pools:
      raise ConfigError(f"families.{name}.train_datasets", fam.train_datasets,
                        "none of them could be loaded (see the notes above)",
                        "datasets readable offline, or pip install -e .[data]")
    fams[name] = fam
    dists[name] = tasks_lib.TaskDistribution(fam, pools, task_shape(config), config.seed)
    val_tasks[name] = dists[name].fixed(config.eval.tasks)
    test_pools[name] = load_pools(config, fam, fam.test_datasets, notes)
  for n in notes:
    print(f"metajax: {n}")

  # Learners and their jitted programs, one per (estimator, family); the task axis is split
  # over the mesh's `data` axis. Models are checked against the task shapes here.
  mesh = parallel.make_mesh()
  opt = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                     for k, v in config.optimizer.to_dict().items()))
  learners, steps_fn, eval_fn, shards = {}, {}, {}, {}
  for est in estimators:
    for name, fam in fams.items():
      key = f"{est}/{name}"
      try:
        learners[est, name], shards[key], steps_fn[key] = programs(
            fam, inner, spec.meta_spec(config, est), opt, config.train.steps, mesh)
        eval_fn[name] = evaluator(fam, inner, windows, mesh)  # shared by the estimators
      except ConfigError:
        raise
      except Exception as e:
        raise ConfigError(f"families.{name}.model", dict(fam.model), "it cannot take inputs "
                          f"of shape {fam.input_shape}: {type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]}", "a model for this input") from None

  # Workdir: a new run, or the same config resumed.
  runlog.prepare_workdir(workdir, config)
  k_init, k_train, k_val = jax.random.split(jax.random.key(config.seed), 3)
  state = {key: jax.device_put(learners[key.split("/")[0], key.split("/")[1]].init(
               jax.random.fold_in(k_init, i)), shards[key]) for i, key in enumerate(steps_fn)}

  # Best so far per learner: the rates of the meta-validation with the lowest objective
  # (host copies: the meta-step donates the state's buffers). Checkpointed with the state.
  best = {key: {"objective": np.asarray(np.inf, np.float32), "step": np.asarray(0, np.int32),
                "hparams": jax.tree.map(np.asarray, jax.device_get(state[key].hparams))}
          for key in steps_fn}

  # State: fresh, or the latest checkpoint.
  mngr, ckpt, start = checkpoint.resume(workdir, {"learners": state, "best": best},
                                        "hp_metalearn")
  state, best = ckpt["learners"], jax.tree.map(np.asarray, jax.device_get(ckpt["best"]))
  writer = runlog.MetricWriter(workdir, resume_step=start)

  def validate(step: int) -> None:
    row = {}
    for key in steps_fn:
      name = key.split("/")[1]
      hp = state[key].hparams
      m = jax.device_get(eval_fn[name](hp, parallel.shard_batch(val_tasks[name], mesh), k_val))
      row.update({f"{key}/{k}": float(v) for k, v in m.items()})
      if m["objective"] < best[key]["objective"]:  # ties keep the earlier rates
        best[key] = {"objective": np.asarray(m["objective"], np.float32),
                     "step": np.asarray(step, np.int32),
                     "hparams": jax.tree.map(np.asarray, jax.device_get(hp))}
    writer.write(step, row)

  # Loop: the same tasks for every estimator at a step; keys fold in (step, learner).
  steps, t = config.train.steps, config.train
  if start == 0:
    validate(0)
  bar = runlog.progress(steps, start, desc=f"hp_metalearn {'+'.join(fams)}")
  pending: list[dict] = []
  t_loop = time.time()
  for step in range(start, steps):
    metrics = {}
    batches = {name: dists[name].batch(step, config.meta.tasks, windows)[:2] for name in fams}
    for i, key in enumerate(steps_fn):
      name = key.split("/")[1]
      batch = parallel.shard_batch(batches[name], mesh)
      state[key], m = steps_fn[key](state[key], batch,
                                    jax.random.fold_in(jax.random.fold_in(k_train, step), i))
      metrics.update({f"{key}/{k}": v for k, v in m.items()})
    pending.append(metrics)
    done = step + 1
    if done % t.log_every == 0 or done == steps:
      rows = jax.device_get(pending)
      means = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
      runlog.check_finite(done, {k: v for k, v in means.items() if k.endswith("meta_loss")})
      means["meta_steps_per_s"] = len(pending) / max(time.time() - t_loop, 1e-9)
      writer.write(done, means)
      bar.set_postfix({k: f"{v:.3g}" for k, v in means.items() if k.endswith("meta_loss")})
      pending, t_loop = [], time.time()
    if done % config.eval.every == 0 or done == steps:
      validate(done)
    if done % t.checkpoint_every == 0 or done == steps:
      checkpoint.save(mngr, done, {"learners": state, "best": best})
    bar.update(1)
  bar.close()
  mngr.wait_until_finished()
  mngr.close()
  writer.close()
  train_s = time.time() - t_start

  # Learned rates: one file, every estimator; the first is the one others load by default.
  # eval.select 'best': the rates of the lowest meta-validation objective; 'last': the final.
  chosen = {key: (best[key]["hparams"], int(best[key]["step"])) if config.eval.select == "best"
            else (jax.device_get(state[key].hparams), steps) for key in steps_fn}
  rates = {est: {name: learned.rates_of(learners[est, name].problem, chosen[f"{est}/{name}"][0],
                                        fams[name], inner)
                 for name in fams} for est in estimators}
  rates_path = None
  if parallel.is_main_process():
    rates_path = learned.save_learned_rates(workdir, rates, estimators[0])

  # Zero-shot transfer to every meta-test dataset (never seen in meta-training).
  results = {}
  t0 = time.time()
  for name, pools in test_pools.items():
    hps = {est: rates[est][name].hparams() for est in estimators}
    for pool in pools:
      results[f"{name}/{pool.name}"] = transfer.evaluate_dataset(
          fams[name], inner, pool, hps, config.transfer.random_runs,
          tuple(config.transfer.random_log_lr), config.transfer.seeds, config.seed)
  transfer_s = time.time() - t0

  summary = {"notes": notes, "transfer": results, "train_seconds": train_s,
             "selected_step": {key: step for key, (_, step) in chosen.items()},
             "transfer_seconds": transfer_s, "steps": steps, "devices": jax.device_count(),
             "families": {n: {"train": [p.name for p in d.pools],
                              "test": [p.name for p in test_pools[n]]}
                          for n, d in dists.items()}}
  path = None
  if parallel.is_main_process():
    runlog.atomic_write(os.path.join(workdir, "results.json"), json.dumps(summary, indent=2))
    path = hp_metalearn_report.write_report(config, workdir, rates, summary)
  return {"report": path, "results": results, "learned_rates": rates_path}
