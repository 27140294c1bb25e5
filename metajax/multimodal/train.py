"""Sort-of-CLEVR training and evaluation of the multimodal transformer (`experiment='multimodal'`).

Sections: validation -> data -> mesh -> model and optimizer -> step -> checkpoint/resume ->
loop with periodic evals -> late-fusion baseline -> test-set evals (ablations, robustness)
-> few-shot ProtoNet on fused embeddings -> report.md.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from typing import Any

import flax.struct
import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import optax

from metajax import checkpoint, parallel, report, runlog
from metajax.data import sort_of_clevr as soc
from metajax.errors import ConfigError, require_in, require_positive
from metajax.multimodal import fewshot
from metajax.multimodal.model import (MODALITIES, ModelConfig, MultimodalTransformer,
                                      check_values, example_batch)
from metajax.multimodal.tokenize import encode, load_tokenizer, train_tokenizer

TARGET = 0.95  # the accuracy target, on relational and non-relational questions
GROUPS = ("non-relational", "relational", "table", "image+table")
# Test-time modality subsets: name -> present (image, text, table).
SUBSETS = {"image+text+table": (1, 1, 1), "image+text": (1, 1, 0), "text+table": (0, 1, 1),
           "text only": (0, 1, 0), "image only": (1, 0, 0), "image+table": (1, 0, 1)}
PUBLISHED = [  # Santoro et al. 2017, Sort-of-CLEVR, as stated in the paper's text
    ("CNN+MLP (published)", "> 94 (\"reached this performance\")", "63"),
    ("CNN+RN (published)", "> 94", "> 94")]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


# --- validation: every check before any expensive work ------------------------------------
def validate(config) -> None:
  require_positive(config, "data.num_train", "data.num_test", "model.dim", "model.depth",
                   "model.heads", "model.mlp_dim", "model.patch", "model.max_text_len",
                   "train.steps", "train.batch_size", "train.learning_rate", "train.log_every",
                   "train.eval_every", "train.checkpoint_every", "train.eval_questions",
                   "eval.batch_size")
  require_positive(config, "data.num_val", "train.stop_at", allow_zero=True)
  if config.train.stop_at > 1:
    raise ConfigError("train.stop_at", config.train.stop_at, "a validation accuracy",
                      "0 (train all train.steps) or a fraction in (0, 1]")
  if config.train.stop_at and not config.data.num_val:
    raise ConfigError("train.stop_at", config.train.stop_at,
                      "stopping needs a validation split, never the test set",
                      "data.num_val >= 1, or train.stop_at=0")
  require_positive(config, "train.warmup_steps", "train.weight_decay", "train.regression_weight",
                   "train.colour_curriculum", "fewshot.episodes", allow_zero=True)
  for key in ("late_fusion_steps", "ablation_steps"):
    if config.compare[key] < -1:
      raise ConfigError(f"compare.{key}", config.compare[key], "a step budget",
                        "-1 (as many as the main model trained), 0 (skip), >= 1")
  trainable = [n for n in SUBSETS if n != "image+text+table"]
  for name in config.compare.ablations:
    require_in("compare.ablations", name, trainable)
  if len(set(config.compare.ablations)) < len(config.compare.ablations):
    raise ConfigError("compare.ablations", tuple(config.compare.ablations),
                      "names a modality subset twice", "each of " + ", ".join(trainable) +
                      " at most once")
  if not 0 <= config.data.table_rows <= len(soc.COLOURS):
    raise ConfigError("data.table_rows", config.data.table_rows, "a scene has 6 objects", "0..6")
  for m in MODALITIES:
    p = config.train.drop[m]
    if not 0.0 <= p < 1.0:
      raise ConfigError(f"train.drop.{m}", p, "a drop probability", "0 <= p < 1")
  require_in("model.fusion", config.model.fusion, ("early", "late"))
  require_in("model.stem", config.model.stem, ("conv", "patch"))
  require_in("train.schedule", config.train.schedule, ("constant", "cosine", "wsd"))
  if config.train.schedule == "wsd" and not 0 < config.train.decay_fraction < 1:
    raise ConfigError("train.decay_fraction", config.train.decay_fraction,
                      "the 'wsd' schedule decays over this fraction of train.steps",
                      "a fraction in (0, 1), e.g. 0.2")
  require_in("model.dtype", config.model.dtype, ("float32", "bfloat16"))
  n = jax.device_count()
  if config.train.batch_size % n:
    raise ConfigError("train.batch_size", config.train.batch_size,
                      f"must split evenly over the {n} devices of the data mesh",
                      f"a multiple of {n}")
  r = config.train.questions_per_image
  per_image = soc.questions_per_image(config.data.table_rows)
  if not 1 <= r <= per_image:
    raise ConfigError("train.questions_per_image", r,
                      f"each Sort-of-CLEVR image has {per_image} questions", f"1..{per_image}")
  if config.train.batch_size % (r * n):
    raise ConfigError("train.batch_size", config.train.batch_size,
                      f"must hold whole images ({r} questions each) split evenly over {n} "
                      "device(s)", f"a multiple of {r * n}")
  if config.train.batch_size // r > config.data.num_train:
    raise ConfigError("train.batch_size", config.train.batch_size,
                      f"needs {config.train.batch_size // r} images per step, more than "
                      f"data.num_train={config.data.num_train}",
                      f"<= {config.data.num_train * r}")
  if config.model.tokenizer and not os.path.isdir(config.model.tokenizer):
    raise ConfigError("model.tokenizer", config.model.tokenizer, "no tokenizer directory there",
                      "'' (train one on the questions) or a save_pretrained directory")
  model_config(config, vocab_size=1).validate()
  if config.fewshot.episodes:
    for k in ("ways", "shots", "queries"):
      require_positive(config, f"fewshot.{k}")
    if config.fewshot.ways > len(soc.COLOURS):
      raise ConfigError("fewshot.ways", config.fewshot.ways, "there are 6 colour classes", "1..6")


def model_config(config, vocab_size: int, fusion: str | None = None) -> ModelConfig:
  m = config.model
  return ModelConfig(
      image_shape=(soc.IMAGE_SIZE, soc.IMAGE_SIZE, 3), stem=m.stem,
      stem_channels=tuple(m.stem_channels), image_queries=m.image_queries,
      image_pos=m.image_pos, image_depth=m.image_depth, image_merge=m.image_merge,
      text_condition=m.text_condition, patch=m.patch, vocab_size=vocab_size,
      max_text_len=m.max_text_len,
      table_categorical=tuple(len(v) for v in soc.TABLE_CATEGORICAL.values()),
      table_numeric=len(soc.TABLE_NUMERIC), table_rows=config.data.table_rows, dim=m.dim,
      depth=m.depth, heads=m.heads, mlp_dim=m.mlp_dim, num_classes=len(soc.ANSWERS),
      num_regression=2, fusion=fusion or m.fusion, dtype=m.dtype)


# --- data: scenes, tokenized questions, host-side batches --------------------------------
class Split:
  """A split as flat numpy arrays; `batch(idx)` gathers the model inputs of questions `idx`."""

  def __init__(self, d: dict[str, np.ndarray], ids: np.ndarray, mask: np.ndarray):
    self.d, self.ids, self.mask = d, ids, mask
    offs = np.array([o for o, _ in soc.TABLE_NUMERIC.values()], np.float32)
    scale = np.array([s for _, s in soc.TABLE_NUMERIC.values()], np.float32)
    self.table_num = (d["table_num"] - offs) / scale
    self.size = len(d["q_answer"])
    self.group = np.array([GROUPS.index(soc.GROUP[soc.FAMILIES[f]]) for f in d["q_family"]])
    img = d["q_image"]
    self.target_xy = (d["centres"][img, d["q_target"]] / soc.IMAGE_SIZE).astype(np.float32)

    # Questions of each image, [images, questions per image] (every image has as many).
    order = np.argsort(d["q_image"], kind="stable")
    self.by_image = order.reshape(len(d["images"]), -1)

  def batch(self, idx: np.ndarray, per_image: int = 1) -> dict[str, np.ndarray]:
    """Inputs of questions `idx`; with `per_image` = r, idx holds r consecutive questions of
    each image, and images and tables come once per r questions (the model shares them)."""
    img = self.d["q_image"][idx][::per_image]
    return {"image": self.d["images"][img], "text": self.ids[idx], "text_mask": self.mask[idx],
            "table_cat": self.d["table_cat"][img], "table_num": self.table_num[img],
            "table_mask": self.d["table_mask"][img], "answer": self.d["q_answer"][idx],
            "target_xy": self.target_xy[idx]}


def load_data(config, workdir: str):
  splits = soc.load(config.data.data_dir, config.data.num_train, config.data.num_test,
                    config.seed, config.data.table_rows, config.data.num_val)
  tok_dir = config.model.tokenizer or os.path.join(workdir, "tokenizer")
  if os.path.isdir(tok_dir):
    tok = load_tokenizer(tok_dir)
  else:  # trained on the training questions only; saved with the run
    tok = train_tokenizer(sorted(set(splits["train"]["q_text"].tolist())),
                          config.model.vocab_size, tok_dir if runlog.jax.process_index() == 0 else "")
  out = {}
  for name, d in splits.items():
    ids, mask = encode(tok, d["q_text"].tolist(), config.model.max_text_len,
                       config.model.truncate_text)
    out[name] = Split(d, ids, mask)
  return out, tok


def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n)


def train_indices(seed: int, step: int, batch: int, n: int) -> np.ndarray:
  """Question indices of `step`: a deterministic function of (seed, step), so a resumed run
  sees exactly the batches an uninterrupted one would."""
  per_epoch = n // batch
  epoch, pos = divmod(step, per_epoch)
  return _epoch_order(seed, epoch, n)[pos * batch:(pos + 1) * batch]


def scene_indices(seed: int, step: int, batch: int, per_image: int,
                  by_image: np.ndarray) -> np.ndarray:
  """Question indices of `step` in groups of `per_image` questions of one image (images in a
  per-epoch shuffled order, questions drawn without replacement); a function of (seed, step)."""
  if per_image == 1:
    return train_indices(seed, step, batch, by_image.size)
  images = batch // per_image
  epoch, pos = divmod(step, len(by_image) // images)
  img = _epoch_order(seed, epoch, len(by_image))[pos * images:(pos + 1) * images]
  rng = np.random.default_rng([seed, epoch, pos, 1])
  pick = np.argsort(rng.random((images, by_image.shape[1])), axis=1)[:, :per_image]
  return np.take_along_axis(by_image[img], pick, axis=1).reshape(-1)


def colour_curriculum(q_colour: np.ndarray, step: int, steps_per_colour: int) -> np.ndarray:
  """Loss weights [Q]: 1 for questions about a colour in play at `step`, else 0. Colours
  enter one at a time, in `soc.COLOURS` order, every `steps_per_colour` steps (0: all)."""
  if not steps_per_colour:
    return np.ones(len(q_colour), np.float32)
  return (q_colour < step // steps_per_colour + 1).astype(np.float32)


# --- step ----------------------------------------------------------------------------------
INPUT_KEYS = ("image", "text", "text_mask", "table_cat", "table_num", "table_mask")
_KEYS_OF = {"image": ("image",), "text": ("text", "text_mask"),
            "table": ("table_cat", "table_num", "table_mask")}


def modality_keys(present=(1, 1, 1)) -> tuple[str, ...]:
  """The model-input keys of the modalities marked present, in (image, text, table) order."""
  return tuple(k for m, p in zip(MODALITIES, present) if p for k in _KEYS_OF[m])


def make_train_step(model, tx, drop: tuple[float, float, float], regression_weight: float,
                    keys: tuple[str, ...] = INPUT_KEYS, questions_per_scene: int = 1):
  """A jitted pure `(state, batch, key) -> (state, metrics)`; the state is donated. The model
  sees only the input `keys` of the batch (a modality left out is never computed); images
  and tables come once per `questions_per_scene` questions."""
  drop_p = jnp.array(drop)

  def loss_fn(params, batch, key):
    b = batch["answer"].shape[0]
    # Modality dropout: each example loses each modality with its own probability, so the
    # model learns to answer from whatever is present.
    present = jax.random.uniform(key, (b, len(MODALITIES))) >= drop_p
    out = model.apply({"params": params}, {**{k: batch[k] for k in keys}, "present": present},
                      questions_per_scene=questions_per_scene)
    w = batch["weight"]  # the colour curriculum's per-question loss weights
    mean = lambda x: (w * x).sum() / jnp.maximum(w.sum(), 1.0)
    ce = mean(optax.softmax_cross_entropy_with_integer_labels(out["logits"], batch["answer"]))
    reg = mean(((out["regression"] - batch["target_xy"]) ** 2).mean(-1))
    acc = mean(out["logits"].argmax(-1) == batch["answer"])
    return ce + regression_weight * reg, {"train/ce": ce, "train/regression_mse": reg,
                                          "train/accuracy": acc}

  def step(state: TrainState, batch, key):
    key = jax.random.fold_in(key, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"train/loss": loss, "train/grad_norm": optax.tree.norm(grads), **aux}
    return TrainState(state.step + 1, params, opt_state), metrics

  return jax.jit(step, donate_argnums=0)


def make_predict(model, keys: tuple[str, ...] = INPUT_KEYS):
  """`(params, batch, present [B, 3], questions_per_scene=1) -> (predicted answers [B],
  embeddings [B, D])`: the batch's values are checked on the host (check_values), then jitted."""
  @functools.partial(jax.jit, static_argnames="questions_per_scene")
  def run(params, batch, present, questions_per_scene=1):
    out = model.apply({"params": params}, {**{k: batch[k] for k in keys}, "present": present},
                      questions_per_scene=questions_per_scene)
    return out["logits"].argmax(-1), out["embedding"]

  def predict(params, batch, present, questions_per_scene=1):
    check_values(model.cfg, {k: batch[k] for k in keys})
    return run(params, batch, present, questions_per_scene=questions_per_scene)
  return predict


