"""Few-shot meta-learning experiment: `run(config, workdir)`.

Sections, as in big_vision's trainer: validation -> data -> learner -> workdir -> mesh and
shardings -> state (init or resume) -> loop (sample, step, log, validate, checkpoint) ->
meta-test -> report and model.json. Every config value is checked before any compilation,
and nothing is written to the workdir before the config passed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import jax
import numpy as np

from metajax import checkpoint, data, models, optim, parallel, runlog, saved
from metajax.data.base import ClassImages
from metajax.data.episodes import EpisodeSpec, sample_tasks
from metajax.data.sinusoid import Sinusoid
from metajax.errors import ConfigError, require_positive
from metajax.experiments import fewshot_report
from metajax.meta import ALGORITHMS
from metajax.meta.batching import check_chunk, resolve_chunk
from metajax.meta.evaluate import evaluate, sampler, summarise, task_kind


@dataclasses.dataclass(frozen=True)
class EvalSetting:
  """One meta-test protocol: tasks of `spec` from `dataset`'s `split`."""
  dataset: str
  split: str
  spec: EpisodeSpec

  @property
  def name(self) -> str:
    s = self.spec
    return f"{self.dataset}/{self.split} {s.ways}-way {s.shots}-shot"


def _renamed(keys: dict[str, str], fn, *args):
  """fn(*args), a ConfigError's key renamed by `keys` (library names -> config keys)."""
  try:
    return fn(*args)
  except ConfigError as e:
    raise ConfigError(keys.get(e.key, e.key), e.value, e.why, e.valid) from None


# ---------------------------------------------------------------- validation

def check_config(config) -> None:
  """Cheap checks of names and sizes; raises ConfigError naming key, value and what is valid."""
  named = [("data.name", config.data.name)] + [("eval.datasets", n) for n in config.eval.datasets]
  for key, name in named:
    data.check_name(name, key)
  models.MODELS.get(config.model.name)
  ALGORITHMS.get(config.learner.name)
  optim.check(config.optimizer)
  require_positive(config, "episodes.ways", "episodes.shots", "episodes.queries", "train.steps",
                   "train.meta_batch", "train.log_every", "train.checkpoint_every",
                   "eval.queries", "eval.episodes", "eval.batch")
  require_positive(config, "eval.val_every", "eval.val_episodes", allow_zero=True)
  for key in ("ways", "shots"):
    values = tuple(config.eval[key])
    if not values or any(not isinstance(v, int) or v <= 0 for v in values):
      raise ConfigError(f"eval.{key}", values, "needs positive whole sizes", "e.g. (5, 20)")
  t = config.train
  if t.checkpoint_every % t.log_every:
    raise ConfigError("train.checkpoint_every", t.checkpoint_every,
                      f"a resumed run logs the same averages only if checkpoints fall on log "
                      f"steps (log_every={t.log_every})", f"a multiple of {t.log_every}")
  for key, value in (("train.meta_batch", t.meta_batch), ("eval.batch", config.eval.batch)):
    parallel.check_divides(key, value, what="tasks")
  if config.learner.get("task_batching") == "scan":
    check_chunk(resolve_chunk(config.learner.get("task_chunk", 1)), t.meta_batch)


def train_spec(config) -> EpisodeSpec:
  e = config.episodes
  return EpisodeSpec(e.ways, e.shots, e.queries, config.train.meta_batch, bool(e.rotations))


# EpisodeSpec's names -> the config keys they come from, for training and evaluation tasks.
TRAIN_KEYS = {"ways": "episodes.ways", "shots": "episodes.shots", "queries": "episodes.queries",
              "rotations": "episodes.rotations", "batch": "train.meta_batch"}
EVAL_KEYS = {k: f"eval.{k}" for k in ("ways", "shots", "queries", "batch")}


def eval_settings(config, datasets: dict, learner) -> tuple[list[EvalSetting], list[str]]:
  """Every eval dataset x ways x shots, checked against the splits and the learner's head.
  A ways count a test split lacks classes for (20-way on the 10 digits) is skipped and
  reported; a dataset left with no setting is a ConfigError."""
  settings, skipped = [], []
  image_shape = getattr(datasets[config.data.name], "image_shape", None)
  for name in config.eval.datasets:
    ds = datasets[name]
    if isinstance(ds, Sinusoid):
      settings += [EvalSetting(name, "test", EpisodeSpec(1, k, config.eval.queries,
                                                          config.eval.batch))
                   for k in config.eval.shots]
      continue
    if "test" not in ds.splits:
      raise ConfigError("eval.datasets", name, "it has no 'test' split (splits: "
                        f"{list(ds.splits)})", "a dataset with a meta-test split")
    if ds.image_shape != image_shape:
      raise ConfigError("eval.datasets", name, f"its images are {ds.image_shape}, the model "
                        f"trains on {image_shape}", f"datasets of {image_shape} images")
    classes = ds.splits["test"].shape[0]
    usable = [w for w in config.eval.ways if w <= classes]
    if not usable:
      raise ConfigError("eval.ways", tuple(config.eval.ways), f"{name} has only {classes} test "
                        "classes", f"ways <= {classes}")
    skipped += [f"{name} {w}-way (only {classes} classes)" for w in config.eval.ways if w > classes]
    fixed = learner.num_ways
    if fixed is not None and any(w != fixed for w in usable):
      raise ConfigError("eval.ways", tuple(config.eval.ways),
                        f"{config.learner.name}'s head is fixed to {fixed} ways", f"({fixed},)")
    for w in usable:
      for k in config.eval.shots:
        s = EvalSetting(name, "test", EpisodeSpec(w, k, config.eval.queries, config.eval.batch))
        _renamed(EVAL_KEYS, s.spec.validate, ds.splits["test"].shape, f"{name} test")
        settings.append(s)
  return settings, skipped


