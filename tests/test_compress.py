"""Compression (issue 17, part 5): int8 round trip and size, pruning masks through a
fine-tune, the distillation step, compressed workdirs through `metajax.load_trained`, and
the errors for a wrong model or a bad sparsity."""

import dataclasses
import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metajax
from metajax import models, saved
from metajax.compress import distill, prune
from metajax.compress import quantize as qz
from metajax.compress import saved as csaved
from metajax.data import sort_of_clevr as soc
from metajax.errors import ConfigError
from metajax.experiments import compress, compress_distill
from metajax.multimodal import encode, example_batch, train_tokenizer
from metajax.multimodal.saved import table_schema_card
from metajax.multimodal.inputs import TableSchema
from metajax.state import TrainState

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(name="multimodal_transformer", image_shape=(75, 75, 3), stem="patch", patch=15,
            max_text_len=16, table_categorical=(6, 2), table_numeric=3, table_rows=3, dim=16,
            depth=1, heads=2, mlp_dim=32, num_classes=10, num_regression=2)


def config(name, mode="tiny"):
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", name + ".py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(mode)


# --- int8 ---------------------------------------------------------------------------------
def test_int8_round_trip_error_is_at_most_half_a_step_per_channel():
  w = np.random.default_rng(0).normal(size=(3, 3, 16, 32)).astype(np.float32)
  w[..., 5] *= 100  # one channel far larger: per-channel scales keep the others fine
  q, scale = qz.quantize_array(w)
  assert q.dtype == np.int8 and scale.shape == (32,) and np.abs(q).max() <= 127
  err = np.abs(qz.dequantize_array(q, scale) - w)
  assert np.all(err <= scale / 2 + 1e-6)
  assert err[..., 0].max() < 0.02 * np.abs(w[..., 0]).max()


def test_int8_weights_are_about_4x_smaller_on_disk(tmp_path):
  rng = np.random.default_rng(0)
  params = {"dense": {"kernel": rng.normal(size=(256, 256)).astype(np.float32),
                      "bias": np.zeros(256, np.float32)}}
  full = qz.save_weights(str(tmp_path / "f.npz"), csaved.encode(params, {}, "float32"))
  int8 = qz.save_weights(str(tmp_path / "q.npz"), csaved.encode(params, {}, "int8"))
  assert 3.7 < full / int8 < 4.0
  back, _ = csaved.decode(qz.load_weights(str(tmp_path / "q.npz")))
  np.testing.assert_allclose(back["dense"]["kernel"], params["dense"]["kernel"], atol=0.03)
  assert back["dense"]["bias"].dtype == np.float32


# --- pruning ------------------------------------------------------------------------------
def test_pruning_masks_hold_through_a_finetune_that_lowers_the_loss():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(64, 20)), jnp.float32)
  y = x @ jnp.asarray(rng.normal(size=(20, 10)), jnp.float32)
  params = {"w": jnp.asarray(rng.normal(size=(20, 10)), jnp.float32), "b": jnp.ones(10)}
  masks = prune.magnitude_masks(params, 0.6)
  params = prune.apply_masks(params, masks)
  assert prune.sparsity_of(params) == pytest.approx(0.6, abs=0.01)
  assert float(masks["b"].min()) == 1.0  # rank-1 leaves are never pruned
  tx = optax.chain(prune.keep_masked(masks), optax.adamw(0.05, weight_decay=0.1),
                   prune.keep_masked(masks))
  loss = lambda p: jnp.mean((x @ p["w"] + p["b"] - y) ** 2)
  state = TrainState.create(params, tx)
  before = float(loss(params))
  step = jax.jit(lambda s: s.apply_gradients(jax.grad(loss)(s.params), tx))
  for _ in range(30):
    state = step(state)
  assert float(loss(state.params)) < 0.7 * before
  assert prune.sparsity_of(state.params) == pytest.approx(0.6, abs=0.01)
  assert np.all(np.asarray(state.params["w"])[np.asarray(masks["w"]) == 0] == 0)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1])
def test_sparsity_outside_0_1_is_a_config_error(bad):
  with pytest.raises(ConfigError, match="prune.sparsity"):
    c = config("compress_models")
    c.prune.sparsity = bad
    compress.check_config(c)


# --- distillation -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenes():
  return soc.generate(8, seed=5)


@pytest.fixture(scope="module")
def tok(scenes):
  return train_tokenizer(sorted(set(scenes["q_text"].tolist())), 256)


