"""The multimodal experiment on Sort-of-CLEVR: `run(config, workdir)` (configs/multimodal_sortofclevr.py).

Sections: validation -> data (splits, tokenizer) -> workdir -> mesh -> model and optimizer ->
step -> checkpoint/resume -> loop with periodic evals and early stopping -> baselines (late
fusion, trained ablations) -> test-set evals -> few-shot on fused embeddings -> report and
model.json. Every check runs before any compilation or write to the workdir.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

import jax
import numpy as np

from metajax import checkpoint, models, optim, parallel, runlog, saved
from metajax.data import sort_of_clevr as soc
from metajax.errors import ConfigError, require_in, require_positive
from metajax.experiments import sort_of_clevr_fewshot as few
from metajax.experiments import sort_of_clevr_report as report
from metajax.multimodal import fewshot, steps
from metajax.multimodal.inputs import TableSchema
from metajax.multimodal.model import MODALITIES, example_batch
from metajax.multimodal.saved import table_schema_card
from metajax.multimodal.tokenize import encode, load_tokenizer, train_tokenizer
from metajax.state import TrainState

# Test-time modality subsets: name -> present (image, text, table).
SUBSETS = {"image+text+table": (1, 1, 1), "image+text": (1, 1, 0), "text+table": (0, 1, 1),
           "text only": (0, 1, 0), "image only": (1, 0, 0), "image+table": (1, 0, 1)}
TOKENIZER_DIR = "tokenizer"


# --- validation: every check before any expensive work ------------------------------------
def model_fields(config, vocab_size: int) -> dict[str, Any]:
  """The ModelConfig fields the data fixes: input shapes, table schema, answers, vocabulary."""
  return dict(soc.model_inputs(config.data.table_rows), vocab_size=vocab_size)


def check_config(config) -> None:
  """ConfigError naming the key, the value and what is valid; nothing is computed or written."""
  require_in("data.name", config.data.name, ("sort_of_clevr",))
  t, e = config.train, config.eval
  require_positive(config, "data.num_train", "data.num_test", "train.steps", "train.batch_size",
                   "train.log_every", "train.eval_every", "train.checkpoint_every",
                   "train.eval_questions", "eval.batch_size", "text.vocab_size")
  require_positive(config, "data.num_val", "train.stop_at", "train.regression_weight",
                   "train.colour_curriculum", "eval.fewshot.episodes", allow_zero=True)
  if t.stop_at > 1:
    raise ConfigError("train.stop_at", t.stop_at, "a validation accuracy",
                      "0 (train all train.steps) or a fraction in (0, 1]")
  if t.stop_at and not config.data.num_val:
    raise ConfigError("train.stop_at", t.stop_at, "stopping needs a validation split, never "
                      "the test set", "data.num_val >= 1, or train.stop_at=0")
  for key in ("late_fusion_steps", "ablation_steps"):
    if e[key] < -1:
      raise ConfigError(f"eval.{key}", e[key], "a step budget",
                        "-1 (as many as the main model trained), 0 (skip), >= 1")
  trainable = [n for n in SUBSETS if n != "image+text+table"]
  for name in e.ablations:
    require_in("eval.ablations", name, trainable)
  if len(set(e.ablations)) < len(e.ablations):
    raise ConfigError("eval.ablations", tuple(e.ablations), "names a modality subset twice",
                      "each of " + ", ".join(trainable) + " at most once")
  for m in MODALITIES:
    if not 0.0 <= t.drop[m] < 1.0:
      raise ConfigError(f"train.drop.{m}", t.drop[m], "a drop probability", "0 <= p < 1")
  optim.check(config.optimizer)
  soc.check_table_rows(config.data.table_rows)
  n, r = jax.device_count(), t.questions_per_image
  per_image = soc.questions_per_image(config.data.table_rows)
  if not 1 <= r <= per_image:
    raise ConfigError("train.questions_per_image", r,
                      f"each Sort-of-CLEVR image has {per_image} questions", f"1..{per_image}")
  if t.batch_size % (r * n):
    raise ConfigError("train.batch_size", t.batch_size, f"must hold whole images ({r} "
                      f"questions each) split evenly over {n} device(s)", f"a multiple of {r * n}")
  if t.batch_size // r > config.data.num_train:
    raise ConfigError("train.batch_size", t.batch_size, f"needs {t.batch_size // r} images per "
                      f"step, more than data.num_train={config.data.num_train}",
                      f"<= {config.data.num_train * r}")
  if per_host(config):  # every process needs a non-empty shard of the training scenes
    parallel.process_shard(config.data.num_train, key="data.num_train")
  if config.text.tokenizer and not os.path.isdir(config.text.tokenizer):
    raise ConfigError("text.tokenizer", config.text.tokenizer, "no tokenizer directory there",
                      "'' (train one on the questions) or a save_pretrained directory")
  models.from_config(config.model, **model_fields(config, 1))  # validates every model field
  few.check(e.fewshot, config.model)


# --- data: scenes and tokenized questions -------------------------------------------------
def per_host(config) -> bool:
  """data.per_host_shard: each process generates and samples only its shard of the training
  scenes (False where a config has no such key, as the distillation config)."""
  return bool(config.data.get("per_host_shard", False))


def load_scenes(config, shard: bool = False, data_dir: str = "") -> dict[str, dict[str, np.ndarray]]:
  """`soc.load` of a run config's data (train, val, test; `data_dir` overrides the config's),
  the training scenes drawn as that run drew them: seeded per scene under
  `data.per_host_shard` (only this process's shard when `shard`), else as one stream."""
  d = config.data
  scenes = None
  if per_host(config):
    scenes = parallel.process_shard(d.num_train) if shard else range(d.num_train)
  return soc.load(data_dir or d.data_dir, d.num_train, d.num_test, config.seed, d.table_rows,
                  d.num_val, scenes)


def load_tokenizer_for(config, workdir: str, questions):
  """The run's tokenizer, saved in `workdir/tokenizer` (trained on the training questions
  unless `text.tokenizer` names one), so the workdir alone describes the model."""
  path = os.path.join(workdir, TOKENIZER_DIR)
  if os.path.isdir(path):  # resumed: the tokenizer the run trained with
    return load_tokenizer(path)
  write = path if jax.process_index() == 0 else ""
  if not config.text.tokenizer:
    return train_tokenizer(sorted(set(questions)), config.text.vocab_size, write)
  tok = load_tokenizer(config.text.tokenizer)
  if write:
    tok.save_pretrained(write)
  return tok


# --- evaluation ---------------------------------------------------------------------------
def evaluate(predict, params, split: soc.Split, mesh, batch_size: int, present=(1, 1, 1),
             indices: np.ndarray | None = None):
  """({group, 'all', 'family/<f>': accuracy}, embeddings [len(indices), D]) on questions
  `indices` (default all) of `split`, with the modalities `present`."""
  idx = np.arange(split.size) if indices is None else indices
  answers, emb = steps.predict_scenes(predict, params, split.batch, split.by_image,
                                      np.unique(split.d["q_image"][idx]), mesh, batch_size,
                                      present)
  correct = answers[idx] == split.d["q_answer"][idx]
  acc = {**steps.grouped_accuracy(correct, split.group[idx], soc.GROUPS),
         "all": float(correct.mean()),
         **steps.grouped_accuracy(correct, split.d["q_family"][idx], soc.FAMILIES, "family/",
                                  keep_empty=False)}
  return acc, emb[idx]


# --- one training run (the main model and each baseline) ----------------------------------
def train(config, workdir: str, data, model, num_steps: int, mesh, label: str,
          stop_at: float = 0.0, modalities=(1, 1, 1)):
  """Trains `model` for `num_steps` (fewer once validation reaches `stop_at`; 0: never) on the
  `modalities` marked (image, text, table), resuming from `workdir`'s latest checkpoint.
  Returns (state, predict over those modalities)."""
  t = config.train
  # Model and optimizer.
  tx = optim.make_optimizer(config.optimizer, num_steps)
  params = model.init(jax.random.key(config.seed), example_batch(model.cfg))["params"]
  state = parallel.replicate(TrainState.create(params, tx), mesh)
  # Step: jitted over the data mesh, batch split along `data`, state replicated and donated.
  keys = steps.modality_keys(modalities)
  shard, repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  step_fn = jax.jit(steps.make_train_step(model, tx, tuple(t.drop[m] for m in MODALITIES),
                                          t.regression_weight, keys, t.questions_per_image),
                    in_shardings=(repl, shard, repl), out_shardings=(repl, repl),
                    donate_argnums=0)
  predict = steps.make_predict(model, keys)
  # Checkpoint and resume.
  mngr, state, start = checkpoint.resume(workdir, state, label)
  writer = runlog.MetricWriter(workdir, resume_step=start)
  prior = [r["time_s"] for r in runlog.read_metrics(workdir) if "time_s" in r]
  elapsed = prior[-1] if (prior and start > 0) else 0.0
  train_split, held = data["train"], data.get("val", data["test"])
  rows = parallel.process_rows(t.batch_size, mesh)  # this process's questions of each batch
  shard = jax.process_index() if per_host(config) else None  # train_split is its shard
  eval_idx = np.random.default_rng(config.seed).permutation(held.size)[:t.eval_questions]
  key = jax.random.key(config.seed)
  if stop_at and report.first_reaching(runlog.read_metrics(workdir), stop_at) is not None:
    runlog.say(f"{label}: already reached train.stop_at={stop_at} at step {start}")
    num_steps = start
  # Loop: batch, step, log, evaluate (early stopping), checkpoint.
  bar = runlog.progress(num_steps, start, desc=label)
  tick, ticked_step = time.perf_counter(), start
  for step in range(start, num_steps):
    idx = soc.host_batch_indices(config.seed, step, t.batch_size, t.questions_per_image,
                                 train_split.by_image, rows, shard)
    weight = soc.colour_curriculum(train_split.d["q_colour"][idx], step, t.colour_curriculum)
    batch = parallel.host_local_batch({**train_split.batch(idx, t.questions_per_image),
                                       "weight": weight}, mesh)
    state, metrics = step_fn(state, batch, key)
    done = step + 1
    bar.update(1)
    if done % t.log_every == 0 or done == num_steps:
      metrics = jax.device_get(metrics)
      runlog.check_finite(done, metrics)
      now = time.perf_counter()
      elapsed += now - tick
      metrics["train/examples_per_s"] = (done - ticked_step) * t.batch_size / (now - tick)
      tick, ticked_step = now, done
      writer.write(done, {**metrics, "time_s": elapsed, "examples": done * t.batch_size})
    if done % t.eval_every == 0 or done == num_steps:
      t0 = time.perf_counter()
      acc, _ = evaluate(predict, state.params, held, mesh, config.eval.batch_size,
                        present=modalities, indices=eval_idx)
      row = {f"eval/{g}": v for g, v in acc.items()}
      writer.write(done, row)
      runlog.say(f"{label} step {done}: validation accuracy " +
                 ", ".join(f"{g} {100 * acc[g]:.1f}%" for g in soc.GROUPS + ("all",)
                           if np.isfinite(acc[g])))  # NaN: no question of that kind
      tick += time.perf_counter() - t0  # evals are not training time
      if stop_at and report.first_reaching([{"step": done, **row}], stop_at) is not None:
        runlog.say(f"{label}: validation reached train.stop_at={stop_at} at step {done}; "
                   "stopping")
        checkpoint.save(mngr, done, state)
        break
    if done % t.checkpoint_every == 0 or done == num_steps:
      checkpoint.save(mngr, done, state)
  bar.close()
  mngr.wait_until_finished()
  mngr.close()
  writer.close()
  return state, predict


def write_card(config, workdir: str, model, steps_run: int, root: str,
               modalities=(1, 1, 1)) -> None:
  """model.json: everything `metajax.load_trained` needs to rebuild the model and its inputs
  (the tokenizer is the one saved in the run's workdir `root`)."""
  schema = TableSchema(soc.TABLE_CATEGORICAL, soc.TABLE_NUMERIC, config.data.table_rows)
  saved.write_card(
      workdir, "multimodal", model=models.spec({"name": config.model.name},
                                               **dataclasses.asdict(model.cfg)),
      table_schema=table_schema_card(schema), answers=list(soc.ANSWERS),
      tokenizer=os.path.relpath(os.path.join(root, TOKENIZER_DIR), workdir),
      max_text_len=model.cfg.max_text_len, truncate_text=config.text.truncate_text,
      optimizer=dict(config.optimizer), steps=steps_run,
      modalities=[m for m, p in zip(MODALITIES, modalities) if p], dataset=config.data.name)


# --- entry point ----------------------------------------------------------------------------
def run(config, workdir: str) -> dict[str, Any]:
  """Trains on Sort-of-CLEVR, evaluates baselines, ablations, robustness and few-shot, and
  writes report.md, results.json and model.json to `workdir`.

  Returns {'report': path, 'accuracy': {subset: {group: acc}}, 'late_fusion': {...} or None,
  'ablations': [...], 'fewshot': {...} or None, 'params': count}.
  """
  check_config(config)
  runlog.check_workdir(workdir)
  raw = load_scenes(config, shard=True)
  fs = config.eval.fewshot
  if fs.episodes:  # the test split must hold the episodes: checked before training
    fewshot.check_episodes(few.closest_questions(raw["test"])[1], len(soc.COLOURS), fs.ways,
                           (1, fs.shots), fs.queries, fs.episodes,
                           "test ('closest' questions per colour)", prefix="eval.fewshot.")
  # Workdir: a new run, or this config resumed (more train.steps, other eval.* allowed).
  resumed = runlog.prepare_workdir(workdir, config)
  logging.info("multimodal: %s workdir %s", "resuming" if resumed else "new", workdir)
  # A shard's questions may miss some: every host's tokenizer learns every possible question.
  tok = load_tokenizer_for(config, workdir, soc.question_texts(config.data.table_rows)
                           if per_host(config) else raw["train"]["q_text"].tolist())
  split = lambda s: soc.Split(s, *encode(tok, s["q_text"].tolist(), config.model.max_text_len,
                                         config.text.truncate_text))
  data = {name: split(s) for name, s in raw.items()}
  mesh = parallel.make_mesh()
  fields = model_fields(config, len(tok))
  model = models.from_config(config.model, **fields)
  fusion = model.cfg.fusion
  state, predict = train(config, workdir, data, model, config.train.steps, mesh,
                         f"{fusion} fusion", stop_at=config.train.stop_at)
  trained = int(state.step)
  kept = runlog.finished_results(workdir, config)  # this run, finished and evaluated
  if kept is not None:
    runlog.say(f"metajax: {workdir} finished at step {trained}; test, baseline and few-shot "
               "results kept from results.json (more train.steps or other eval.* settings "
               "rerun them)")
    return {"report": os.path.join(workdir, "report.md"), "accuracy": kept["accuracy"],
            "late_fusion": kept["late_fusion"], "ablations": kept["ablations"],
            "fewshot": kept["fewshot"], "params": kept["params"]}
  write_card(config, workdir, model, trained, workdir)
  test, bs, e = data["test"], config.eval.batch_size, config.eval
  runlog.say(f"test split: accuracy with {len(SUBSETS)} subsets of the modalities ...")
  accuracy = {name: evaluate(predict, state.params, test, mesh, bs, present=p)[0]
              for name, p in SUBSETS.items()}
  # Baselines, trained after the main model in subdirectories named by their steps.
  late = None
  if e.late_fusion_steps:
    other = "late" if fusion == "early" else "early"
    lsteps = trained if e.late_fusion_steps < 0 else e.late_fusion_steps
    ldir = os.path.join(workdir, f"{other}_fusion_{lsteps}")
    lmodel = models.from_config(config.model, **fields, fusion=other)
    lstate, lpredict = train(config, ldir, data, lmodel, lsteps, mesh, f"{other} fusion")
    write_card(config, ldir, lmodel, lsteps, workdir)
    late = {"fusion": other, "steps": lsteps,
            "accuracy": {n: evaluate(lpredict, lstate.params, test, mesh, bs, present=p)[0]
                         for n, p in SUBSETS.items() if n in ("image+text+table", "image+text")},
            "rows": runlog.read_metrics(ldir)}
  ablations = []
  asteps = trained if e.ablation_steps < 0 else e.ablation_steps
  for name in e.ablations if asteps else ():  # trained on a subset of the modalities
    adir = os.path.join(workdir, f"ablation_{name.replace(' ', '_')}_{asteps}")
    astate, apredict = train(config, adir, data, model, asteps, mesh, f"trained on {name}",
                             modalities=SUBSETS[name])
    write_card(config, adir, model, asteps, workdir, SUBSETS[name])
    ablations.append({"trained on": name, "steps": asteps, "accuracy": evaluate(
        apredict, astate.params, test, mesh, bs, present=SUBSETS[name])[0]})
  if fs.episodes:
    runlog.say(f"few-shot on fused embeddings: {fs.episodes} episodes per setting ...")
  fs_train = data["train"]
  if per_host(config) and fs.episodes and fs.head.steps:  # the same episodes on every host:
    fs_train = split(load_scenes(config)["train"])  # all scenes
  fs_results = few.fewshot_eval(config, model, state.params, fs_train, test, workdir)
  n_params = int(sum(x.size for x in jax.tree.leaves(state.params)))
  path = report.write_report(config, workdir, model.cfg, accuracy, late, fs_results, n_params,
                             ablations)
  return {"report": path, "accuracy": accuracy, "late_fusion": late and late["accuracy"],
          "ablations": ablations, "fewshot": fs_results, "params": n_params}
