"""Few-shot meta-training: `train_and_evaluate(config, workdir)`.

Sections: validation -> data -> learner -> workdir -> mesh and shardings ->
state (init or resume) -> loop (sample, step, log, validate, checkpoint) ->
meta-test evaluation -> report. Every config value is checked before any
compilation, and nothing is written to the workdir before the config passed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time

import jax
import numpy as np

from metajax import checkpoint, data, parallel, runlog
from metajax.data.base import ClassImages
from metajax.data.episodes import EpisodeSpec, make_sampler, sample_tasks
from metajax.data.sinusoid import Sinusoid
from metajax.errors import ConfigError, require_positive
from metajax.meta import ALGORITHMS
from metajax.models import MODELS
from metajax.optim import OPTIMIZERS
from metajax.report import md_table, mean_ci95, plot_curves


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


# ---------------------------------------------------------------- validation

def check_config(config) -> None:
  """Cheap checks of names and sizes; raises ConfigError naming key, value and what is valid."""
  for name in (config.dataset, *config.eval.datasets):
    if not name.startswith("tfds:"):
      data.DATASETS.get(name)
  MODELS.get(config.model)
  ALGORITHMS.get(config.algorithm)
  OPTIMIZERS.get(config.optimizer.name)
  require_positive(config, "ways", "shots", "queries", "meta_batch", "num_steps", "log_every",
                   "checkpoint_every", "optimizer.learning_rate", "eval.queries", "eval.episodes",
                   "eval.batch")
  require_positive(config, "eval.val_every", "eval.val_episodes", allow_zero=True)
  for key in ("ways", "shots"):
    values = tuple(config.eval[key])
    if not values or any(v <= 0 for v in values):
      raise ConfigError(f"eval.{key}", values, "needs positive sizes", "e.g. (5, 20)")
  if config.checkpoint_every % config.log_every:
    raise ConfigError("checkpoint_every", config.checkpoint_every,
                      f"a resumed run logs the same averages only if checkpoints fall on log "
                      f"steps (log_every={config.log_every})", f"a multiple of {config.log_every}")
  n = jax.device_count()
  for key in ("meta_batch", "eval.batch"):
    value = config.meta_batch if key == "meta_batch" else config.eval.batch
    if value % n:
      raise ConfigError(key, value, f"tasks are split over {n} devices",
                        f"a multiple of {n}")


def _task_kind(dataset) -> str:
  return "regression" if isinstance(dataset, Sinusoid) else "classification"


def _eval_settings(config, datasets: dict) -> tuple[list[EvalSetting], list[str]]:
  """Every eval dataset x ways x shots. A ways count a dataset's test split lacks
  classes for (20-way on the 10 digits) is skipped and reported; a dataset left
  with no setting at all is a ConfigError."""
  settings, skipped = [], []
  for name in config.eval.datasets:
    ds = datasets[name]
    split = "test"
    if isinstance(ds, ClassImages) and split not in ds.splits:
      raise ConfigError("eval.datasets", name, f"it has no 'test' split (splits: {list(ds.splits)})",
                        "a dataset with a meta-test split")
    ways = (1,) if isinstance(ds, Sinusoid) else config.eval.ways
    classes = ds.splits[split].shape[0] if isinstance(ds, ClassImages) else None
    usable = [w for w in ways if classes is None or w <= classes]
    if not usable:
      raise ConfigError("eval.ways", tuple(ways), f"{name} has only {classes} test classes",
                        f"ways <= {classes}")
    skipped += [f"{name} {w}-way (only {classes} classes)" for w in ways if w not in usable]
    for w in usable:
      for k in config.eval.shots:
        settings.append(EvalSetting(name, split, EpisodeSpec(w, k, config.eval.queries, config.eval.batch)))
  return settings, skipped


def _check_shapes(config, learner, train_ds, settings, datasets) -> None:
  """Episode sizes against the splits, and the model against the data, by tracing only."""
  if isinstance(train_ds, ClassImages):
    if "train" not in train_ds.splits:
      raise ConfigError("dataset", config.dataset, "it has no 'train' split (meta-test only?)",
                        "glyphs, omniglot, or a tfds dataset with a train split")
    train_spec(config).validate(train_ds.splits["train"].shape, f"{config.dataset} train")
  for s in settings:
    ds = datasets[s.dataset]
    if isinstance(ds, ClassImages):
      try:
        s.spec.validate(ds.splits[s.split].shape, f"{s.dataset} {s.split}")
      except ConfigError as e:
        raise ConfigError(f"eval.{e.key}", e.value, e.why, e.valid) from None
      if ds.image_shape != train_ds.image_shape:
        raise ConfigError("eval.datasets", s.dataset,
                          f"its images are {ds.image_shape}, the model trains on {train_ds.image_shape}",
                          f"datasets of {train_ds.image_shape} images")
    fixed = getattr(learner, "num_ways", None)
    if fixed is not None and s.spec.ways != fixed and isinstance(ds, ClassImages):
      raise ConfigError("eval.ways", tuple(config.eval.ways),
                        f"{config.algorithm}'s head is fixed to {fixed} ways", f"({fixed},)")
  spec, key = train_spec(config), jax.random.key(0)
  if isinstance(train_ds, ClassImages):
    images = jax.ShapeDtypeStruct(train_ds.splits["train"].shape, train_ds.splits["train"].dtype)
    abstract = jax.eval_shape(lambda k, x: sample_tasks(k, x, spec), key, images)
  else:
    abstract = jax.eval_shape(lambda k: train_ds.sample(k, spec), key)
  try:
    jax.eval_shape(learner.init, key, abstract)
  except ConfigError:
    raise
  except Exception as e:  # a shape the model cannot take
    raise ConfigError("model", config.model,
                      f"it cannot take {config.dataset} inputs of shape {abstract.support_x.shape[2:]}: "
                      f"{type(e).__name__}: {str(e).splitlines()[0]}",
                      "a model for this input shape") from None


def train_spec(config) -> EpisodeSpec:
  return EpisodeSpec(config.ways, config.shots, config.queries, config.meta_batch,
                     bool(config.rotations))


# ---------------------------------------------------------------- data

def _sampler(ds, split: str, spec: EpisodeSpec, sharding, on_device: dict):
  """key -> Tasks for a dataset split, laid out as `sharding`.

  The split is copied to the mesh once (replicated) and kept in `on_device`,
  so evaluation settings that share a split share its device copy.
  """
  if isinstance(ds, Sinusoid):
    return jax.jit(lambda key: ds.sample(key, spec), out_shardings=sharding)
  if (ds.name, split) not in on_device:
    on_device[ds.name, split] = parallel.replicate(ds.splits[split], sharding.mesh)
  images, fn = on_device[ds.name, split], make_sampler(spec, sharding)
  return lambda key: fn(key, images)


def evaluate(eval_fn, state, sample_fn, episodes: int, batch: int, key) -> dict[str, np.ndarray]:
  """Per-episode metrics over `episodes` tasks, drawn `batch` at a time from `key`."""
  out: dict[str, list] = {}
  for i in range(math.ceil(episodes / batch)):
    k_tasks, k_step = jax.random.split(jax.random.fold_in(key, i))
    metrics = jax.device_get(eval_fn(state, sample_fn(k_tasks), k_step))
    for name, value in metrics.items():
      out.setdefault(name, []).append(np.asarray(value))
  return {name: np.concatenate(v)[:episodes] for name, v in out.items()}


# ---------------------------------------------------------------- main

def train_and_evaluate(config, workdir: str) -> dict:
  """Meta-trains `config.algorithm` on `config.dataset`, evaluates on the meta-test
  settings of `config.eval`, and writes metrics, checkpoints and report.md to `workdir`.

  Returns {'report': path, 'results': {setting: {metric: (mean, ci95)}}}.
  """
  t_start = time.time()
  check_config(config)
  names = [config.dataset] + [n for n in config.eval.datasets if n != config.dataset]
  datasets = {n: data.load(n, config.data_dir) for n in names}
  train_ds = datasets[config.dataset]
  learner = ALGORITHMS.get(config.algorithm)(config, _task_kind(train_ds))
  settings, skipped = _eval_settings(config, datasets)
  _check_shapes(config, learner, train_ds, settings, datasets)
  resumed = runlog.prepare_workdir(workdir, config)

  # Mesh: tasks split over `data`; state replicated.
  mesh = parallel.make_mesh()
  tasks_sharding, repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  train_step = jax.jit(learner.train_step, in_shardings=(repl, tasks_sharding, repl),
                       out_shardings=(repl, repl), donate_argnums=0)
  eval_step = jax.jit(learner.eval_step, in_shardings=(repl, tasks_sharding, repl),
                      out_shardings=repl)
  spec = train_spec(config)
  on_device: dict = {}
  sample_train = _sampler(train_ds, "train", spec, tasks_sharding, on_device)

  # State: fresh, or the latest checkpoint in the workdir.
  k_init, k_train, k_val, k_test = jax.random.split(jax.random.key(config.seed), 4)
  state = jax.jit(learner.init, out_shardings=repl)(k_init, sample_train(k_init))
  mngr = checkpoint.manager(workdir)
  state, restored = checkpoint.restore_or(mngr, state)
  start = int(restored or 0)
  writer = runlog.MetricWriter(workdir, resume_step=start)
  if restored is not None:
    print(f"metajax: resumed from step {start} in {workdir}")

  val, val_desc = None, "none"
  if config.eval.val_every and isinstance(train_ds, ClassImages) and "val" in train_ds.splits:
    vspec = EpisodeSpec(settings[0].spec.ways if learner.num_ways is None else learner.num_ways,
                        config.eval.shots[0], config.eval.queries, config.eval.batch)
    vspec.validate(train_ds.splits["val"].shape, f"{config.dataset} val")
    val = _sampler(train_ds, "val", vspec, tasks_sharding, on_device)
    val_desc = f"{vspec.ways}-way {vspec.shots}-shot on the val split, {config.eval.val_episodes} episodes"
  elif config.eval.val_every and isinstance(train_ds, Sinusoid):
    val = _sampler(train_ds, "val", EpisodeSpec(1, config.eval.shots[0], config.eval.queries,
                                                config.eval.batch), tasks_sharding, on_device)
    val_desc = f"{config.eval.shots[0]}-shot tasks, {config.eval.val_episodes} episodes"

  # Loop.
  bar = runlog.progress(config.num_steps, start, desc=f"{config.algorithm} {config.dataset}")
  pending: list[dict] = []
  t_loop = time.time()
  for step in range(start, config.num_steps):
    k_tasks, k_step = jax.random.split(jax.random.fold_in(k_train, step))
    state, metrics = train_step(state, sample_train(k_tasks), k_step)
    pending.append(metrics)
    done = step + 1
    if done % config.log_every == 0 or done == config.num_steps:
      means = {f"train/{k}": float(np.mean([m[k] for m in jax.device_get(pending)]))
               for k in pending[0]}
      runlog.check_finite(done, means)
      means["train/steps_per_s"] = len(pending) / max(time.time() - t_loop, 1e-9)
      writer.write(done, means)
      bar.set_postfix({k.split("/")[1]: f"{v:.3g}" for k, v in means.items() if "steps" not in k})
      pending, t_loop = [], time.time()
    if val is not None and (done % config.eval.val_every == 0 or done == config.num_steps):
      vm = evaluate(eval_step, state, val, config.eval.val_episodes, config.eval.batch, k_val)
      writer.write(done, {f"val/{k}": float(v.mean()) for k, v in vm.items() if v.ndim == 1})
    if done % config.checkpoint_every == 0 or done == config.num_steps:
      checkpoint.save(mngr, done, state)
    bar.update(1)
  bar.close()
  mngr.wait_until_finished()
  mngr.close()
  train_time = time.time() - t_start

  # Meta-test.
  results, curves = {}, {}
  for i, s in enumerate(settings):
    sample = _sampler(datasets[s.dataset], s.split, s.spec, tasks_sharding, on_device)
    t0 = time.time()
    m = evaluate(eval_step, state, sample, config.eval.episodes, config.eval.batch,
                 jax.random.fold_in(k_test, i))
    results[s.name] = {k: mean_ci95(v) for k, v in m.items() if v.ndim == 1}
    results[s.name]["eval_seconds"] = (time.time() - t0, float("nan"))
    for k, v in m.items():
      if v.ndim == 2:
        curves[f"{s.name} {k}"] = [(j, *mean_ci95(v[:, j])) for j in range(v.shape[1])]
  writer.close()
  summary = {"val": val_desc, "results": results, "curves": curves, "skipped": skipped, "train_seconds": train_time,
             "steps": config.num_steps, "devices": jax.device_count()}
  report = None
  if parallel.is_main_process():
    runlog.atomic_write(os.path.join(workdir, "results.json"), json.dumps(summary, indent=2))
    report = write_report(config, workdir, learner, state, summary)
  return {"report": report, "results": results, "curves": curves}


# ---------------------------------------------------------------- report

def write_report(config, workdir: str, learner, state, summary: dict) -> str:
  """report.md: what ran, meta-test metrics with 95% CI, learning and adaptation curves."""
  rows = runlog.read_metrics(workdir)
  lines = [f"# {config.algorithm} on {config.dataset}", "",
           f"- model: `{config.model}` {dict(config.get('model_kwargs', {}))}",
           f"- meta-training: {config.num_steps} steps of {config.meta_batch} task(s), "
           f"{config.ways}-way {config.shots}-shot {config.queries}-query"
           + (", rotations as new classes" if config.rotations else ""),
           f"- outer optimizer: {dict(config.optimizer)}",
           f"- validation curve: {summary['val']}",
           f"- batch norm: {getattr(learner, 'batch_norm', 'n/a')}",
           f"- seed {config.seed}; {summary['devices']} device(s) "
           f"({jax.devices()[0].platform}); wall time {summary['train_seconds']:.0f} s "
           "(training incl. compilation)",
           f"- full config: `config.json`; metrics: `metrics.jsonl` and `tensorboard/`", "",
           "## Meta-test", ""]
  table = []
  for name, metrics in summary["results"].items():
    for metric, (mean, ci) in metrics.items():
      if metric != "eval_seconds":
        table.append([name, metric, f"{mean:.4f} ± {ci:.4f}", config.eval.episodes])
  lines += [md_table(["setting", "metric", "mean ± 95% CI", "episodes"], table), ""]
  if summary["skipped"]:
    lines += ["Skipped (impossible on that dataset): " + "; ".join(summary["skipped"]), ""]
  curve = {k: runlog.summarise(rows, k) for k in ("train/loss", "val/loss")}
  acc = {k: runlog.summarise(rows, k) for k in ("train/accuracy", "val/accuracy")}
  png = plot_curves(os.path.join(workdir, "learning_curve.png"), {**curve, **acc},
                    ylabel="loss / accuracy", title="learning curve")
  lines += ["## Learning curve", "", f"![learning curve]({png})", ""]
  if summary["curves"]:
    pts = {k: [(j, m) for j, m, _ in v] for k, v in summary["curves"].items()}
    png = plot_curves(os.path.join(workdir, "adaptation_curve.png"), pts, xlabel="inner steps",
                      title="adaptation speed (meta-test)")
    lines += ["## Adaptation speed", "", f"![adaptation]({png})", ""]
    for k, v in summary["curves"].items():
      lines.append(f"- {k}: " + ", ".join(f"{j}: {m:.4f}±{c:.4f}" for j, m, c in v))
    lines.append("")
  extras = getattr(learner, "report_extras", None)
  if extras is not None:
    lines += [extras(state, workdir), ""]
  path = os.path.join(workdir, "report.md")
  runlog.atomic_write(path, "\n".join(lines))
  return path
