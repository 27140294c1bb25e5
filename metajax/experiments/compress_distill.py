"""Distils a trained Sort-of-CLEVR multimodal model into a smaller student:
`run(config, workdir)` (configs/distill_sortofclevr.py).

Sections: validation (teacher workdir, student size against the teacher) -> teacher and
data (the teacher's tokenizer, copied into the workdir) -> teacher logits on every training
question, once -> student, optimizer, step -> checkpoint/resume -> loop with periodic
validation -> test accuracy of student and teacher -> model.json, results.json, report.md.
The student's workdir loads with `metajax.load_trained` like any multimodal run.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from typing import Any

import jax
import numpy as np

from metajax import checkpoint, models, optim, parallel, runlog, saved
from metajax.compress import distill
from metajax.data import sort_of_clevr as soc
from metajax.errors import ConfigError, require_positive
from metajax.experiments import sort_of_clevr as clevr
from metajax.multimodal.model import example_batch
from metajax.multimodal.saved import table_schema_card
from metajax.multimodal.steps import make_predict
from metajax.multimodal.tokenize import encode
from metajax.state import TrainState


def count_params(params) -> int:
  return int(sum(x.size for x in jax.tree.leaves(params)))


def teacher_card(teacher: str) -> dict[str, Any]:
  """The teacher's model card; ConfigError unless it is a multimodal Sort-of-CLEVR model."""
  if not teacher or not os.path.isdir(teacher):
    raise ConfigError("teacher", teacher, "no such workdir", "the workdir of a finished "
                      "Sort-of-CLEVR multimodal run (configs/multimodal_sortofclevr.py)")
  card = saved.read_card(teacher)
  if card.get("kind") != "multimodal" or card.get("dataset") != "sort_of_clevr":
    raise ConfigError("teacher", teacher, f"it holds a {card.get('kind')} model of "
                      f"{card.get('dataset')!r}, not a multimodal Sort-of-CLEVR model",
                      "the workdir of a run of configs/multimodal_sortofclevr.py")
  return card


def model_from_card(card: dict, **overrides):
  """The model of a multimodal card, with `overrides` of its ModelConfig fields."""
  fields = {k: tuple(v) if isinstance(v, list) else v
            for k, v in {**card["model"], **overrides}.items()}
  return models.make(fields.pop("name"), **fields)


def student_model(config, card: dict):
  """The student: the teacher's ModelConfig with `config.model`'s fields instead."""
  return model_from_card(card, **dict(config.model))


def teacher_dir(config, workdir: str) -> str:
  """`config.teacher`, or `<workdir>/teacher` where `teacher_run` trains it when it is ''."""
  return config.teacher or os.path.join(workdir, "teacher")


def check_config(config) -> None:
  """ConfigError naming the key, value and what is valid; nothing is computed or written."""
  require_positive(config, "data.num_train", "data.num_val", "data.num_test", "train.steps",
                   "train.batch_size", "train.log_every", "train.eval_every",
                   "train.checkpoint_every", "train.eval_questions", "eval.batch_size",
                   "distill.temperature", "distill.max_param_fraction")
  require_positive(config, "train.regression_weight", "train.colour_curriculum",
                   allow_zero=True)
  if not 0.0 <= config.distill.alpha <= 1.0:
    raise ConfigError("distill.alpha", config.distill.alpha, "the weight of the soft targets",
                      "0 (hard labels only) .. 1 (teacher only)")
  optim.check(config.optimizer)
  soc.check_table_rows(config.data.table_rows)
  r, n = config.train.questions_per_image, jax.device_count()
  per_image = soc.questions_per_image(config.data.table_rows)
  if not 1 <= r <= per_image:
    raise ConfigError("train.questions_per_image", r,
                      f"each Sort-of-CLEVR image has {per_image} questions", f"1..{per_image}")
  if config.train.batch_size % (r * n):
    raise ConfigError("train.batch_size", config.train.batch_size, f"must hold whole images "
                      f"({r} questions each) split evenly over {n} device(s)",
                      f"a multiple of {r * n}")
  if config.teacher:
    check_student_size(config, teacher_card(config.teacher))
  else:
    clevr.check_config(config.teacher_run)


