"""Few-shot on the Sort-of-CLEVR multimodal model: name the colour of the closest object.

The task: for the test split's 'closest' questions ("what shape is the object closest to
the red object?"), N-way K-shot episodes whose classes are the colour of that closest
object (a colour is never a training answer). Three embeddings are compared with a
ProtoNet on the same held-out episodes (configs eval.fewshot.*):

  trained, random init: the frozen fused embedding of the trained model / of a fresh init.
  episodic head: `metajax.multimodal.episodic_head` (the last encoder blocks fine-tuned
      with the ProtoNet loss), meta-trained on classes disjoint from every test class:
      'closest' questions of the training split whose closest object is repainted in one of
      `head.colours` synthetic colours, each at least `head.min_distance` (RGB) from all six
      Sort-of-CLEVR colours and the white background. The six real colours, which the test
      episodes use, never label a meta-training example.

`fewshot_eval` is the Sort-of-CLEVR driver's few-shot evaluation; `run` computes it from a
finished run's workdir (configs/multimodal_fewshot.py) without retraining the model, and
writes its own report.md and results.json.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from metajax import report, runlog
from metajax.data import sort_of_clevr as soc
from metajax.data.episodes import EpisodeSpec
from metajax.errors import ConfigError, require_positive
from metajax.multimodal import episodic_head, fewshot
from metajax.multimodal.model import example_batch

WHITE = (255, 255, 255)


def closest_questions(d: dict) -> tuple[np.ndarray, np.ndarray]:
  """Indices of the 'closest' questions of split `d` and the colour of each closest object."""
  idx = np.flatnonzero(d["q_family"] == soc.FAMILIES.index("closest"))
  return idx, d["q_target"][idx]


def check(fs, model_cfg, prefix: str = "eval.fewshot.") -> None:
  """ConfigError naming the key for eval.fewshot settings that cannot run (nothing computed)."""
  if not fs.episodes:
    return
  for key in ("ways", "shots", "queries"):
    if fs[key] <= 0:
      raise ConfigError(prefix + key, fs[key], "must be positive", ">= 1")
  if fs.ways > len(soc.COLOURS):
    raise ConfigError(prefix + "ways", fs.ways, "there are 6 colour classes", "1..6")
  h = fs.head
  if h.steps:
    episodic_head.check(h, model_cfg, prefix + "head.")
    if h.colours < fs.ways:
      raise ConfigError(prefix + "head.colours", h.colours,
                        f"meta-training episodes are {fs.ways}-way", f">= {fs.ways}")
    if fs.shots + fs.queries > h.examples_per_class:
      raise ConfigError(prefix + "head.examples_per_class", h.examples_per_class,
                        "each meta-training class must hold shots + queries examples",
                        f">= {fs.shots + fs.queries}")
    palette(h.colours, h.min_distance, prefix + "head.")  # fails fast when none fit


def palette(n: int, min_distance: float, prefix: str = "eval.fewshot.head.",
            seed: int = 0) -> np.ndarray:
  """[n, 3] uint8 synthetic colours, each >= `min_distance` (RGB) from the six Sort-of-CLEVR
  colours, from white and from each other (half of it); ConfigError when they do not fit."""
  rng = np.random.default_rng(seed)
  taken = [np.asarray(c, float) for c in list(soc.RGB) + [WHITE]]
  out: list[np.ndarray] = []
  for _ in range(200 * n):
    c = rng.integers(0, 256, 3).astype(float)
    if (min(np.linalg.norm(c - t) for t in taken) >= min_distance
        and all(np.linalg.norm(c - o) >= min_distance / 2 for o in out)):
      out.append(c)
      if len(out) == n:
        return np.asarray(out, np.uint8)
  raise ConfigError(prefix + "colours", n, f"only {len(out)} colours lie {min_distance} "
                    "from the real ones and apart", f"fewer colours or a smaller "
                    f"{prefix}min_distance")


def _features(model, params, split: soc.Split, idx, tune_blocks: int, batch_size: int,
              colours: np.ndarray | None = None) -> np.ndarray:
  """Head features of questions `idx` of `split`; with `colours` [len(idx), 3], each
  question's closest object is repainted in its colour first."""
  out = []
  for s in range(0, len(idx), batch_size):
    part = idx[s:s + batch_size]
    batch = split.batch(part)
    if colours is not None:
      img = batch["image"].copy()
      target = soc.RGB[split.d["q_target"][part]]                        # [b, 3]
      mask = (img == target[:, None, None]).all(-1)                       # [b, H, W]
      img[mask] = np.repeat(colours[s:s + batch_size], mask.sum((1, 2)), 0)
      batch["image"] = img
    out.append(np.asarray(episodic_head.features(model, params, batch, tune_blocks)))
  return np.concatenate(out)


def head_dir(root: str, head_cfg) -> str:
  """`root`/fewshot_head_<steps>_<hash of the head settings>: a changed setting trains anew."""
  key = json.dumps(head_cfg.to_dict(), sort_keys=True)
  return os.path.join(root, f"fewshot_head_{head_cfg.steps}_"
                      f"{hashlib.sha256(key.encode()).hexdigest()[:8]}")