def evaluate(predict, params, split: Split, mesh, batch_size: int, present=(1, 1, 1),
             indices: np.ndarray | None = None, want_embeddings: bool = False):
  """Accuracy per question group (and overall) on `indices` of `split` with modalities `present`.

  Runs every question of each image touched at once, so image tokens are built once per
  image; batches hold a fixed number of images (one compile), the last one padded."""
  idx = np.arange(split.size) if indices is None else indices
  images = np.unique(split.d["q_image"][idx])
  per = split.by_image.shape[1]
  n_dev = mesh.devices.size
  chunk_images = max(n_dev, batch_size // per // n_dev * n_dev)
  pres = parallel.shard_batch(np.tile(np.array(present, bool), (chunk_images * per, 1)), mesh)
  pred, emb = np.zeros(split.size, np.int64), None
  for s in range(0, len(images), chunk_images):
    chunk = images[s:s + chunk_images]
    padded = np.concatenate([chunk, np.repeat(chunk[:1], chunk_images - len(chunk))])
    q = split.by_image[padded].reshape(-1)
    p, e = predict(params, parallel.shard_batch(split.batch(q, per), mesh), pres,
                   questions_per_scene=per)
    n = len(chunk) * per
    pred[q[:n]] = np.asarray(p)[:n]
    if want_embeddings:
      emb = np.zeros((split.size, e.shape[-1]), np.float32) if emb is None else emb
      emb[q[:n]] = np.asarray(e, np.float32)[:n]
  correct = pred[idx] == split.d["q_answer"][idx]
  group = split.group[idx]
  acc = {g: float(correct[group == i].mean()) if (group == i).any() else float("nan")
         for i, g in enumerate(GROUPS)}
  acc["all"] = float(correct.mean())
  family = split.d["q_family"][idx]
  acc.update({f"family/{f}": float(correct[family == i].mean())
              for i, f in enumerate(soc.FAMILIES) if (family == i).any()})
  return (acc, emb[idx]) if want_embeddings else acc


def lr_schedule(t, steps: int) -> optax.Schedule:
  """Linear warmup, then 'constant'; 'cosine' decay to 0 at `steps`; or 'wsd' (warmup-stable-
  decay): constant, then linear to 0 over the last `t.decay_fraction` of `steps`."""
  warmup = max(1, t.warmup_steps)
  if t.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, warmup,
                                              max(steps, t.warmup_steps + 1))
  parts = [optax.linear_schedule(0.0, t.learning_rate, warmup),
           optax.constant_schedule(t.learning_rate)]
  bounds = [warmup]
  if t.schedule == "wsd":
    decay = max(1, round(steps * t.get("decay_fraction", 0.0)))
    parts.append(optax.linear_schedule(t.learning_rate, 0.0, decay))
    bounds.append(max(warmup, steps - decay))
  return optax.join_schedules(parts, bounds)