def check_student_size(config, card: dict) -> None:
  """ConfigError unless the student has at most `distill.max_param_fraction` of the
  parameters of the teacher of `card`."""
  student, teacher = student_model(config, card), model_from_card(card)
  shapes = lambda m: jax.eval_shape(lambda: m.init(jax.random.key(0), example_batch(m.cfg)))
  ns, nt = count_params(shapes(student)), count_params(shapes(teacher))
  limit = config.distill.max_param_fraction
  if ns > limit * nt:
    raise ConfigError("model", f"{ns:,} parameters", f"the student must have at most "
                      f"distill.max_param_fraction={limit} of the teacher's {nt:,}",
                      f"<= {int(limit * nt):,} parameters (smaller dim, mlp_dim, stem_channels)")


def train_student(config, workdir: str, data, student, logits: np.ndarray, mesh):
  """Trains `student` on `data['train']` against the teacher's `logits`, resuming from
  `workdir`'s latest checkpoint; validation accuracy every `train.eval_every` steps."""
  t, dcfg = config.train, config.distill
  tx = optim.make_optimizer(config.optimizer, t.steps)
  params = student.init(jax.random.key(config.seed), example_batch(student.cfg))["params"]
  state = parallel.replicate(TrainState.create(params, tx), mesh)
  shard, repl = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  step_fn = jax.jit(distill.make_distill_step(student, tx, dcfg.temperature, dcfg.alpha,
                                              t.regression_weight, t.questions_per_image),
                    in_shardings=(repl, shard, repl), out_shardings=(repl, repl),
                    donate_argnums=0)
  predict = make_predict(student)
  mngr, state, start = checkpoint.resume(workdir, state, "distill")
  writer = runlog.MetricWriter(workdir, resume_step=start)
  train_split, held = data["train"], data["val"]
  eval_idx = np.random.default_rng(config.seed).permutation(held.size)[:t.eval_questions]
  key = jax.random.key(config.seed)
  bar = runlog.progress(t.steps, start, desc="distill")
  tick, ticked = time.perf_counter(), start
  for step in range(start, t.steps):
    idx = soc.scene_indices(config.seed, step, t.batch_size, t.questions_per_image,
                            train_split.by_image)
    weight = soc.colour_curriculum(train_split.d["q_colour"][idx], step, t.colour_curriculum)
    batch = parallel.shard_batch({**train_split.batch(idx, t.questions_per_image),
                                  "weight": weight, "teacher_logits": logits[idx]}, mesh)
    state, metrics = step_fn(state, batch, key)
    done = step + 1
    bar.update(1)
    if done % t.log_every == 0 or done == t.steps:
      metrics = jax.device_get(metrics)
      runlog.check_finite(done, metrics)
      now = time.perf_counter()
      metrics["train/examples_per_s"] = (done - ticked) * t.batch_size / (now - tick)
      tick, ticked = now, done
      writer.write(done, metrics)
    if done % t.eval_every == 0 or done == t.steps:
      t0 = time.perf_counter()
      acc, _ = clevr.evaluate(predict, state.params, held, mesh, config.eval.batch_size,
                              indices=eval_idx)
      writer.write(done, {f"eval/{g}": v for g, v in acc.items()})
      runlog.say(f"distill step {done}: validation accuracy " + ", ".join(
          f"{g} {100 * acc[g]:.1f}%" for g in soc.GROUPS + ("all",) if np.isfinite(acc[g])))
      tick += time.perf_counter() - t0
    if done % t.checkpoint_every == 0 or done == t.steps:
      checkpoint.save(mngr, done, state)
  bar.close()
  mngr.wait_until_finished()
  mngr.close()
  writer.close()
  return state, predict


def write_card(workdir: str, student, teacher_card_: dict, steps_run: int, config,
               tdir: str) -> None:
  """model.json of the student: the teacher's card with the student's model, optimizer,
  steps and tokenizer (the copy in this workdir)."""
  saved.write_card(workdir, "multimodal", **{
      **{k: v for k, v in teacher_card_.items() if k != "kind"},
      "model": models.spec({"name": config.model.get("name", teacher_card_["model"]["name"])},
                           **dataclasses.asdict(student.cfg)),
      "optimizer": dict(config.optimizer), "steps": steps_run, "tokenizer": clevr.TOKENIZER_DIR,
      "distilled_from": os.path.abspath(tdir)})


