"""Compression of trained models: `run(config, workdir)` (configs/compress_models.py).

Sections: validation (sparsity, sources are the models they should be) -> sources (trained
here in tiny mode) -> per model: full float32 export, int8, magnitude-pruned + masked
fine-tune, distilled student (multimodal only) -> each variant saved as a compressed
workdir, loaded back with `metajax.load_trained` and measured there (size of its weights
on disk, parameters, CPU latency per example at batch 1 and 128, accuracy) -> report.md,
results.json. A variant already in the workdir is loaded, not recomputed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import jax
import numpy as np
import optax

from metajax import data as datasets
from metajax import optim, parallel, runlog, saved
from metajax.compress import prune
from metajax.compress import quantize as qz
from metajax.compress import saved as csaved
from metajax.data import sort_of_clevr as soc
from metajax.data.episodes import EpisodeSpec
from metajax.errors import ConfigError, require_positive
from metajax.experiments import compress_report as report
from metajax.experiments import sort_of_clevr as clevr
from metajax.meta.evaluate import sampler
from metajax.multimodal import steps
from metajax.state import TrainState

VARIANTS = ("full", "int8", "pruned", "distilled")
STORAGE = {"full": "float32", "int8": "int8", "pruned": "sparse", "distilled": "float32"}


# --- validation ---------------------------------------------------------------------------
def check_source(key: str, workdir: str, kind: str, what: str, **expect: str) -> dict:
  """The card of `workdir`; ConfigError naming it unless it holds a `kind` model with the
  `expect`ed card fields (e.g. dataset='sort_of_clevr')."""
  if not os.path.isdir(workdir):
    raise ConfigError(key, workdir, "no such workdir", f"the workdir of a finished {what} run")
  card = saved.read_card(workdir)
  got = {"kind": card.get("kind"), **{k: card.get(k) for k in expect}}
  want = {"kind": kind, **expect}
  if got != want:
    shown = ", ".join(f"{k}={v!r}" for k, v in got.items())
    raise ConfigError(key, workdir, f"it holds a different model ({shown}), not a {what}",
                      f"the workdir of a {what} run")
  return card


def check_config(config) -> None:
  prune.check_sparsity(config.prune.sparsity, "prune.sparsity")
  if config.prune.scope not in prune.SCOPES:
    raise ConfigError("prune.scope", config.prune.scope, "unknown pruning scope",
                      ", ".join(map(repr, prune.SCOPES)))
  require_positive(config, "latency.repeats", "latency.batch", "multimodal.eval_batch",
                   "protonet.episodes", "prune.learning_rate")
  require_positive(config, "prune.multimodal_steps", "prune.protonet_steps", allow_zero=True)
  m, p = config.multimodal, config.protonet
  if m.source:
    check_source("multimodal.source", m.source, "multimodal", "multimodal Sort-of-CLEVR model",
                 dataset="sort_of_clevr")
  if m.distilled:
    check_source("multimodal.distilled", m.distilled, "multimodal",
                 "distilled Sort-of-CLEVR student", dataset="sort_of_clevr")
  if p.source:
    card = check_source("protonet.source", p.source, "fewshot", "few-shot model")
    if card["learner"]["name"] != "protonet":
      raise ConfigError("protonet.source", p.source, f"it holds a {card['learner']['name']} "
                        "learner, not a ProtoNet", "the workdir of a ProtoNet run")


# --- measuring ----------------------------------------------------------------------------
def median_latency(fn: Callable[[], Any], repeats: int) -> float:
  """Median seconds of `fn()` (blocked until ready) over `repeats` calls after three warm-up
  calls (the first compiles)."""
  for _ in range(3):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def count_nonzero(params) -> int:
  return prune.count_nonzero(params)


# --- multimodal ---------------------------------------------------------------------------
def raw_tables(d: dict, images: np.ndarray) -> list[list[dict]]:
  """The table rows of scenes `images` as `TrainedMultimodal.predict` takes them."""
  names = list(soc.TABLE_CATEGORICAL) + list(soc.TABLE_NUMERIC)
  out = []
  for i in images:
    rows = []
    for cat, num, keep in zip(d["table_cat"][i], d["table_num"][i], d["table_mask"][i]):
      if keep:
        vals = [v[c] for v, c in zip(soc.TABLE_CATEGORICAL.values(), cat)] + list(map(float, num))
        rows.append(dict(zip(names, vals)))
    out.append(rows)
  return out


def finetune_pruned_multimodal(config, source_cfg, model, params, masks, split, mesh):
  """`prune.multimodal_steps` steps of the source run's loss on `split`, masked updates."""
  t = source_cfg.train
  tx = optax.chain(prune.keep_masked(masks),
                   optax.adamw(config.prune.learning_rate, weight_decay=0.0),
                   prune.keep_masked(masks))
  step = jax.jit(steps.make_train_step(model, tx, tuple(t.drop[m] for m in ("image", "text",
                                                                           "table")),
                                       t.regression_weight, steps.INPUT_KEYS,
                                       t.questions_per_image), donate_argnums=0)
  state, key = TrainState.create(params, tx), jax.random.key(config.seed)
  bar = runlog.progress(config.prune.multimodal_steps, desc="pruned fine-tune")
  for s in range(config.prune.multimodal_steps):
    idx = soc.scene_indices(config.seed + 1, s, t.batch_size, t.questions_per_image,
                            split.by_image)
    batch = {**split.batch(idx, t.questions_per_image), "weight": np.ones(len(idx), np.float32)}
    state, _ = step(state, parallel.shard_batch(batch, mesh), key)
    bar.update(1)
  bar.close()
  return state.params


