"""Compressed models as self-describing workdirs: `metajax.load_trained(dir)` answers like
the model they came from.

  export(source_workdir, out_dir, params, model_state, method='int8')
  trained = metajax.load_trained(out_dir)    # TrainedMultimodal or TrainedLearner, as the source

A compressed workdir holds `weights.npz` (uncompressed numpy; its size is the size on disk
the compression table reports), `model.json` of kind 'compressed' (the method, and the
source's own card under `base`) and what the source's loader reads besides its checkpoint
(the tokenizer of a multimodal model, `config.json` of a few-shot run). Inference only: no
optimizer state. Methods, by how `params` are stored:

  float32  every leaf as float32 (the uncompressed baseline, and distilled students)
  int8     weights of rank >= 2 as int8 with a float32 scale per output channel
  sparse   weights of rank >= 2 as a bitmask of the nonzero entries (np.packbits) and the
           float32 nonzero values: pruned models
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metajax import models, saved
from metajax.compress import quantize as qz
from metajax.errors import ConfigError

WEIGHTS = "weights.npz"
METHODS = ("float32", "int8", "sparse")
# What each source kind's loader reads besides the checkpoint: name in the copy -> path in
# the source (from its card).
_SOURCE_FILES = {"multimodal": lambda card: {"tokenizer": card["tokenizer"]},
                 "fewshot": lambda card: {"config.json": "config.json"}}


# --- storage: params pytree <-> named arrays ---------------------------------------------
def encode(params: Any, model_state: Any, method: str) -> dict[str, np.ndarray]:
  """{'params/<path>[::part]': array, 'model_state/<path>': array} for `save_weights`."""
  if method not in METHODS:
    raise ConfigError("method", method, "unknown storage method", ", ".join(map(repr, METHODS)))
  out = {f"model_state/{k}": v for k, v in qz.flatten(model_state or {}).items()}
  for path, w in qz.flatten(params).items():
    key = f"params/{path}"
    if method == "int8" and qz.quantizable(w):
      out[key + "::int8"], out[key + "::scale"] = qz.quantize_array(w)
    elif method == "sparse" and qz.quantizable(w):
      w = np.asarray(w, np.float32)
      out[key + "::bits"] = np.packbits(w.ravel() != 0)
      out[key + "::values"] = w.ravel()[w.ravel() != 0]
      out[key + "::shape"] = np.asarray(w.shape, np.int64)
    else:
      out[key] = np.asarray(w, np.float32) if qz.quantizable(w) else np.asarray(w)
  return out


def decode(arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
  """(params, model_state) back from `encode`'s arrays, float32 weights."""
  trees: dict[str, dict[str, np.ndarray]] = {"params": {}, "model_state": {}}
  for name, v in arrays.items():
    tree, _, rest = name.partition("/")
    path, _, part = rest.partition("::")
    if not part:
      trees[tree][path] = v
    elif part == "int8":
      trees[tree][path] = qz.dequantize_array(v, arrays[f"{tree}/{path}::scale"])
    elif part == "bits":
      shape = tuple(arrays[f"{tree}/{path}::shape"])
      nonzero = np.unpackbits(v, count=int(np.prod(shape))).astype(bool)
      w = np.zeros(nonzero.size, np.float32)
      w[nonzero] = arrays[f"{tree}/{path}::values"]
      trees[tree][path] = w.reshape(shape)
  return qz.unflatten(trees["params"]), qz.unflatten(trees["model_state"])


# --- writing ------------------------------------------------------------------------------
def export(source: str, out_dir: str, params: Any, model_state: Any, method: str,
           **fields: Any) -> int:
  """Writes `params` (and the model state, float) of the model of `source` (a workdir that
  `load_trained` reads) to `out_dir` as a compressed workdir; `fields` go into its card.
  Returns the size of `weights.npz` in bytes."""
  base = saved.read_card(source)
  if base["kind"] not in _SOURCE_FILES:
    raise ConfigError("workdir", source, f"it holds a {base['kind']!r} model; compression "
                      "covers", ", ".join(sorted(_SOURCE_FILES)))
  os.makedirs(out_dir, exist_ok=True)
  for name, rel in _SOURCE_FILES[base["kind"]](base).items():
    src, dst = os.path.normpath(os.path.join(source, rel)), os.path.join(out_dir, name)
    if os.path.isdir(src):
      shutil.copytree(src, dst, dirs_exist_ok=True)
    elif os.path.isfile(src):
      shutil.copyfile(src, dst)
  size = qz.save_weights(os.path.join(out_dir, WEIGHTS), encode(params, model_state, method))
  base = {**base, "tokenizer": "tokenizer"} if base["kind"] == "multimodal" else base
  saved.write_card(out_dir, "compressed", method=method, base=base,
                   source=os.path.abspath(source), **fields)
  return size


# --- loading ------------------------------------------------------------------------------
def _check_fits(workdir: str, got: Any, like: Any, what: str) -> None:
  shapes = lambda t: jax.tree.map(lambda x: tuple(np.shape(x)), t)
  if jax.tree.structure(got) != jax.tree.structure(like) or shapes(got) != shapes(like):
    raise ConfigError("workdir", workdir, f"its {WEIGHTS} {what} do not fit the model its "
                      "model.json describes", "a directory written by metajax.compress")


def load(workdir: str, card: dict):
  """The compressed model of `card` (a `model.json` of kind 'compressed'), with the
  prediction and evaluation API of its source kind."""
  base = card["base"]
  params, model_state = decode(qz.load_weights(os.path.join(workdir, WEIGHTS)))
  step = int(card.get("step", 0))
  if base["kind"] == "multimodal":
    return _load_multimodal(workdir, base, params, step)
  return _load_fewshot(workdir, base, params, model_state, step)


def _load_multimodal(workdir: str, base: dict, params, step: int):
  from metajax.multimodal.checks import example_batch
  from metajax.multimodal.inputs import Preprocessor
  from metajax.multimodal.saved import TrainedMultimodal, table_schema_from_card
  from metajax.multimodal.tokenize import load_tokenizer
  spec = {k: tuple(v) if isinstance(v, list) else v for k, v in base["model"].items()}
  model = models.make(spec.pop("name"), **spec)
  like = jax.eval_shape(lambda: model.init(jax.random.key(0), example_batch(model.cfg)))
  _check_fits(workdir, params, like["params"], "params")
  tok = load_tokenizer(os.path.join(workdir, base["tokenizer"]))
  pre = Preprocessor(tuple(model.cfg.image_shape), tok, base["max_text_len"],
                     table_schema_from_card(base.get("table_schema")),
                     base.get("truncate_text", False))
  params = jax.tree.map(jnp.asarray, params)
  return TrainedMultimodal(model, params, pre, tuple(base["answers"]), step)


def _load_fewshot(workdir: str, base: dict, params, model_state, step: int):
  from metajax.meta.saved import TrainedLearner, learner_and_state_shape
  from metajax.state import TrainState
  config, learner, like = learner_and_state_shape(workdir, base)
  _check_fits(workdir, params, like.params, "params")
  _check_fits(workdir, model_state, like.model_state, "model state")
  state = TrainState(step=jnp.asarray(step, jnp.int32), params=jax.tree.map(jnp.asarray, params),
                     model_state=jax.tree.map(jnp.asarray, model_state), opt_state=())
  return TrainedLearner(learner, state, base, config.data.data_dir, step)