def example_tasks(config, train_ds):
  """The abstract shapes of one training meta-batch (traced, nothing drawn)."""
  spec, key = train_spec(config), jax.random.key(0)
  if isinstance(train_ds, Sinusoid):
    return jax.eval_shape(lambda k: train_ds.sample(k, spec), key)
  if "train" not in train_ds.splits:
    raise ConfigError("data.name", config.data.name, "it has no 'train' split (meta-test only?)",
                      "glyphs, omniglot, or a tfds dataset with a train split")
  split = train_ds.splits["train"]
  _renamed(TRAIN_KEYS, spec.validate, split.shape, f"{config.data.name} train")
  images = jax.ShapeDtypeStruct(split.shape, split.dtype)
  return jax.eval_shape(lambda k, x: sample_tasks(k, x, spec), key, images)


def check_model(config, learner, tasks) -> None:
  """The model against the data, by tracing `learner.init` only."""
  try:
    jax.eval_shape(learner.init, jax.random.key(0), tasks)
  except ConfigError:
    raise
  except Exception as e:  # a shape the model cannot take
    raise ConfigError("model.name", config.model.name, f"it cannot take {config.data.name} "
                      f"inputs of shape {tasks.support_x.shape[2:]}: {type(e).__name__}: "
                      f"{str(e).splitlines()[0]}", "a model for this input shape") from None


# ---------------------------------------------------------------- meta-test and resume

RESULTS_FILE = "results.json"


def meta_test(config, settings, datasets, eval_step, state, shard, on_device, key):
  """Every eval setting from the same key schedule (a resumed run reports the same), with a
  progress bar over all batches and one line per setting: (results, adaptation curves)."""
  e = config.eval
  batches = math.ceil(e.episodes / e.batch)
  bar = runlog.progress(len(settings) * batches, desc="meta-test")
  results, curves = {}, {}
  for i, s in enumerate(settings):
    sample = sampler(datasets[s.dataset], s.split, s.spec, shard, on_device)
    t0 = time.time()
    per_episode = evaluate(eval_step, state, sample, e.episodes, e.batch,
                           jax.random.fold_in(key, i), on_batch=lambda: bar.update(1))
    results[s.name], by_step = summarise(per_episode)
    results[s.name]["eval_seconds"] = (time.time() - t0, None)
    curves.update({f"{s.name} {k}": v for k, v in by_step.items()})
    runlog.say(f"meta-test {s.name}: " + ", ".join(
        f"{k} {m:.4f} ± {c:.4f}" for k, (m, c) in results[s.name].items() if k != "eval_seconds"))
  bar.close()
  return results, curves


# ---------------------------------------------------------------- main