def compress_multimodal(config, workdir: str, source: str, distilled: str, mesh) -> list[dict]:
  """Rows of the table for the multimodal model of `source` (and its student `distilled`)."""
  src_cfg = runlog.read_config(source)
  raw = clevr.load_scenes(src_cfg)  # the scenes the source trained on
  full = saved.load_trained(source)
  tok, max_len = full.preprocessor.tokenizer, full.model.cfg.max_text_len
  split = lambda s: soc.Split(raw[s], *clevr.encode(tok, raw[s]["q_text"].tolist(), max_len,
                                                    full.preprocessor.truncate_text))
  test = split("test")
  out_root = os.path.join(workdir, "multimodal")
  exports: dict[str, tuple[str, Any]] = {
      "full": (source, lambda: full.params), "int8": (source, lambda: full.params)}

  def pruned_params():
    masks = prune.magnitude_masks(full.params, config.prune.sparsity, config.prune.scope)
    p = prune.apply_masks(full.params, masks)
    if config.prune.multimodal_steps:
      p = finetune_pruned_multimodal(config, src_cfg, full.model, p, masks, split("train"),
                                     mesh)
    return p

  exports["pruned"] = (source, pruned_params)
  if distilled:
    exports["distilled"] = (distilled, lambda: saved.load_trained(distilled).params)
  # Latency inputs: raw test examples through the public predict.
  q = test.by_image.reshape(-1)[:config.latency.batch]
  imgs = raw["test"]["q_image"][q]
  inputs = dict(images=raw["test"]["images"][imgs], texts=raw["test"]["q_text"][q].tolist(),
                tables=raw_tables(raw["test"], imgs))
  first = {k: v[:1] for k, v in inputs.items()}
  rows = []
  for name, (src, make_params) in exports.items():
    loaded = export_variant(config, os.path.join(out_root, name), src, name, make_params)
    acc = cached_accuracy(workdir, "multimodal", name)
    if acc is None:
      acc = clevr.evaluate(steps.make_predict(loaded.model), loaded.params, test, mesh,
                           config.multimodal.eval_batch)[0]
      acc = {g: acc[g] for g in ("non-relational", "relational", "all")}
    rows.append(measure(config, "multimodal", name, os.path.join(out_root, name), loaded,
                        lambda: loaded.predict(**first), lambda: loaded.predict(**inputs), acc))
  return rows


# --- ProtoNet -------------------------------------------------------------------------------
def finetune_pruned_protonet(config, trained, masks, source: str):
  """`prune.protonet_steps` meta-steps of the run's own episodes (training split), masked."""
  src_cfg = runlog.read_config(source)
  e = src_cfg.episodes
  tx = optax.chain(prune.keep_masked(masks), optax.adam(config.prune.learning_rate),
                   prune.keep_masked(masks))
  learner = dataclasses.replace(trained.learner, optimizer=tx)
  ds = datasets.load(src_cfg.data.name, src_cfg.data.data_dir)
  sample = sampler(ds, "train", EpisodeSpec(e.ways, e.shots, e.queries, src_cfg.train.meta_batch,
                                            bool(e.rotations)))
  params = prune.apply_masks(trained.state.params, masks)
  state = TrainState.create(params, tx, trained.state.model_state)
  step = jax.jit(learner.train_step, donate_argnums=0)
  key = jax.random.key(config.seed)
  bar = runlog.progress(config.prune.protonet_steps, desc="pruned fine-tune")
  for s in range(config.prune.protonet_steps):
    k = jax.random.fold_in(key, s)
    state, _ = step(state, sample(k), k)
    bar.update(1)
  bar.close()
  return state.params, state.model_state