def test_distillation_step_lowers_the_loss(scenes, tok):
  student = models.make(**{**TINY, "vocab_size": len(tok), "dim": 8, "mlp_dim": 8})
  split = soc.Split(scenes, *encode(tok, scenes["q_text"].tolist(), 16))
  idx = split.by_image[:4, :4].reshape(-1)
  batch = {**split.batch(idx, 4), "weight": np.ones(16, np.float32),
           "teacher_logits": np.random.default_rng(0).normal(size=(16, 10)).astype(np.float32)}
  tx = optax.adam(3e-3)
  params = jax.jit(student.init)(jax.random.key(0), example_batch(student.cfg))["params"]
  step = jax.jit(distill.make_distill_step(student, tx, 2.0, 0.7, 1.0, 4))
  state = TrainState.create(params, tx)
  losses = []
  for _ in range(8):
    state, m = step(state, batch, jax.random.key(0))
    losses.append(float(m["train/loss"]))
  assert losses[-1] < 0.8 * losses[0]
  soft, hard = distill.distill_loss(batch["teacher_logits"], batch["teacher_logits"],
                                    batch["answer"], 2.0, 0.7)
  np.testing.assert_allclose(soft, 0.0, atol=1e-5)  # a student equal to its teacher


# --- compressed workdirs ----------------------------------------------------------------
@pytest.fixture(scope="module")
def source(tmp_path_factory, tok):
  """A multimodal source workdir (card, tokenizer) and its model's params; no training."""
  root = tmp_path_factory.mktemp("src")
  tok.save_pretrained(str(root / "tokenizer"))
  spec = {**TINY, "vocab_size": len(tok)}
  model = models.make(**spec)
  params = jax.jit(model.init)(jax.random.key(0), example_batch(model.cfg))["params"]
  schema = TableSchema(soc.TABLE_CATEGORICAL, soc.TABLE_NUMERIC, 3)
  saved.write_card(str(root), "multimodal", model=models.spec(spec),
                   table_schema=table_schema_card(schema), answers=list(soc.ANSWERS),
                   tokenizer="tokenizer", max_text_len=16, truncate_text=False,
                   optimizer={}, steps=0, modalities=["image", "text", "table"],
                   dataset="sort_of_clevr")
  return str(root), model, params


@pytest.mark.parametrize("method", ["int8", "sparse"])
def test_load_trained_of_a_compressed_dir_predicts_like_the_source(source, scenes, tmp_path,
                                                                   method):
  root, model, params = source
  if method == "sparse":
    params = prune.apply_masks(params, prune.magnitude_masks(params, 0.5))
  out = str(tmp_path / method)
  csaved.export(root, out, params, {}, method)
  trained = metajax.load_trained(out)
  imgs = scenes["images"][:2]
  texts = scenes["q_text"][:2].tolist()
  got = trained.predict(images=imgs, texts=texts)
  assert len(got["answer"]) == 2 and set(got["answer"]) <= set(soc.ANSWERS)
  ref = trained._predict(jax.tree.map(jnp.asarray, params),
                         trained.preprocessor(images=imgs, texts=texts))["logits"]
  tol = 0.05 if method == "int8" else 1e-5  # sparse storage is exact
  np.testing.assert_allclose(got["logits"], np.asarray(ref), atol=tol)
  acc = trained.evaluate(answers=["yes", "no"], images=imgs, texts=texts)
  assert acc["examples"] == 2


def test_weights_of_a_different_model_are_a_config_error_naming_the_dir(source, tmp_path):
  root, _, params = source
  out = str(tmp_path / "wrong")
  csaved.export(root, out, params, {}, "int8")
  card = json.load(open(os.path.join(out, "model.json")))
  card["base"]["model"]["dim"] = 32  # the card now describes another model
  json.dump(card, open(os.path.join(out, "model.json"), "w"))
  with pytest.raises(ConfigError, match="wrong.*do not fit the model"):
    metajax.load_trained(out)


def test_a_source_of_another_model_kind_is_a_config_error_naming_it(source, tmp_path):
  fake = tmp_path / "fewshot_run"
  fake.mkdir()
  (fake / "model.json").write_text(json.dumps({"kind": "fewshot", "learner": {"name": "maml"}}))
  c = config("compress_models")
  c.multimodal.source = str(fake)
  with pytest.raises(ConfigError, match="multimodal.source.*fewshot_run.*different model"):
    compress.check_config(c)
  c = config("compress_models")
  c.protonet.source = str(fake)
  with pytest.raises(ConfigError, match="protonet.source.*maml learner, not a ProtoNet"):
    compress.check_config(c)
  d = config("distill_sortofclevr")
  d.teacher = str(fake)
  with pytest.raises(ConfigError, match="teacher.*fewshot_run.*not a multimodal"):
    compress_distill.check_config(d)


def test_a_student_over_the_parameter_budget_is_refused(source):
  root, _, _ = source
  d = config("distill_sortofclevr")
  d.teacher = root
  d.model.update(dim=16, mlp_dim=32)  # the teacher's own size
  with pytest.raises(ConfigError, match="max_param_fraction"):
    compress_distill.check_config(d)