def make_optimizer(config, steps: int) -> optax.GradientTransformation:
  """AdamW on `lr_schedule`, with global-norm clipping."""
  t = config.train
  return optax.chain(optax.clip_by_global_norm(t.clip_norm),
                     optax.adamw(lr_schedule(t, steps), weight_decay=t.weight_decay))


def same_lr_so_far(old_train, new_train, taken: int) -> bool:
  """Whether a run with `new_train` settings takes the `taken` steps already on disk exactly
  as the run with `old_train` did: as long, and the same learning rate at each of them."""
  if new_train.steps < taken:
    return False
  s = jnp.arange(taken)
  old = lr_schedule(old_train, old_train.steps)(s)
  return bool(jnp.array_equal(old, lr_schedule(new_train, new_train.steps)(s)))


def stop_at_kept(rows, stop_at: float, taken: int) -> bool:
  """Whether early stopping at `stop_at` (0: off) would not have ended the recorded run
  (metric `rows`) before the `taken` steps on disk, so resuming under it stays on track."""
  return not stop_at or _first_reaching([r for r in rows if r["step"] < taken], stop_at) is None


# --- one training run (used for the main model and the late-fusion baseline) --------------
def _train(config, workdir: str, data, mcfg: ModelConfig, steps: int, mesh, label: str,
           stop_at: float, modalities=(1, 1, 1)):
  """Trains `mcfg` for `steps` (fewer once validation reaches `stop_at`, 0: never) on the
  `modalities` marked (image, text, table); evaluates with those present."""
  t = config.train
  model = MultimodalTransformer(mcfg)
  params = model.init(jax.random.key(config.seed), example_batch(mcfg))["params"]
  tx = make_optimizer(config, steps)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  state = parallel.replicate(state, mesh)
  mngr = checkpoint.manager(workdir)
  state, restored = checkpoint.restore_or(mngr, state)
  start = int(restored or 0)
  if restored is not None:
    logging.info("%s: resumed from step %d", label, start)
  keys = modality_keys(modalities)
  step_fn = make_train_step(model, tx, tuple(t.drop[m] for m in MODALITIES),
                            t.regression_weight, keys, questions_per_scene=t.questions_per_image)
  predict = make_predict(model, keys)
  writer = runlog.MetricWriter(workdir, resume_step=start)
  prior = [r for r in runlog.read_metrics(workdir) if "time_s" in r]
  elapsed = prior[-1]["time_s"] if (prior and restored is not None) else 0.0
  train, held = data["train"], data.get("val", data["test"])
  eval_idx = np.random.default_rng(config.seed).permutation(held.size)[:t.eval_questions]
  key = jax.random.key(config.seed)
  if stop_at and _first_reaching(runlog.read_metrics(workdir), stop_at) is not None:
    logging.info("%s: already reached train.stop_at=%s at step %d", label, stop_at, start)
    steps = start
  bar = runlog.progress(steps, start, desc=label)
  tick, ticked_step = time.perf_counter(), start
  for step in range(start, steps):
    idx = scene_indices(config.seed, step, t.batch_size, t.questions_per_image, train.by_image)
    batch = parallel.shard_batch(
        {**train.batch(idx, t.questions_per_image),
         "weight": colour_curriculum(train.d["q_colour"][idx], step, t.colour_curriculum)},
        mesh)
    state, metrics = step_fn(state, batch, key)
    done = step + 1
    bar.update(1)
    if done % t.log_every == 0 or done == steps:
      metrics = jax.device_get(metrics)
      runlog.check_finite(done, metrics)
      now = time.perf_counter()
      elapsed += now - tick
      metrics["train/examples_per_s"] = (done - ticked_step) * t.batch_size / (now - tick)
      tick, ticked_step = now, done
      writer.write(done, {**metrics, "time_s": elapsed, "examples": done * t.batch_size})
    if done % t.eval_every == 0 or done == steps:
      t0 = time.perf_counter()
      acc = evaluate(predict, state.params, held, mesh, config.eval.batch_size,
                     present=modalities, indices=eval_idx)
      row = {f"eval/{g}": v for g, v in acc.items()}
      writer.write(done, row)
      tick += time.perf_counter() - t0  # evals are not training time
      if stop_at and _first_reaching([{"step": done, **row}], stop_at) is not None:
        logging.info("%s: validation reached train.stop_at=%s at step %d; stopping",
                     label, stop_at, done)
        checkpoint.save(mngr, done, state)
        break
    if done % t.checkpoint_every == 0 or done == steps:
      checkpoint.save(mngr, done, state)
  bar.close()
  mngr.wait_until_finished()
  writer.close()
  return state, model, predict