def fewshot_eval(config, model, params, train: soc.Split, test: soc.Split, workdir: str):
  """{(embedding, shots): (mean, ci95)} of `config.eval.fewshot`-way episodes on `test`'s
  closest-object colours for the frozen trained and random-init embeddings and the episodic
  head (meta-trained in `head_dir(workdir, ...)`, resumable); None when switched off."""
  fs = config.eval.fewshot
  if not fs.episodes:
    return None
  bs = config.eval.batch_size
  idx, labels = closest_questions(test.d)
  m = min(int((labels == c).sum()) for c in range(len(soc.COLOURS)))
  order = np.concatenate([idx[labels == c][:m] for c in range(len(soc.COLOURS))])
  key, shots = jax.random.key(config.seed), sorted({1, fs.shots})
  fresh = model.init(jax.random.key(config.seed + 1), example_batch(model.cfg))["params"]
  out = {}
  for name, p in (("trained", params), ("random init", fresh)):
    emb = _features(model, p, test, order, 0, bs).reshape(len(soc.COLOURS), m, -1)
    for k in shots:
      acc = fewshot.episode_accuracy(key, jnp.asarray(emb),
                                     EpisodeSpec(fs.ways, k, fs.queries, fs.episodes))
      out[(name, k)] = report.mean_ci95(np.asarray(acc))
  h = fs.head
  if not h.steps:
    return out
  # Meta-training classes: synthetic colours painted on the closest object of training
  # questions (disjoint from the six test colours).
  colours = palette(h.colours, h.min_distance)
  tidx, _ = closest_questions(train.d)
  rng = np.random.default_rng(config.seed)
  pick = rng.choice(tidx, h.colours * h.examples_per_class, replace=False)
  runlog.say(f"few-shot: episodic head, features of {len(pick)} repainted training questions")
  x = _features(model, params, train, pick, h.tune_blocks, bs,
                np.repeat(colours, h.examples_per_class, 0))
  x = x.reshape((h.colours, h.examples_per_class) + x.shape[1:])
  head, state = episodic_head.train_head(h, model.cfg, params, x, fs.ways, fs.shots, fs.queries,
                                         head_dir(workdir, h), config.seed)
  test_x = _features(model, params, test, order, h.tune_blocks, bs)
  test_x = test_x.reshape((len(soc.COLOURS), m) + test_x.shape[1:])
  for k in shots:
    acc = episodic_head.accuracy(head, state.params, test_x,
                                 EpisodeSpec(fs.ways, k, fs.queries, fs.episodes), key)
    out[("episodic head", k)] = report.mean_ci95(acc)
  return out


def table(fs, results) -> list[str]:
  """The report's few-shot section (markdown lines)."""
  h = fs.head
  rows = [[e, k, f"{100 * m:.1f}", f"{100 * c:.1f}"] for (e, k), (m, c) in results.items()]
  rows.append(["chance", "any", f"{100 / fs.ways:.1f}", ""])
  return ["## Few-shot: colour of the closest object (ProtoNet)", "",
          f"{fs.ways}-way K-shot, {fs.queries} queries per class, {fs.episodes} episodes over "
          "the test 'closest' questions, classes the colour of the closest object (never a "
          "training answer). trained / random init: frozen fused embeddings. episodic head: "
          f"the last {h.tune_blocks} encoder block(s) fine-tuned with the ProtoNet loss for "
          f"{h.steps} steps ({h.meta_batch} episodes each) on {h.colours} synthetic colours "
          "painted on training scenes, none of them a test class.", "",
          report.md_table(["embedding", "shots", "accuracy (%)", "95% CI"], rows)]


# --- entry point: few-shot of a finished run ---------------------------------------------
def run(config, workdir: str) -> dict:
  """Few-shot evaluation of the finished run in `config.trained` (read-only; '' trains
  `config.trained_run` in `workdir`/trained first), written to `workdir` (report.md,
  results.json, the head's checkpoints). Returns {'fewshot', 'report'}."""
  if not config.trained:  # train one first, in its own subdirectory
    from metajax.experiments import sort_of_clevr
    check(config.eval.fewshot, config.trained_run.model)  # before any training
    config = config.copy_and_resolve_references()
    config.trained = os.path.join(workdir, "trained")
    sort_of_clevr.run(config.trained_run, config.trained)
  if os.path.abspath(config.trained) == os.path.abspath(workdir):
    raise ConfigError("workdir", workdir, "is the trained run's workdir (read-only here)",
                      "a new directory")
  from metajax.saved import load_trained, read_card
  if read_card(config.trained)["kind"] != "multimodal":
    raise ConfigError("trained", config.trained, "holds no multimodal model",
                      "the workdir of a finished Sort-of-CLEVR run")
  trained_cfg = runlog.read_config(config.trained)
  require_positive(config, "eval.batch_size")
  check(config.eval.fewshot, trained_cfg.model)
  trained = load_trained(config.trained)  # reads, writes nothing
  runlog.check_workdir(workdir)
  runlog.prepare_workdir(workdir, config)
  from metajax.experiments import sort_of_clevr as clevr  # imports this module
  raw = clevr.load_scenes(trained_cfg, data_dir=config.data_dir)  # the scenes it trained on
  from metajax.multimodal.tokenize import encode
  tok, mcfg = trained.preprocessor.tokenizer, trained.model.cfg
  split = {n: soc.Split(raw[n], *encode(tok, raw[n]["q_text"].tolist(), mcfg.max_text_len,
                                        trained_cfg.text.truncate_text))
           for n in ("train", "test")}
  results = fewshot_eval(config, trained.model, trained.params, split["train"], split["test"],
                         workdir)
  lines = ["# Few-shot on the multimodal model", "",
           f"Trained run: `{config.trained}` (step {trained.step}).", ""]
  lines += table(config.eval.fewshot, results) if results else ["(few-shot switched off)"]
  path = os.path.join(workdir, "report.md")
  if jax.process_index() == 0:
    runlog.atomic_write(path, "\n".join(lines) + "\n")
    runlog.atomic_write(os.path.join(workdir, "results.json"), runlog.dumps_strict(
        {"fewshot": results, "trained": config.trained, "step": trained.step,
         "eval": config.eval.to_dict()}, indent=2))
  return {"fewshot": results, "report": path}