def cached_teacher_logits(workdir: str, tdir: str, compute) -> np.ndarray:
  """`compute()`, kept in `<workdir>/teacher_logits.npz` with the teacher's checkpoint step
  so that a resumed run skips it (several minutes on a loaded CPU)."""
  path = os.path.join(workdir, "teacher_logits.npz")
  step = checkpoint.latest_step(tdir)
  if os.path.isfile(path):
    with np.load(path) as z:
      if int(z["teacher_step"]) == step:
        return z["logits"]
  logits = compute()
  if jax.process_index() == 0:
    buf = io.BytesIO()
    np.savez(buf, logits=logits, teacher_step=np.int64(step))
    runlog.atomic_write(path, buf.getvalue())
  return logits


def run(config, workdir: str) -> dict[str, Any]:
  """Distils `config.teacher` into the student `config.model`; writes report.md,
  results.json and model.json. Returns {'report', 'student', 'teacher', 'params'}."""
  check_config(config)
  runlog.check_workdir(workdir)
  raw = clevr.load_scenes(config)
  resumed = runlog.prepare_workdir(workdir, config)
  tdir = teacher_dir(config, workdir)
  if not config.teacher:  # trained (or resumed) here, from teacher_run
    runlog.say(f"distill: training the teacher in {tdir} ...")
    clevr.run(config.teacher_run, tdir)
  card = teacher_card(tdir)
  check_student_size(config, card)
  teacher = saved.load_trained(tdir)
  tok = teacher.preprocessor.tokenizer
  if jax.process_index() == 0 and not os.path.isdir(os.path.join(workdir, clevr.TOKENIZER_DIR)):
    tok.save_pretrained(os.path.join(workdir, clevr.TOKENIZER_DIR))
  data = {name: soc.Split(s, *encode(tok, s["q_text"].tolist(), teacher.model.cfg.max_text_len,
                                     card.get("truncate_text", False)))
          for name, s in raw.items()}
  mesh = parallel.make_mesh()
  student = student_model(config, card)
  runlog.say(f"distill: teacher logits on {data['train'].size:,} training questions "
             f"({'resumed' if resumed else 'new'} run) ...")
  tpredict = make_predict(teacher.model)
  logits = cached_teacher_logits(workdir, tdir, lambda: distill.teacher_logits(
      tpredict, teacher.params, data["train"], mesh, config.eval.batch_size))
  state, predict = train_student(config, workdir, data, student, logits, mesh)
  write_card(workdir, student, card, int(state.step), config, tdir)
  test, bs = data["test"], config.eval.batch_size
  acc_s = clevr.evaluate(predict, state.params, test, mesh, bs)[0]
  acc_t = clevr.evaluate(tpredict, teacher.params, test, mesh, bs)[0]
  ns, nt = count_params(state.params), count_params(teacher.params)
  results = {"steps": int(state.step), "eval": config.eval.to_dict(),
             "student": acc_s, "teacher": acc_t, "params": {"student": ns, "teacher": nt}}
  path = os.path.join(workdir, "report.md")
  if jax.process_index() == 0:
    runlog.atomic_write(os.path.join(workdir, "results.json"),
                        runlog.dumps_strict(results, indent=2, sort_keys=True))
    rows = [f"| {g} | {100 * acc_t[g]:.1f} | {100 * acc_s[g]:.1f} | "
            f"{100 * acc_s[g] / acc_t[g]:.1f}% |" for g in soc.GROUPS + ("all",)
            if np.isfinite(acc_t[g]) and acc_t[g] > 0]
    runlog.atomic_write(path, "\n".join([
        "# Distilled Sort-of-CLEVR student", "",
        f"Teacher `{tdir}` ({nt:,} parameters) -> student ({ns:,}, "
        f"{100 * ns / nt:.1f}%), {int(state.step):,} steps, T={config.distill.temperature}, "
        f"alpha={config.distill.alpha}. Test split, all modalities.", "",
        "| question kind | teacher % | student % | student / teacher |", "|---|---|---|---|",
        *rows, ""]))
  runlog.say("distill: test accuracy, student vs teacher: " + ", ".join(
      f"{g} {100 * acc_s[g]:.1f}% / {100 * acc_t[g]:.1f}%" for g in ("non-relational",
                                                                     "relational")))
  return {"report": path, "student": acc_s, "teacher": acc_t,
          "params": {"student": ns, "teacher": nt}}