def _first_reaching(rows, target: float):
  for r in rows:
    if r.get("eval/relational", 0) >= target and r.get("eval/non-relational", 0) >= target:
      return r["step"]
  return None


# --- entry point ----------------------------------------------------------------------------
# Config keys added after runs were recorded, each with the value that reproduces the code
# from before it; such a run resumes with the key at that value.
ADDED_KEYS = {"model.image_depth": 0, "model.image_merge": 1}


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
  """Trains on Sort-of-CLEVR, evaluates ablations/robustness/few-shot, writes report.md.

  Returns {'report': path, 'accuracy': {subset: {group: acc}}, 'late_fusion': {...} or None,
  'fewshot': {...}, 'params': count}.
  """
  validate(config)
  # Baselines are trained after the main run in their own subdirectories (named by their
  # steps), so a finished run may be resumed with others.
  any_change = lambda old, new: True
  extendable = {"compare.ablations": any_change, "compare.ablation_steps": any_change,
                "compare.late_fusion_steps": any_change,
                "fewshot.episodes": any_change}  # evaluation only
  # The schedule and length may change where the steps already taken stay the same: a constant
  # run extended, stopped by hand at its checkpoint, or given a WSD cool-down.
  # So may early stopping, where it would not have stopped the run before its checkpoint.
  taken = lambda: checkpoint.manager(workdir).latest_step() or 0
  same_trajectory = lambda old, new: same_lr_so_far(
      ml_collections.ConfigDict(old["train"]), config.train, taken())
  extendable.update(dict.fromkeys(("train.steps", "train.schedule", "train.decay_fraction"),
                                  same_trajectory))
  extendable["train.stop_at"] = lambda old, new: stop_at_kept(
      runlog.read_metrics(workdir), config.train.stop_at, taken())
  resumed = runlog.prepare_workdir(workdir, config, extendable=extendable, added=ADDED_KEYS)
  logging.info("multimodal: %s workdir %s", "resuming" if resumed else "new", workdir)
  mesh = parallel.make_mesh()
  data, tok = load_data(config, workdir)
  if config.fewshot.episodes:
    fewshot.check(config, data["test"])
  mcfg = model_config(config, tok.vocab_size)
  state, model, predict = _train(config, workdir, data, mcfg, config.train.steps, mesh,
                                 f"{mcfg.fusion} fusion", stop_at=config.train.stop_at)
  test = data["test"]
  bs = config.eval.batch_size
  accuracy = {name: evaluate(predict, state.params, test, mesh, bs, present=p)
              for name, p in SUBSETS.items()}
  trained = int(state.step)
  late = None
  if config.compare.late_fusion_steps:
    other = "late" if mcfg.fusion == "early" else "early"
    lsteps = trained if config.compare.late_fusion_steps < 0 else config.compare.late_fusion_steps
    ldir = os.path.join(workdir, f"{other}_fusion_{lsteps}")
    os.makedirs(ldir, exist_ok=True)
    lcfg = model_config(config, tok.vocab_size, fusion=other)
    lstate, _, lpredict = _train(config, ldir, data, lcfg, lsteps, mesh, f"{other} fusion",
                                 stop_at=0.0)  # the baseline trains exactly its budget
    late = {"fusion": other, "steps": lsteps,
            "accuracy": {n: evaluate(lpredict, lstate.params, test, mesh, bs, present=p)
                         for n, p in SUBSETS.items() if n in ("image+text+table", "image+text")},
            "rows": runlog.read_metrics(ldir)}
  ablations = []
  for name in config.compare.ablations:  # separately trained on a subset of the modalities
    asteps = trained if config.compare.ablation_steps < 0 else config.compare.ablation_steps
    if not asteps:
      break
    adir = os.path.join(workdir, f"ablation_{name.replace(' ', '_')}_{asteps}")
    os.makedirs(adir, exist_ok=True)
    astate, _, apredict = _train(config, adir, data, mcfg, asteps, mesh, f"trained on {name}",
                                 stop_at=0.0, modalities=SUBSETS[name])
    ablations.append({"trained on": name, "steps": asteps, "accuracy": evaluate(
        apredict, astate.params, test, mesh, bs, present=SUBSETS[name])})
  fs = None
  if config.fewshot.episodes:
    fs = fewshot.evaluate_closest_colour(config, mcfg, model, state.params, predict, test, mesh)
  n_params = sum(x.size for x in jax.tree.leaves(state.params))
  path = write_report(config, workdir, mcfg, accuracy, late, fs, n_params, ablations)
  return {"report": path, "accuracy": accuracy, "late_fusion": late and late["accuracy"],
          "ablations": ablations, "fewshot": fs, "params": int(n_params)}