def run(config, workdir: str) -> dict:
  """Meta-trains `config.learner` on `config.data`, meta-tests on `config.eval`, and writes
  metrics, checkpoints, report.md, results.json and model.json to `workdir`.

  Returns {'report': path, 'results': {setting: {metric: (mean, ci95)}}, 'curves': ...}.
  """
  t_start = time.time()
  check_config(config)
  runlog.check_workdir(workdir)

  # Data: the training set and every meta-test set, loaded once.
  names = [config.data.name] + [n for n in config.eval.datasets if n != config.data.name]
  datasets = {n: data.load(n, config.data.data_dir) for n in names}
  train_ds = datasets[config.data.name]
  task = task_kind(train_ds)

  # Learner: the model from its sub-config, the outer optimizer from its own.
  optimizer = optim.make_optimizer(config.optimizer, config.train.steps)
  learner = ALGORITHMS.get(config.learner.name)(
      config.learner, lambda n: models.from_config(config.model, num_outputs=n), optimizer,
      config.episodes.ways, task)
  settings, skipped = eval_settings(config, datasets, learner)
  tasks = example_tasks(config, train_ds)
  check_model(config, learner, tasks)

  # Workdir: a new run, or the same config resumed (more train.steps, other eval.* allowed).
  runlog.prepare_workdir(workdir, config)

  # Mesh and shardings: tasks split over `data`; the state replicated.
  mesh = parallel.make_mesh()
  shard, repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  train_step = jax.jit(learner.train_step, in_shardings=(repl, shard, repl),
                       out_shardings=(repl, repl), donate_argnums=0)
  eval_step = jax.jit(learner.eval_step, in_shardings=(repl, shard, repl), out_shardings=repl)
  on_device: dict = {}
  sample_train = sampler(train_ds, "train", train_spec(config), shard, on_device)

  # State: fresh, or the latest checkpoint in the workdir.
  k_init, k_train, k_val, k_test = jax.random.split(jax.random.key(config.seed), 4)
  state = jax.jit(learner.init, out_shardings=repl)(k_init, sample_train(k_init))
  mngr, state, start = checkpoint.resume(workdir, state, "few-shot")
  kept = runlog.finished_results(workdir, config, RESULTS_FILE) if start >= config.train.steps else None
  if kept is not None:  # nothing to train or evaluate: no new metrics, events or meta-test
    mngr.close()
    runlog.say(f"metajax: {workdir} finished at step {start}; meta-test results kept from "
               f"{RESULTS_FILE} (more train.steps or other eval.* settings rerun it)")
    report = (fewshot_report.write_report(config, workdir, learner, state, kept)
              if parallel.is_main_process() else None)
    return {"report": report, "results": kept["results"], "curves": kept["curves"]}
  writer = runlog.MetricWriter(workdir, resume_step=start)

  val, val_desc, e = None, "none", config.eval
  if e.val_every and (isinstance(train_ds, Sinusoid) or "val" in train_ds.splits):
    ways = 1 if isinstance(train_ds, Sinusoid) else (learner.num_ways or settings[0].spec.ways)
    vspec = EpisodeSpec(ways, e.shots[0], e.queries, e.batch)
    if isinstance(train_ds, ClassImages):
      _renamed(EVAL_KEYS, vspec.validate, train_ds.splits["val"].shape, f"{config.data.name} val")
    val = sampler(train_ds, "val", vspec, shard, on_device)
    val_short = f"{ways}-way {e.shots[0]}-shot, {e.val_episodes} episodes"
    val_desc = f"{ways}-way {e.shots[0]}-shot tasks of the val split, {e.val_episodes} episodes"

  # Loop: sample, step, log, validate, checkpoint.
  steps = config.train.steps
  bar = runlog.progress(steps, start, desc=f"{config.learner.name} {config.data.name}")
  pending: list[dict] = []
  t_loop = time.time()
  for step in range(start, steps):
    k_tasks, k_step = jax.random.split(jax.random.fold_in(k_train, step))
    state, metrics = train_step(state, sample_train(k_tasks), k_step)
    pending.append(metrics)
    done = step + 1
    if done % config.train.log_every == 0 or done == steps:
      means = {f"train/{k}": float(np.mean([m[k] for m in jax.device_get(pending)]))
               for k in pending[0]}
      runlog.check_finite(done, means)
      means["train/steps_per_s"] = len(pending) / max(time.time() - t_loop, 1e-9)
      writer.write(done, means)
      bar.set_postfix({k.split("/")[1]: f"{v:.3g}" for k, v in means.items() if "steps" not in k})
      pending, t_loop = [], time.time()
    if val is not None and (done % e.val_every == 0 or done == steps):
      vm = evaluate(eval_step, state, val, e.val_episodes, e.batch, k_val)
      vrow = {f"val/{k}": float(v.mean()) for k, v in vm.items() if v.ndim == 1}
      writer.write(done, vrow)
      runlog.say(f"step {done}: validation ({val_short}) " +
                 ", ".join(f"{k[4:]} {v:.4f}" for k, v in vrow.items()))
    if done % config.train.checkpoint_every == 0 or done == steps:
      checkpoint.save(mngr, done, state)
    bar.update(1)
  bar.close()
  mngr.wait_until_finished()
  mngr.close()
  train_time = time.time() - t_start

  # Meta-test: every setting, the same key schedule whether resumed or not.
  results, curves = meta_test(config, settings, datasets, eval_step, state, shard, on_device,
                              k_test)
  writer.close()

  # Report and model card (process 0).
  summary = {"val": val_desc, "results": results, "curves": curves, "skipped": skipped,
             "train_seconds": train_time, "steps": steps, "devices": jax.device_count(),
             "eval": config.eval.to_dict()}
  report = None
  if parallel.is_main_process():
    runlog.atomic_write(os.path.join(workdir, RESULTS_FILE),
                        runlog.dumps_strict(summary, indent=2))
    saved.write_card(workdir, "fewshot",
                     model=models.spec(config.model, num_outputs=learner.model.num_outputs),
                     learner=config.learner.to_dict(), episodes=config.episodes.to_dict(),
                     task=task, input_shape=list(tasks.support_x.shape[2:]),
                     target_shape=list(tasks.support_y.shape[2:]), steps=steps)
    report = fewshot_report.write_report(config, workdir, learner, state, summary)
  return {"report": report, "results": results, "curves": curves}
