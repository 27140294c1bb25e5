"""A trained few-shot learner back from its workdir: `metajax.load_trained(workdir)`.

  >>> trained = metajax.load_trained('runs/quickstart')
  >>> trained.evaluate('uci_digits', ways=5, shots=1)       # {'accuracy': (mean, ci95), ...}
  >>> trained.predict(support_x, support_y, query_x)         # [Q, C] logits

The model card (`model.json`) gives the model, the learner's sub-config and the input
shapes; `config.json` gives the outer optimizer (its state is part of the checkpoint).
Loading reads the latest checkpoint read-only and writes nothing.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from metajax import checkpoint, data, models, optim, runlog
from metajax.data.base import ClassImages
from metajax.data.episodes import EpisodeSpec, Tasks
from metajax.errors import ConfigError
from metajax.meta import ALGORITHMS
from metajax.meta.evaluate import evaluate, sampler, summarise, task_kind
from metajax.state import TrainState


def _tuples(x):
  """JSON lists back to tuples (Linen module fields must be hashable)."""
  return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


@dataclasses.dataclass
class TrainedLearner:
  """A meta-trained learner at checkpoint `step` of the run in `workdir`."""
  learner: Any
  state: TrainState
  card: dict
  data_dir: str
  step: int

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.card["input_shape"])

  @functools.cached_property
  def _predict(self):  # one jit per loaded learner: repeated calls reuse its compiled program
    return jax.jit(self.learner.predict)

  @functools.cached_property
  def _eval_step(self):
    return jax.jit(self.learner.eval_step)

  def predict(self, support_x, support_y, query_x) -> np.ndarray:
    """One task: query outputs after adapting to the support set, as at meta-test.

    support_x [S, *input_shape] (uint8 images are scaled to [0, 1] as in training),
    support_y [S] labels in 0..N-1 (or [S, *target] regression targets), query_x
    [Q, *input_shape] -> [Q, N] logits (classification; argmax = class) or [Q, *target].
    """
    scale = lambda x: (jnp.asarray(x, jnp.float32) / 255.0 if np.asarray(x).dtype == np.uint8
                       else jnp.asarray(x, jnp.float32))
    sx, qx = scale(support_x), scale(query_x)
    for name, x in (("support_x", sx), ("query_x", qx)):
      if tuple(x.shape[1:]) != self.input_shape:
        raise ConfigError(name, tuple(x.shape), f"the model takes {self.input_shape} inputs",
                          f"[n, {', '.join(map(str, self.input_shape))}]")
    sy = jnp.asarray(support_y)
    out = np.asarray(self._predict(self.state, sx, sy, qx))
    if self.card["task"] == "classification" and self.learner.num_ways is None:
      out = out[:, : int(np.max(np.asarray(support_y))) + 1]  # ProtoNet: one logit per class seen
    return out

  def evaluate(self, images_or_dataset_name, ways: int, shots: int, queries: int = 15,
               episodes: int = 600, seed: int = 0, batch: int = 20,
               split: str = "test") -> dict[str, tuple[float, float]]:
    """{metric: (mean, 95% CI half-width)} over `episodes` N-way K-shot tasks.

    images_or_dataset_name: a registered dataset name (its `split`; 'sinusoid' for
    regression runs) or a uint8 array [classes, examples, *input_shape].
    """
    source = images_or_dataset_name
    if isinstance(source, str):
      ds = data.load(source, self.data_dir)
    else:
      ds = ClassImages("array", {split: np.asarray(source)})
    if task_kind(ds) != self.card["task"]:
      raise ConfigError("dataset", getattr(ds, "name", source),
                        f"it is a {task_kind(ds)} dataset, this run learned {self.card['task']}",
                        f"a {self.card['task']} dataset")
    spec = EpisodeSpec(1 if self.card["task"] == "regression" else ways, shots, queries, batch)
    if isinstance(ds, ClassImages):
      if self.learner.num_ways not in (None, ways):
        raise ConfigError("ways", ways, f"the head is fixed to {self.learner.num_ways} ways",
                          str(self.learner.num_ways))
      if split not in ds.splits:
        raise ConfigError("split", split, f"{ds.name} has no such split", ", ".join(ds.splits))
      if tuple(ds.image_shape) != self.input_shape:
        raise ConfigError("dataset", ds.name, f"its images are {tuple(ds.image_shape)}, the "
                          f"model takes {self.input_shape}", f"{self.input_shape} images")
      spec.validate(ds.splits[split].shape, f"{ds.name} {split}")
    per_episode = evaluate(self._eval_step, self.state, sampler(ds, split, spec),
                           episodes, batch, jax.random.key(seed))
    return summarise(per_episode)[0]


def learner_and_state_shape(workdir: str, card: dict):
  """(config, learner, abstract state) of the run in `workdir` that `card` describes."""
  config = runlog.read_config(workdir)
  spec = {k: _tuples(v) for k, v in card["model"].items()}
  model = models.make(spec.pop("name"), **spec)
  learner = ALGORITHMS.get(card["learner"]["name"])(
      card["learner"], lambda n: model, optim.make_optimizer(config.optimizer, config.train.steps),
      card["episodes"]["ways"], card["task"])
  n = card["episodes"]["ways"] * card["episodes"]["shots"]
  x = jax.ShapeDtypeStruct((1, n, *card["input_shape"]), jnp.float32)
  if card["task"] == "classification":
    y = jax.ShapeDtypeStruct((1, n), jnp.int32)
  else:
    y = jax.ShapeDtypeStruct((1, n, *card["target_shape"]), jnp.float32)
  return config, learner, jax.eval_shape(learner.init, jax.random.key(0), Tasks(x, y, x, y))


def load(workdir: str, card: dict) -> TrainedLearner:
  """The learner of `card` (a `model.json` of kind 'fewshot') at the latest checkpoint."""
  config, learner, like = learner_and_state_shape(workdir, card)
  state, step = checkpoint.restore(workdir, like)
  return TrainedLearner(learner, state, card, config.data.data_dir, step)