def write_report(config, workdir, mcfg, accuracy, late, fs, n_params, ablations=()) -> str:
  rows = runlog.read_metrics(workdir)
  pct = lambda v: f"{100 * v:.1f}"
  full = accuracy["image+text+table"]
  t = config.train
  last_time = [r for r in rows if "time_s" in r]
  secs = last_time[-1]["time_s"] if last_time else float("nan")
  reach = _first_reaching(rows, TARGET)
  trained = max([r["step"] for r in rows if "train/loss" in r], default=0)
  lines = [f"# Multimodal transformer on Sort-of-CLEVR ({mcfg.fusion} fusion)", "",
           f"{config.data.num_train} training images ({data_desc(config)}); test: "
           f"{config.data.num_test} images; validation (periodic evals, early stopping): "
           f"{config.data.num_val} images. Model: dim {mcfg.dim}, depth {mcfg.depth} (+ "
           f"{mcfg.image_depth} image-only blocks per scene), heads "
           f"{mcfg.heads}, {stem_desc(mcfg)}, {mcfg.image_pos} image positions, "
           f"text-conditioned tokens: {mcfg.text_condition}; {n_params:,} parameters, "
           f"{mcfg.dtype}. {trained:,} steps (of at most {t.steps:,}) x batch {t.batch_size} "
           f"({t.questions_per_image} questions per image) = {trained * t.batch_size:,} "
           f"examples, {secs:.0f} s of training on {jax.device_count()} "
           f"{jax.devices()[0].platform} device(s). Modality dropout in training: "
           f"{dict(t.drop)}; auxiliary regression (x, y of the object the answer is about) "
           f"loss weight {t.regression_weight}; colour curriculum: " +
           (f"one more question colour every {t.colour_curriculum} steps." if t.colour_curriculum
            else "off."), "",
           "## Accuracy (%) beside the published Relation Network results", "",
           report.md_table(["model", "non-relational", "relational"],
                           [list(r) for r in PUBLISHED] +
                           [[f"this run, {mcfg.fusion} fusion, all modalities",
                             pct(full["non-relational"]), pct(full["relational"])]] +
                           ([[f"this run, {late['fusion']} fusion ({late['steps']} steps)",
                              pct(late["accuracy"]["image+text+table"]["non-relational"]),
                              pct(late["accuracy"]["image+text+table"]["relational"])]]
                            if late else [])), "",
           f"Target (>= {100 * TARGET:.0f}% on both): " + (
               f"the validation split first reached it at step {reach} "
               f"({reach * t.batch_size:,} examples, {_time_at(rows, reach):.0f} s of training)."
               if reach else "the validation split did not reach it in this run."), "",
           "## Modality ablations and robustness (test-time subsets, %)", "",
           "One model trained with all three modalities and modality dropout, evaluated with "
           "modalities removed at test time. 'table' questions ask a weight listed only in the "
           "table; 'image+table' ones need both.", "",
           report.md_table(["present at test"] + list(GROUPS) + ["all"],
                           [[n] + [pct(a[g]) for g in GROUPS + ("all",)]
                            for n, a in accuracy.items()])]
  families = [f for f in soc.FAMILIES if f"family/{f}" in full]
  lines += ["", "## Accuracy per question family (test set, %)", "",
            "Relational: closest, furthest, count; table: heavy; image+table: closest_heavy.", "",
            report.md_table(["present at test"] + families,
                            [[n] + [pct(a[f"family/{f}"]) for f in families]
                             for n, a in accuracy.items()])]
  if late:
    lines += ["", f"## Early vs late fusion (same encoder size, {late['steps']} steps each)", "",
              report.md_table(
                  ["model", "present"] + list(GROUPS) + ["all"],
                  [[f"{late['fusion']} fusion", n] + [pct(a[g]) for g in GROUPS + ("all",)]
                   for n, a in late["accuracy"].items()] +
                  [[f"{mcfg.fusion} fusion at step {late['steps']} (validation split)", "all"] +
                   [pct(r[f"eval/{g}"]) if r else "-" for g in GROUPS + ("all",)]
                   for r in [_row_at(rows, late["steps"])]])]
  if ablations:
    steps = sorted({a["steps"] for a in ablations})
    main_row = _row_at(rows, steps[0]) if len(steps) == 1 else None
    lines += ["", f"## Separately trained ablations ({', '.join(map(str, steps))} steps, test "
              "set, %)", "",
              "The same model and recipe trained and evaluated on a subset of the modalities "
              "(the others never given to it).", "",
              report.md_table(
                  ["trained on", "steps"] + list(GROUPS) + ["all"],
                  [[a["trained on"], a["steps"]] + [pct(a["accuracy"][g]) for g in GROUPS + ("all",)]
                   for a in ablations] +
                  ([["image+text+table (this run, validation split)", steps[0]] +
                    [pct(main_row[f"eval/{g}"]) for g in GROUPS + ("all",)]] if main_row else []))]
  if fs:
    lines += ["", "## Few-shot on fused embeddings (ProtoNet head)", "", fs["description"], "",
              report.md_table(["embedding", "shots", "accuracy (%)", "95% CI"],
                              [[e, k, pct(m), pct(c)] for (e, k), (m, c) in fs["results"].items()])]
  curves = {g: [(r["step"], r[f"eval/{g}"]) for r in rows if f"eval/{g}" in r] for g in GROUPS}
  lines += ["", "## Curves", "",
            f"![accuracy]({report.plot_curves(os.path.join(workdir, 'accuracy.png'), curves, ylabel='eval accuracy')})",
            f"![loss]({report.plot_curves(os.path.join(workdir, 'loss.png'), {'train loss': [(r['step'], r['train/loss']) for r in rows if 'train/loss' in r]}, ylabel='loss', logy=True)})"]
  path = os.path.join(workdir, "report.md")
  if jax.process_index() == 0:
    runlog.atomic_write(path, "\n".join(lines) + "\n")
    runlog.atomic_write(os.path.join(workdir, "results.json"), json.dumps(
        {"accuracy": accuracy, "late_fusion": late and late["accuracy"], "ablations": ablations,
         "fewshot": fs and {f"{e}/{k}": v for (e, k), v in fs["results"].items()},
         "params": int(n_params), "train_seconds": secs, "target_step": reach}, indent=2))
  return path


