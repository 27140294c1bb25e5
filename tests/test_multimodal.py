"""Multimodal transformer, Sort-of-CLEVR data, bad inputs, few-shot head and steps (issue 4);
the Sort-of-CLEVR driver and the saved model, on one shared tiny run: test_multimodal_run.py."""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax import models, optim, parallel, runlog
from metajax.data import sort_of_clevr as soc
from metajax.data.episodes import EpisodeSpec
from metajax.errors import ConfigError
from metajax.experiments import sort_of_clevr as driver
from metajax.meta.protonet import prototypes
from metajax.multimodal import (ModelConfig, MultimodalTransformer, Preprocessor, TableSchema,
                                check_batch, check_values, encode, example_batch, load_tokenizer,
                                train_tokenizer)
from metajax.multimodal import episodic_head, fewshot, steps
from metajax.state import TrainState

TINY = ModelConfig(image_shape=(75, 75, 3), patch=15, vocab_size=256, max_text_len=16,
                   table_categorical=(6, 2), table_numeric=3, table_rows=3, dim=16, depth=1,
                   heads=2, mlp_dim=32, num_classes=10, num_regression=2,
                   stem_channels=(8, 8, 8, 8))


@pytest.fixture(scope="module")
def scenes():
  return soc.generate(12, seed=3)


@pytest.fixture(scope="module")
def tok(scenes):
  return train_tokenizer(sorted(set(scenes["q_text"].tolist())), 256)


def _batch(scenes, tok, n=4):
  split = soc.Split(scenes, *encode(tok, scenes["q_text"].tolist(), 16))
  b = split.batch(np.arange(n))
  return {k: jnp.asarray(b[k]) for k in ("image", "text", "text_mask", "table_cat",
                                         "table_num", "table_mask")}


# --- data ---------------------------------------------------------------------------------
def test_generator_is_deterministic_and_answers_match_the_scene(scenes):
  again = soc.generate(12, seed=3)
  for k in scenes:
    np.testing.assert_array_equal(scenes[k], again[k])
  assert not np.array_equal(soc.generate(12, seed=4)["images"], scenes["images"])
  assert scenes["images"].shape == (12, 75, 75, 3)
  fam = [soc.FAMILIES[f] for f in scenes["q_family"]]
  # Per image: 10 non-relational, 10 relational, 2 table questions.
  groups = np.array([soc.GROUP[f] for f in fam]).reshape(12, 22)
  assert (groups[:, :10] == "non-relational").all() and (groups[:, 10:20] == "relational").all()
  for q in range(len(fam)):
    i, c, a = scenes["q_image"][q], scenes["q_colour"][q], soc.ANSWERS[scenes["q_answer"][q]]
    cen, shp, img = scenes["centres"][i], scenes["shapes"][i], scenes["images"][i]
    # The object of colour c is drawn at its centre in its colour.
    np.testing.assert_array_equal(img[cen[c, 1], cen[c, 0]], soc.RGB[c])
    d = np.sqrt(((cen - cen[c]) ** 2).sum(-1)).astype(float)
    d[c] = np.inf
    if fam[q] == "shape":
      assert a == soc.SHAPES[shp[c]]
    elif fam[q] == "left":
      assert a == ("yes" if cen[c, 0] < 37.5 else "no")
    elif fam[q] == "count":
      assert a == str((shp == shp[c]).sum())
    elif fam[q] == "closest":
      assert a == soc.SHAPES[shp[d.argmin()]]
    elif fam[q] == "furthest":
      d[c] = -np.inf
      assert a == soc.SHAPES[shp[d.argmax()]]
    elif fam[q] in ("heavy", "closest_heavy"):
      target = scenes["q_target"][q]
      assert target in scenes["table_cat"][i][:, 0]  # the weight asked about is in the table
      assert a == ("yes" if scenes["weights"][i][target] > 5 else "no")
  assert "what shape is the object closest to the" in " ".join(scenes["q_text"])