def compress_protonet(config, workdir: str, source: str) -> list[dict]:
  full = saved.load_trained(source)
  ds = datasets.load(runlog.read_config(source).data.name, full.data_dir)
  p = config.protonet
  test = ds.splits["test"]
  rng = np.random.default_rng(config.seed)
  classes = rng.choice(test.shape[0], p.ways, replace=False)
  support_x = test[classes, 0]
  support_y = np.arange(p.ways)
  query_x = test[rng.choice(test.shape[0], config.latency.batch), 1]
  out_root = os.path.join(workdir, "protonet")
  state = full.state

  def pruned():
    masks = prune.magnitude_masks(state.params, config.prune.sparsity, config.prune.scope)
    if config.prune.protonet_steps:
      return finetune_pruned_protonet(config, full, masks, source)
    return prune.apply_masks(state.params, masks), state.model_state

  exports = {"full": lambda: (state.params, state.model_state),
             "int8": lambda: (state.params, state.model_state), "pruned": pruned}
  rows = []
  for name, make in exports.items():
    loaded = export_variant(config, os.path.join(out_root, name), source, name, make,
                            with_state=True)
    acc = cached_accuracy(workdir, "protonet", name)
    if acc is None:
      mean, ci = loaded.evaluate(ds.name, ways=p.ways, shots=p.shots, queries=p.queries,
                                 episodes=p.episodes, seed=config.seed)["accuracy"]
      acc = {f"{p.ways}-way {p.shots}-shot": mean, "ci95": ci}
    # Timed on one jitted `learner.predict` (what `TrainedLearner.predict` runs): that
    # method jits anew on every call, so through it each call would time a compile.
    fn, st = jax.jit(loaded.learner.predict), loaded.state
    sx, sy, qx = support_x / np.float32(255), support_y, query_x / np.float32(255)
    assert np.allclose(np.asarray(fn(st, sx, sy, qx)), loaded.predict(support_x, support_y,
                                                                         query_x))
    rows.append(measure(config, "protonet", name, os.path.join(out_root, name), loaded,
                        lambda: fn(st, sx, sy, qx[:1]), lambda: fn(st, sx, sy, qx), acc))
  return rows


# --- shared -----------------------------------------------------------------------------------
def export_variant(config, out_dir: str, source: str, name: str, make, with_state=False):
  """The compressed workdir `out_dir` of variant `name` (written from `make()` unless it
  is already there), loaded back through `metajax.load_trained`."""
  if not os.path.isfile(os.path.join(out_dir, saved.MODEL_FILE)):
    runlog.say(f"compress: {name} -> {out_dir}")
    made = make()
    params, model_state = made if with_state else (made, {})
    extra = {"sparsity": config.prune.sparsity, "scope": config.prune.scope} \
        if name == "pruned" else {}
    csaved.export(source, out_dir, jax.device_get(params), jax.device_get(model_state),
                  STORAGE[name], variant=name, **extra)
  return saved.load_trained(out_dir)


def cached_accuracy(workdir: str, model: str, name: str) -> dict | None:
  """The accuracy an earlier run of this workdir measured for variant `name` (its weights
  are the ones in the workdir, its evaluation deterministic), else None."""
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    rows = json.load(f).get("rows", [])
  return next((r["accuracy"] for r in rows if (r["model"], r["variant"]) == (model, name)), None)


def measure(config, model: str, name: str, out_dir: str, loaded, one, many,
            accuracy: dict) -> dict:
  r, b = config.latency.repeats, config.latency.batch
  params = loaded.params if hasattr(loaded, "params") else loaded.state.params
  row = {"model": model, "variant": name, "dir": out_dir,
         "bytes": os.path.getsize(os.path.join(out_dir, csaved.WEIGHTS)),
         "array_bytes": int(sum(a.nbytes for a in qz.load_weights(
             os.path.join(out_dir, csaved.WEIGHTS)).values())),
         "params": int(sum(x.size for x in jax.tree.leaves(params))),
         "nonzero": count_nonzero(params),
         "latency_b1_ms": 1e3 * median_latency(one, r),
         f"latency_b{b}_ms_per_example": 1e3 * median_latency(many, r) / b,
         "accuracy": accuracy}
  runlog.say(f"compress: {model} {name}: {row['bytes']:,} bytes, {row['nonzero']:,} nonzero "
             f"params, accuracy {accuracy}")
  return row


def run(config, workdir: str) -> dict[str, Any]:
  """Compresses the configured models; writes report.md and results.json."""
  check_config(config)
  runlog.check_workdir(workdir)
  runlog.prepare_workdir(workdir, config)
  m, p = config.multimodal, config.protonet
  source, pn_source = m.source, p.source
  if not source:  # tiny mode: trained here
    source = os.path.join(workdir, "sources", "multimodal")
    clevr.run(m.source_run, source)
  if not pn_source:
    pn_source = os.path.join(workdir, "sources", "protonet")
    from metajax.experiments import fewshot
    fewshot.run(p.source_run, pn_source)
  mesh = parallel.make_mesh()
  rows = compress_multimodal(config, workdir, source, m.distilled, mesh)
  rows += compress_protonet(config, workdir, pn_source)
  results = {"rows": rows, "sources": {"multimodal": source, "distilled": m.distilled,
                                       "protonet": pn_source}}
  path = report.write_report(config, workdir, results)
  return {"report": path, **results}