def stem_desc(mcfg: ModelConfig) -> str:
  if mcfg.stem == "patch":
    grid = f"{mcfg.patch}x{mcfg.patch} patches"
  else:
    grid = f"conv stem {tuple(mcfg.stem_channels)}"
  pooled = f" pooled by {mcfg.image_queries} learned queries" if mcfg.image_queries else ""
  if mcfg.image_merge > 1:
    pooled += f", {mcfg.image_merge}x{mcfg.image_merge} cells merged"
  return f"{grid}{pooled} ({mcfg.num_patches} image tokens)"


def _time_at(rows, step) -> float:
  t = [r["time_s"] for r in rows if "time_s" in r and r["step"] <= step]
  return t[-1] if t else float("nan")


def data_desc(config) -> str:
  return (f"10 non-relational + 10 relational + 2 table questions per image; table lists "
          f"{config.data.table_rows} of 6 objects")


def _row_at(rows, step):
  hits = [r for r in rows if r["step"] == step and "eval/all" in r]
  return hits[-1] if hits else None


def load_trained(workdir: str):
  """(model bound to its params, preprocessor) of the run in `workdir`, at its latest checkpoint.

  >>> model, pre = load_trained('/tmp/mm_soc')
  >>> batch = pre(images=imgs, texts=['is the red object heavy?'] * len(imgs), tables=rows)
  >>> answers = [ANSWERS[i] for i in model(batch)['logits'].argmax(-1)]
  """
  from metajax.multimodal.inputs import Preprocessor, TableSchema
  with open(os.path.join(workdir, runlog.CONFIG_FILE)) as f:
    config = ml_collections.ConfigDict(json.load(f))
  tok = load_tokenizer(config.model.tokenizer or os.path.join(workdir, "tokenizer"))
  mcfg = model_config(config, tok.vocab_size)
  model = MultimodalTransformer(mcfg)
  params = model.init(jax.random.key(0), example_batch(mcfg))["params"]
  tx = make_optimizer(config, config.train.steps)
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  state, step = checkpoint.restore_or(checkpoint.manager(workdir), state)
  if step is None:
    raise ConfigError("workdir", workdir, "holds no checkpoint", "the workdir of a finished run")
  schema = TableSchema(soc.TABLE_CATEGORICAL, soc.TABLE_NUMERIC, config.data.table_rows)
  pre = Preprocessor((soc.IMAGE_SIZE, soc.IMAGE_SIZE, 3), tok, config.model.max_text_len,
                     schema, config.model.truncate_text)
  return model.bind({"params": state.params}), pre