def test_cache_is_reused_and_a_corrupt_cache_is_rebuilt(tmp_path):
  a = soc.load(str(tmp_path), num_train=3, num_test=2, seed=1)
  (path,) = [p for p in (tmp_path / "sort_of_clevr").iterdir() if p.suffix == ".npz"]
  stamp = path.stat().st_mtime_ns
  b = soc.load(str(tmp_path), num_train=3, num_test=2, seed=1)
  assert path.stat().st_mtime_ns == stamp  # read from the cache, not rewritten
  np.testing.assert_array_equal(a["train"]["images"], b["train"]["images"])
  path.write_bytes(path.read_bytes()[:100])  # torn file: checksum fails
  c = soc.load(str(tmp_path), num_train=3, num_test=2, seed=1)
  np.testing.assert_array_equal(a["test"]["q_answer"], c["test"]["q_answer"])
  with pytest.raises(ConfigError, match="num_train"):
    soc.load(str(tmp_path), num_train=0)


# --- model ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _init(cfg=TINY, seed=0):
  """(model, params) of `cfg`, once per config. Jitted, with an 'rbg' key: XLA on CPU compiles
  threefry's init three times slower, and these tests hold for any params."""
  model = MultimodalTransformer(cfg)
  key = jax.random.key(seed, impl="rbg")
  return model, jax.jit(model.init)(key, example_batch(cfg))["params"]


def _apply(model):
  """`model.apply` jitted: one compile per batch layout beats eager op-by-op dispatch here."""
  return jax.jit(model.apply, static_argnames="questions_per_scene")


