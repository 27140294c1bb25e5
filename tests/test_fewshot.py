"""The few-shot experiment end to end: tiny runs that learn, and the trained model back
through `metajax.load_trained` as a user would use it."""

import os

import numpy as np
import pytest

import metajax
from conftest import fewshot_config, tiny_noisy_images
from metajax import experiments
from metajax.errors import ConfigError

WAYS = 5


def tiny_run(workdir, path, mode="tiny", model=(), **train):
  """A tiny run on 'tiny_noisy_images' (untrained: near chance); returns (config, results)."""
  c = fewshot_config(path, mode)
  c.data.name, c.eval.datasets = "tiny_noisy_images", ("tiny_noisy_images",)
  c.model.update(dict(model))
  c.train.update(train)
  c.train.log_every = c.train.checkpoint_every = c.train.steps
  c.eval.episodes, c.eval.batch, c.eval.queries, c.eval.val_every = 40, 10, 3, 0
  return c, experiments.run(c, str(workdir))


def accuracy(results):
  (metrics,) = results["results"].values()
  return metrics["accuracy"][0]


def listing(path):
  return sorted((os.path.relpath(os.path.join(r, f), path), os.stat(os.path.join(r, f)).st_mtime_ns)
                for r, ds, fs in os.walk(path) for f in fs + ds)


@pytest.fixture(scope="module")
def protonet_run(tmp_path_factory):
  wd = tmp_path_factory.mktemp("protonet") / "run"
  return wd, tiny_run(wd, "configs/protonet_glyphs.py", steps=80)[1]


def test_protonet_learns(protonet_run):
  # untrained conv4-8: ~0.40 on these episodes; 80 steps: ~0.78
  assert accuracy(protonet_run[1]) > 1 / WAYS + 0.35


def test_maml_learns(tmp_path):
  # conv4-16 of depth 2, meta-batch 4: untrained ~0.32, 40 steps ~0.74 (second order)
  c, results = tiny_run(tmp_path / "run", "configs/maml_glyphs.py",
                        model={"filters": 16, "depth": 2}, steps=40, meta_batch=4)
  assert c.learner.name == "maml" and not c.learner.first_order
  assert accuracy(results) > 1 / WAYS + 0.3
  trained = metajax.load_trained(str(tmp_path / "run"))
  _, _, test = tiny_noisy_images().splits.values()
  logits = trained.predict(test[:WAYS, 0], np.arange(WAYS), test[:WAYS, 1:4].reshape(-1, 28, 28, 1))
  assert logits.shape == (3 * WAYS, WAYS)
  with pytest.raises(ConfigError, match="fixed to 5 ways"):
    trained.evaluate("tiny_noisy_images", ways=3, shots=1)


def test_scan_chunk_that_does_not_divide_the_meta_batch_fails_before_any_work(tmp_path):
  from configs import maml_glyphs
  from metajax.experiments import fewshot
  c = maml_glyphs.get_config()
  c.train.meta_batch, c.learner.task_chunk = 6, 4
  with pytest.raises(ConfigError, match="does not divide the meta-batch of 6") as e:
    fewshot.check_config(c)
  assert e.value.key == "learner.task_chunk"


def test_load_trained_evaluates_predicts_and_writes_nothing(protonet_run):
  wd = str(protonet_run[0])
  before = listing(wd)
  trained = metajax.load_trained(wd)
  assert trained.step == 80
  metrics = trained.evaluate("tiny_noisy_images", ways=WAYS, shots=1, queries=3, episodes=40,
                             batch=10)
  assert metrics["accuracy"][0] > 1 / WAYS + 0.35 and set(metrics) == {"accuracy", "loss"}
  test = tiny_noisy_images().splits["test"]
  from_array = trained.evaluate(test, ways=WAYS, shots=1, queries=3, episodes=40, batch=10)
  assert from_array == metrics  # a name and its array are the same tasks
  support, query = test[:WAYS, 0], test[:WAYS, 1:]
  logits = trained.predict(support, np.arange(WAYS), query.reshape(-1, 28, 28, 1))
  assert logits.shape == (WAYS * 5, WAYS)
  assert np.mean(logits.argmax(-1) == np.repeat(np.arange(WAYS), 5)) > 1 / WAYS + 0.35
  with pytest.raises(ConfigError, match="support_x"):
    trained.predict(support[..., 0], np.arange(WAYS), query[:, 0])
  with pytest.raises(ConfigError, match="shots"):
    trained.evaluate(test, ways=WAYS, shots=6)
  assert listing(wd) == before  # loading and evaluating wrote nothing


def test_load_trained_of_a_mistyped_or_unfinished_workdir_is_a_config_error(protonet_run, tmp_path):
  with pytest.raises(ConfigError, match="model.json") as e:
    metajax.load_trained(str(protonet_run[0]) + "x")
  assert e.value.key == "workdir"
  assert not os.path.exists(str(protonet_run[0]) + "x")
  unfinished = tmp_path / "unfinished"  # a card and a config, but no checkpoint
  unfinished.mkdir()
  for name in ("model.json", "config.json"):
    (unfinished / name).write_bytes((protonet_run[0] / name).read_bytes())
  with pytest.raises(ConfigError, match="holds no checkpoint"):
    metajax.load_trained(str(unfinished))
  assert sorted(os.listdir(unfinished)) == ["config.json", "model.json"]  # no checkpoints/ made


def test_sinusoid_run_loads_for_regression(tmp_path):
  c = fewshot_config("configs/maml_sinusoid.py", "metasgd,tiny")
  c.data.name, c.eval.datasets = "sinusoid", ("sinusoid",)
  experiments.run(c, str(tmp_path / "run"))
  report = (tmp_path / "run" / "report.md").read_text()
  assert "batch norm" not in report and "| mse |" in report  # an MLP has no batch norm
  trained = metajax.load_trained(str(tmp_path / "run"))
  assert trained.learner.config.learn_lr == "per_param"
  metrics = trained.evaluate("sinusoid", ways=1, shots=5, queries=10, episodes=4, batch=2)
  assert set(metrics) == {"mse"} and np.isfinite(metrics["mse"][0])
  x = np.linspace(-5, 5, 15, dtype=np.float32)[:, None]
  assert trained.predict(x[:5], np.sin(x[:5]), x[5:]).shape == (10, 1)
  with pytest.raises(ConfigError, match="regression"):
    trained.evaluate("tiny_images", ways=5, shots=1)