def test_registry_builds_the_transformer_from_keyword_arguments():
  model = models.make("multimodal_transformer", **{**TINY.__dict__, "stem_channels": [8, 8, 8, 8]})
  assert model.cfg == TINY  # lists (JSON, config files) become tuples
  with pytest.raises(ConfigError, match="model.depht.*no such argument.*depth"):
    models.make("multimodal_transformer", depht=2)
  with pytest.raises(ConfigError, match="model.heads.*must divide model.dim=16"):
    models.make("multimodal_transformer", **{**TINY.__dict__, "heads": 3})


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_absent_modality_mask_equals_leaving_it_out(scenes, tok, fusion):
  cfg = ModelConfig(**{**TINY.__dict__, "fusion": fusion})
  model, params = _init(cfg)
  run = lambda b: _apply(model)({"params": params}, b)
  batch = _batch(scenes, tok)
  full = run(batch)
  assert full["logits"].shape == (4, 10) and full["regression"].shape == (4, 2)
  assert full["embedding"].shape == (4, 16)
  # Table absent for examples 0 and 2 (mask) == table keys left out entirely.
  present = jnp.array([[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)
  masked = run({**batch, "present": present})["logits"]
  no_table = run({k: v for k, v in batch.items() if not k.startswith("table")})["logits"]
  np.testing.assert_allclose(masked[::2], no_table[::2], atol=1e-5)
  np.testing.assert_allclose(masked[1::2], full["logits"][1::2], atol=1e-5)
  assert not np.allclose(full["logits"][0], no_table[0], atol=1e-5)  # the table matters
  # init on one modality still builds every parameter (a later batch may hold all three).
  text_only = jax.eval_shape(model.init, jax.random.key(0),
                             {k: batch[k] for k in ("text", "text_mask")})
  assert jax.tree.structure(text_only["params"]) == jax.tree.structure(params)


@pytest.mark.parametrize("kw", [dict(image_queries=4, stem_channels=(8, 8), text_condition="film"),
                                dict(image_pos="sincos", text_condition="all", image_depth=1)])
def test_shared_scenes_equal_repeated_scenes_and_absent_text_equals_omitted(scenes, tok, kw):
  cfg = ModelConfig(**{**TINY.__dict__, **kw})
  model, params = _init(cfg)
  batch = _batch(scenes, tok)
  apply = _apply(model)
  logits = lambda b, r=1: apply({"params": params}, b, questions_per_scene=r)["logits"]
  if cfg.text_condition == "film":  # zero-initialised (identity): make it act
    before = logits(batch)
    film = params["text_film"]["kernel"]
    params = {**params, "text_film": {**params["text_film"],
                                      "kernel": jax.random.normal(jax.random.key(1), film.shape)}}
    assert not np.allclose(logits(batch), before, atol=1e-4)
  # Two images, two questions each: images and tables given once per image.
  shared = {k: (v[::2] if k == "image" or k.startswith("table") else v) for k, v in batch.items()}
  repeated = {k: (jnp.repeat(v[::2], 2, 0) if k == "image" or k.startswith("table") else v)
              for k, v in batch.items()}
  np.testing.assert_allclose(logits(shared, 2), logits(repeated), atol=1e-5)
  present = jnp.array([[1, 0, 1]] * 4, bool)
  no_text = {k: v for k, v in batch.items() if not k.startswith("text")}
  np.testing.assert_allclose(logits({**batch, "present": present}), logits(no_text), atol=1e-5)
  with pytest.raises(ConfigError, match=r"batch.image.*leading size 3.*4 rows"):
    logits({**batch, "image": batch["image"][:3]})
  # Shared images alone (an image-only model): `present` gives the number of examples.
  ones = jnp.ones((4, 3), bool)
  np.testing.assert_allclose(logits({"image": shared["image"], "present": ones}, 2),
                             logits({"image": repeated["image"], "present": ones}), atol=1e-5)
  assert logits({"image": shared["image"], "present": ones}, 2).shape == (4, 10)


def test_fused_attention_equals_the_explicit_masked_softmax():
  from metajax.multimodal.model import attention
  kq, kk, kv, km = jax.random.split(jax.random.key(0), 4)
  b, t, s, h, dh = 3, 4, 7, 2, 8
  q = jax.random.normal(kq, (b, t, h, dh))
  k, v = jax.random.normal(kk, (b, s, h, dh)), jax.random.normal(kv, (b, s, h, dh))
  mask = jax.random.bernoulli(km, 0.6, (b, s)).at[:, 0].set(True)
  # The formula the model used before: heads first, float32 logits, -1e9 on hidden keys.
  qh, kh, vh = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  logits = jnp.einsum("bhqd,bhkd->bhqk", qh, kh).astype(jnp.float32) / jnp.sqrt(dh)
  logits = jnp.where(mask[:, None, None, :], logits, -1e9)
  ref = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(logits, -1), vh).transpose(0, 2, 1, 3)
  np.testing.assert_allclose(attention(q, k, v, mask), ref, rtol=1e-5, atol=1e-6)
  assert not np.allclose(attention(q, k, v), ref, atol=1e-3)  # the mask matters
  np.testing.assert_allclose(attention(q, k, v, jnp.ones((b, s), bool)),
                             attention(q, k, v), rtol=1e-6, atol=1e-6)


def test_colour_curriculum_adds_one_colour_per_stage():
  colour_curriculum = soc.colour_curriculum
  q = np.arange(6)
  np.testing.assert_array_equal(colour_curriculum(q, 0, 200), [1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(colour_curriculum(q, 399, 200), [1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(colour_curriculum(q, 400, 200), [1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(colour_curriculum(q, 10**6, 200), np.ones(6))
  np.testing.assert_array_equal(colour_curriculum(q, 0, 0), np.ones(6))


def test_modality_keys_name_the_inputs_of_each_subset():
  modality_keys = steps.modality_keys
  assert modality_keys() == steps.INPUT_KEYS
  assert modality_keys((0, 1, 0)) == ("text", "text_mask")
  assert modality_keys((1, 0, 1)) == ("image", "table_cat", "table_num", "table_mask")


def test_scene_batches_are_deterministic_and_grouped_by_image(scenes, tok):
  split = soc.Split(scenes, *encode(tok, scenes["q_text"].tolist(), 16))
  scene_indices = soc.scene_indices
  a = scene_indices(0, 5, 8, 4, split.by_image)
  np.testing.assert_array_equal(a, scene_indices(0, 5, 8, 4, split.by_image))
  assert not np.array_equal(a, scene_indices(0, 6, 8, 4, split.by_image))
  img = scenes["q_image"][a].reshape(2, 4)
  assert (img == img[:, :1]).all() and img[0, 0] != img[1, 0]
  assert len(set(a.tolist())) == 8  # no question twice in a step
  b = split.batch(a, per_image=4)
  assert b["image"].shape[0] == 2 and b["text"].shape[0] == 8
  np.testing.assert_array_equal(b["image"], scenes["images"][img[:, 0]])
  # Evaluation runs whole images at a time; its answers equal one question at a time.
  model, params = _init()
  predict, mesh = steps.make_predict(model), parallel.make_mesh()
  idx = np.array([3, 40, 41, 200])
  acc, emb = driver.evaluate(predict, params, split, mesh, 64, indices=idx)
  one = [predict(params, split.batch(idx[i:i + 1]), np.ones((1, 3), bool)) for i in range(4)]
  correct = np.array([int(o["answer"][0]) for o in one]) == scenes["q_answer"][idx]
  assert acc["all"] == correct.mean()
  np.testing.assert_allclose(emb, np.concatenate([np.asarray(o["embedding"]) for o in one]),
                             atol=1e-5)
  # Group and family accuracies: NaN for a group without questions, absent families left out.
  groups = steps.grouped_accuracy(np.array([1, 0, 1.0]), np.array([0, 0, 2]), ("a", "b", "c"))
  assert groups["a"] == 0.5 and np.isnan(groups["b"]) and groups["c"] == 1.0
  assert steps.grouped_accuracy(np.array([1.0]), np.array([1]), ("a", "b"), "f/",
                                keep_empty=False) == {"f/b": 1.0}
  # The predict entry checks values on the host before running the model.
  bad = split.batch(idx[:1])
  bad["text"] = bad["text"] + TINY.vocab_size
  with pytest.raises(ConfigError, match="batch.text.*vocab_size=256"):
    predict(params, bad, np.ones((1, 3), bool))
  # One epoch of steps visits every image once.
  seen = np.concatenate([scenes["q_image"][scene_indices(0, s, 8, 4, split.by_image)][::4]
                         for s in range(6)])
  assert sorted(seen.tolist()) == list(range(12))


def test_bf16_compute_runs_close_to_float32(scenes, tok):
  batch = _batch(scenes, tok)
  model, params = _init(TINY)
  f32 = _apply(model)({"params": params}, batch)["logits"]
  model16, params16 = _init(ModelConfig(**{**TINY.__dict__, "dtype": "bfloat16"}))
  bf16 = _apply(model16)({"params": params16}, batch)["logits"]
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, atol=0.1)


SHARDED_STEP = textwrap.dedent("""
    import jax, numpy as np, optax
    from metajax import parallel
    from metajax.multimodal import ModelConfig, MultimodalTransformer, example_batch
    from metajax.multimodal.steps import make_train_step
    from metajax.state import TrainState
    assert jax.device_count() == 8, jax.devices()

    cfg = ModelConfig(image_shape=(16, 16, 3), stem_channels=(4, 4), vocab_size=32,
                      max_text_len=6, table_categorical=(3,), table_numeric=2, table_rows=2,
                      dim=16, depth=1, heads=2, mlp_dim=32, num_classes=5, num_regression=2)
    rng = np.random.default_rng(0)
    b, r = 16, 2  # 8 scenes x 2 questions: one scene per device
    batch = {"image": rng.integers(0, 256, (b // r, 16, 16, 3)).astype(np.uint8),
             "text": rng.integers(0, 32, (b, 6)).astype(np.int32),
             "text_mask": rng.random((b, 6)) < 0.8,
             "table_cat": rng.integers(0, 3, (b // r, 2, 1)).astype(np.int32),
             "table_num": rng.normal(size=(b // r, 2, 2)).astype(np.float32),
             "table_mask": rng.random((b // r, 2)) < 0.7,
             "answer": rng.integers(0, 5, b), "target_xy": rng.random((b, 2)).astype(np.float32),
             "weight": np.ones(b, np.float32)}
    model = MultimodalTransformer(cfg)
    key = jax.random.key(0, impl="rbg")  # XLA on CPU compiles threefry's init 3x slower
    params = jax.device_get(jax.jit(model.init)(key, example_batch(cfg))["params"])
    tx = optax.sgd(0.1)  # SGD: Adam's first step would amplify float-order noise in ~0 grads

    def one_step(n):
      mesh = parallel.make_mesh(n)
      repl = parallel.replicated(mesh)
      step = jax.jit(make_train_step(model, tx, (0.2, 0.1, 0.3), 1.0, questions_per_scene=r),
                     in_shardings=(repl, parallel.batch_sharding(mesh), repl),
                     out_shardings=(repl, repl), donate_argnums=0)
      state = parallel.replicate(TrainState.create(params, tx), mesh)
      state, metrics = step(state, parallel.shard_batch(batch, mesh), jax.random.key(1))
      assert state.params["classifier"]["kernel"].sharding.num_devices == n
      return jax.device_get(state.params), jax.device_get(metrics)

    (p1, m1), (p8, m8) = one_step(1), one_step(8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p8)
    np.testing.assert_allclose(m1["train/loss"], m8["train/loss"], rtol=1e-5)
    assert not np.allclose(p1["classifier"]["kernel"], params["classifier"]["kernel"])
    print("OK")
""")


def test_train_step_on_8_devices_equals_1_device():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", SHARDED_STEP], env=env, capture_output=True,
                     text=True, timeout=300,
                     cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert r.returncode == 0 and "OK" in r.stdout, r.stdout[-2000:] + r.stderr[-4000:]


# --- bad input -----------------------------------------------------------------------------
def test_bad_inputs_fail_naming_what_was_expected(scenes, tok, tmp_path, caplog):
  schema = TableSchema(soc.TABLE_CATEGORICAL, soc.TABLE_NUMERIC, 3)
  pre = Preprocessor((75, 75, 3), tok, 16, schema)
  ok = pre(images=scenes["images"][:2], texts=["what shape is the red object?"] * 2,
           tables=[[{"colour": "red", "shape": "circle", "x": 3, "y": 4, "weight": 1.0}], []])
  assert ok["table_mask"].tolist() == [[True, False, False], [False, False, False]]
  with pytest.raises(ConfigError, match=r"75, 75, 3"):
    pre(images=np.zeros((2, 64, 64, 3), np.uint8))
  with pytest.raises(ConfigError, match=r"75, 75, 3"):
    pre(images=np.zeros((2, 75, 75, 1), np.uint8))
  model, params = _init()
  with pytest.raises(ConfigError, match=r"75, 75, 3"):
    model.apply({"params": params}, {"image": jnp.zeros((1, 75, 75, 4))})
  with pytest.raises(ConfigError, match="must divide the image size 75x75.*15, 25"):
    ModelConfig(stem="patch", patch=7).validate()
  long = "what shape is the red object " * 5
  with pytest.raises(ConfigError, match="max_text_len=16.*truncate_text"):
    pre(texts=[long])
  with caplog.at_level("WARNING"):
    cut = Preprocessor((75, 75, 3), tok, 16, schema, truncate_text=True)(texts=[long])
  assert cut["text_mask"].all() and "truncated 1 of 1" in caplog.text
  with pytest.raises(ConfigError, match="colour, shape, x, y, weight"):
    pre(tables=[[{"colour": "red", "shape": "circle", "x": 3, "y": 4, "size": 1.0}]])
  with pytest.raises(ConfigError, match="'red'.*'gray'"):
    pre(tables=[[{"colour": "pink", "shape": "circle", "x": 3, "y": 4, "weight": 1.0}]])
  with pytest.raises(ConfigError, match="<= 3 rows"):
    pre(tables=[[dict(colour="red", shape="circle", x=0, y=0, weight=0)] * 4])
  with pytest.raises(ConfigError, match="3 rows, 3 columns"):
    model.apply({"params": params},
                {"table_num": jnp.zeros((1, 3, 2)), "table_cat": jnp.zeros((1, 3, 2), jnp.int32),
                 "table_mask": jnp.ones((1, 3), bool)})
  # A saved tokenizer reloads through PreTrainedTokenizerFast and encodes the same ids.
  tok.save_pretrained(str(tmp_path / "tok"))
  again = load_tokenizer(str(tmp_path / "tok"))
  np.testing.assert_array_equal(encode(again, ["is the red object heavy?"], 16)[0],
                                encode(tok, ["is the red object heavy?"], 16)[0])
  with pytest.raises(ConfigError, match="tokenizer"):
    load_tokenizer(str(tmp_path / "missing"))


@pytest.mark.parametrize("r,change,match", [
    (2, {}, r"batch.image.*leading size 4.*questions_per_scene 2.*2 rows"),  # scenes not shared
    (1, {"table_mask": 2}, r"batch.table_mask.*leading size 2.*4 rows"),
    (1, {"present": 3}, r"batch.present.*leading size 3.*text has 4.*4 rows"),
    (4, {"text": 6, "text_mask": 6, "image": 1, "table_cat": 1, "table_num": 1,
         "table_mask": 1, "present": 6},
     r"batch.text.*leading size 6.*questions_per_scene=4.*multiple of 4"),
    (0, {}, r"questions_per_scene.*int >= 1")])
def test_leading_sizes_must_match_questions_per_scene(scenes, tok, r, change, match):
  model, params = _init()
  batch = {**_batch(scenes, tok), "present": jnp.ones((4, 3), bool)}
  batch = {k: jnp.resize(v, (change[k],) + v.shape[1:]) if k in change else v
           for k, v in batch.items()}
  with pytest.raises(ConfigError, match=match):
    model.apply({"params": params}, batch, questions_per_scene=r)
  with pytest.raises(ConfigError, match=match):  # the same check, without the model
    check_batch(TINY, batch, r)


def test_nan_or_none_table_cells_are_refused(scenes, tok):
  batch = {k: np.asarray(v) for k, v in _batch(scenes, tok).items()}
  check_values(TINY, batch)  # a clean batch passes
  for row in (0, 2):  # a masked row too: NaN values poison the attention even there
    num = batch["table_num"].copy()
    num[1, row, 2] = np.nan
    with pytest.raises(ConfigError, match=rf"batch.table_num.*nan at \[1, {row}, 2\].*left out"):
      check_values(TINY, {**batch, "table_num": num})
  num = batch["table_num"].astype(object)
  num[0, 0, 1] = None
  with pytest.raises(ConfigError, match=r"None at \[0, 0, 1\].*left out.*table_mask"):
    check_values(TINY, {**batch, "table_num": num})
  pre = Preprocessor((75, 75, 3), tok, 16, TableSchema(soc.TABLE_CATEGORICAL, soc.TABLE_NUMERIC, 3))
  for missing in (None, float("nan")):
    with pytest.raises(ConfigError, match=r"row 0 column 'weight'.*left out of the table"):
      pre(tables=[[dict(colour="red", shape="circle", x=1, y=2, weight=missing)]])


def test_float_images_outside_0_1_are_refused(scenes, tok):
  pre = Preprocessor((75, 75, 3), tok, 16)
  pre(images=scenes["images"][:2] / 255.0)  # float 0..1 passes
  with pytest.raises(ConfigError,
                     match=r"batch.image.*float64 values in \[[\d.]+, [\d.]+\].*float in \[0, 1\]"):
    pre(images=scenes["images"][:2].astype(np.float64))
  with pytest.raises(ConfigError, match=r"batch.image.*-0.5"):
    check_values(TINY, {"image": np.full((1, 75, 75, 3), -0.5, np.float32)})
  with pytest.raises(ConfigError, match=r"batch.image.*nan"):
    check_values(TINY, {"image": np.full((1, 75, 75, 3), np.nan, np.float32)})


@pytest.mark.parametrize("bad_id", [256, 10**6, -1])
def test_token_ids_outside_the_vocabulary_are_refused(scenes, tok, bad_id):
  batch = {k: np.asarray(v) for k, v in _batch(scenes, tok).items()}
  text = batch["text"].copy()
  text[2, 5] = bad_id
  with pytest.raises(ConfigError, match=rf"batch.text.*token id {bad_id} at \[2, 5\].*0..255"):
    check_values(TINY, {**batch, "text": text})


@pytest.mark.parametrize("column,bad_id,valid", [(0, 6, "0..5"), (1, 2, "0..1"), (1, -1, "0..1")])
def test_categorical_ids_outside_their_column_are_refused(scenes, tok, column, bad_id, valid):
  batch = {k: np.asarray(v) for k, v in _batch(scenes, tok).items()}
  cat = batch["table_cat"].copy()
  cat[3, 1, column] = bad_id
  with pytest.raises(ConfigError, match=rf"batch.table_cat.*id {bad_id} at \[3, 1, {column}\]"
                                        rf".*column {column} has.*{valid} in column {column}"):
    check_values(TINY, {**batch, "table_cat": cat})


# --- few-shot head -------------------------------------------------------------------------
def test_protonet_separates_separable_classes_and_not_noise():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(6, 1, 8)) * 5
  separable = jnp.asarray(centres + rng.normal(size=(6, 20, 8)) * 0.1, jnp.float32)
  spec = EpisodeSpec(ways=5, shots=1, queries=5, batch=32)
  assert float(fewshot.episode_accuracy(jax.random.key(0), separable, spec).mean()) == 1.0
  noise = jnp.asarray(rng.normal(size=(6, 20, 8)), jnp.float32)
  assert float(fewshot.episode_accuracy(jax.random.key(0), noise, spec).mean()) < 0.4
  p, counts = prototypes(jnp.array([[0.0, 2.0], [2.0, 4.0], [5.0, 5.0]]), jnp.array([0, 0, 1]), 2)
  np.testing.assert_allclose(p, [[1.0, 3.0], [5.0, 5.0]])
  np.testing.assert_allclose(counts, [2.0, 1.0])
  # From flat embeddings and labels: the class-indexed array holds each class's first m.
  emb, labels = np.asarray(separable).reshape(120, 8), np.repeat(np.arange(6), 20)
  out = fewshot.protonet_accuracy(jax.random.key(0), emb, labels, 6, 5, (1,), 5, 32)
  assert set(out) == {1} and out[1][0] == 1.0
  with pytest.raises(ConfigError, match="shots.*exceeds the 20 examples.*closest"):
    fewshot.check_episodes(labels, 6, 5, (1, 16), 5, 8, "test (closest)")


def test_episodic_head_starts_as_the_trained_blocks():
  """Features entering block depth-k, through a head holding the model's last k blocks and
  norm, give back the model's fused embedding: fine-tuning starts from the trained model."""
  cfg = ModelConfig(**{**TINY.__dict__, "depth": 2, "stem": "patch", "text_condition": "cls"})
  model = MultimodalTransformer(cfg)
  batch = example_batch(cfg, 3)
  params = model.init(jax.random.key(0), batch)["params"]
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), params)
  want = model.apply({"params": params}, batch)["embedding"]
  for k in (1,):  # the input of the last block of two
    x = episodic_head.features(model, params, {**batch, "answer": 0}, k)  # extra keys ignored
    assert x.shape == (3, 1 + cfg.num_patches + 16 + 3 * 5, cfg.dim + 1)
    head = episodic_head.EpisodicHead(episodic_head.HeadSpec.of(cfg, k))
    hp = episodic_head.from_trained(head.init(jax.random.key(2), x)["params"], params, 2, k)
    np.testing.assert_allclose(head.apply({"params": hp}, x), want, atol=1e-5)


def test_episodic_head_meta_trains_to_beat_chance_on_held_out_classes(tmp_path):
  """Class identity lies in 2 of 16 dimensions, swamped by noise in the others: ProtoNet on
  the raw vectors is near chance; a head meta-trained on 40 classes finds the 2 dimensions
  and separates 10 held-out classes it never saw."""
  import ml_collections
  rng = np.random.default_rng(0)
  centres = np.concatenate([rng.normal(size=(50, 1, 2)) * 3, np.zeros((50, 1, 14))], -1)
  x = (centres + np.concatenate([rng.normal(size=(50, 20, 2)) * 0.3,
                                 rng.normal(size=(50, 20, 14)) * 6], -1)).astype(np.float32)
  train, held = x[:40], x[40:]
  cfg = ml_collections.ConfigDict(dict(
      steps=150, tune_blocks=0, proj_dim=8, meta_batch=4, examples_per_class=20, log_every=50,
      optimizer=dict(name="adam", learning_rate=3e-3)))
  sizes = ModelConfig(heads=2, mlp_dim=32, depth=1)
  head, state = episodic_head.train_head(cfg, sizes, {}, train, 5, 5, 5, str(tmp_path), 0)
  spec = EpisodeSpec(ways=5, shots=5, queries=5, batch=200)
  frozen = float(fewshot.episode_accuracy(jax.random.key(1), jnp.asarray(held), spec).mean())
  tuned = float(episodic_head.accuracy(head, state.params, held, spec, jax.random.key(1)).mean())
  assert frozen < 0.45 and tuned > frozen + 0.25 and tuned > 0.6, (frozen, tuned)
  assert [r["step"] for r in runlog.read_metrics(str(tmp_path))] == [50, 100, 150]
  # Resumed: the finished head comes back from its checkpoint, nothing retrained.
  _, again = episodic_head.train_head(cfg, sizes, {}, train, 5, 5, 5, str(tmp_path), 0)
  assert int(again.step) == 150 and len(runlog.read_metrics(str(tmp_path))) == 3


# --- a tiny training run beats chance, through the library step ----------------------------
def test_tiny_training_run_beats_chance():
  """Which question is asked decides which modality answers it: 'colour?' (token 1) is the
  colour of the image (4 classes), 'sign?' (token 2) the sign of the table's number (2
  classes). Chance, even knowing the question kind, is 25% and 50%."""
  cfg = ModelConfig(image_shape=(8, 8, 3), stem="patch", patch=4, vocab_size=4, max_text_len=2,
                    table_numeric=1, table_rows=1, dim=16, depth=1, heads=2, mlp_dim=32,
                    num_classes=6, num_regression=1)
  colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], np.float32)

  def scenes(rng, n):  # n scenes, both questions of each
    c, v = rng.integers(0, 4, n), rng.normal(size=n).astype(np.float32)
    img = colours[c][:, None, None] * 0.8 + rng.random((n, 8, 8, 3)) * 0.2
    text = np.tile(np.array([[1, 0], [2, 0]], np.int32), (n, 1))
    return {"image": (img * 255).astype(np.uint8), "text": text, "text_mask": text > 0,
            "table_num": v[:, None, None], "table_mask": np.ones((n, 1), bool),
            "answer": np.stack([c, 4 + (v > 0)], 1).reshape(-1),
            "target_xy": np.zeros((2 * n, 1), np.float32), "weight": np.ones(2 * n, np.float32)}

  model, params = _init(cfg)
  tx = optim.make_optimizer(dict(name="adam", learning_rate=3e-3), 100)
  keys = ("image", "text", "text_mask", "table_num", "table_mask")  # no categorical columns
  step = jax.jit(steps.make_train_step(model, tx, keys=keys, questions_per_scene=2),
                 donate_argnums=0)
  state, rng = TrainState.create(params, tx), np.random.default_rng(0)
  for _ in range(100):
    state, metrics = step(state, scenes(rng, 16), jax.random.key(1))
  assert np.isfinite(metrics["train/loss"])
  test = scenes(np.random.default_rng(1), 100)
  out = steps.make_predict(model, keys)(state.params, test, questions_per_scene=2)
  correct = np.asarray(out["answer"]) == test["answer"]
  assert correct[0::2].mean() >= 0.25 + 0.5 and correct[1::2].mean() >= 0.5 + 0.35


def test_wsd_schedule_and_the_optimizer_of_the_old_multimodal_trainer():
  """optim's 'wsd' (the multimodal recipe) and make_optimizer equal the trainer's own optax
  chain it replaced: clip_by_global_norm -> adamw(warmup, constant, linear decay)."""
  cfg = dict(name="adamw", learning_rate=1.0, weight_decay=1e-4, clip_norm=1.0, schedule="wsd",
             warmup_steps=10, decay_fraction=0.2)
  lr = np.asarray(optim.schedule(optim._Cfg({**optim.DEFAULTS, **cfg}), 100)(jnp.arange(101)))
  np.testing.assert_allclose(lr[[0, 5, 10, 80]], [0.0, 0.5, 1.0, 1.0])
  np.testing.assert_allclose(lr[[90, 100]], [0.5, 0.0], atol=1e-6)
  import optax
  old_lr = optax.join_schedules([optax.linear_schedule(0.0, 1e-3, 10), optax.constant_schedule(1e-3),
                                 optax.linear_schedule(1e-3, 0.0, 4)], [10, 16])
  old = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(old_lr, weight_decay=1e-4))
  new = optim.make_optimizer({**cfg, "learning_rate": 1e-3}, 20)
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
  ps = {"old": (old, params, old.init(params)), "new": (new, params, new.init(params))}
  for i in range(20):
    for name, (tx, p, s) in ps.items():
      u, s = tx.update(jax.tree.map(lambda x: (x - 0.3) * (i + 1), p), s, p)
      ps[name] = (tx, optax.apply_updates(p, u), s)
  np.testing.assert_allclose(ps["new"][1]["w"], ps["old"][1]["w"], rtol=1e-5, atol=1e-7)
