"""Multimodal transformer, Sort-of-CLEVR data, bad inputs, few-shot head, training path (issue 4)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from metajax.data import sort_of_clevr as soc
from metajax.errors import ConfigError
from metajax.meta.protonet import prototypes
from metajax.multimodal import (ModelConfig, MultimodalTransformer, Preprocessor, TableSchema,
                                encode, load_tokenizer, train_tokenizer)
from metajax.multimodal import fewshot
from metajax.data.episodes import EpisodeSpec

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
  from metajax.multimodal.train import Split
  split = Split(scenes, *encode(tok, scenes["q_text"].tolist(), 16))
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
@pytest.mark.parametrize("fusion", ["early", "late"])
def test_absent_modality_mask_equals_leaving_it_out(scenes, tok, fusion):
  cfg = ModelConfig(**{**TINY.__dict__, "fusion": fusion})
  model = MultimodalTransformer(cfg, rngs=nnx.Rngs(0))
  batch = _batch(scenes, tok)
  full = model(batch)
  assert full["logits"].shape == (4, 10) and full["regression"].shape == (4, 2)
  assert full["embedding"].shape == (4, 16)
  # Table absent for examples 0 and 2 (mask) == table keys left out entirely.
  present = jnp.array([[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]], bool)
  masked = model({**batch, "present": present})["logits"]
  no_table = model({k: v for k, v in batch.items() if not k.startswith("table")})["logits"]
  np.testing.assert_allclose(masked[::2], no_table[::2], atol=1e-5)
  np.testing.assert_allclose(masked[1::2], full["logits"][1::2], atol=1e-5)
  assert not np.allclose(full["logits"][0], no_table[0], atol=1e-5)  # the table matters


@pytest.mark.parametrize("kw", [dict(image_queries=4, stem_channels=(8, 8)),
                                dict(image_pos="sincos", text_condition="all"),
                                dict(text_condition="film"),
                                dict(image_depth=1, image_pos="sincos")])
def test_shared_scenes_equal_repeated_scenes_and_absent_text_equals_omitted(scenes, tok, kw):
  cfg = ModelConfig(**{**TINY.__dict__, **kw})
  model = MultimodalTransformer(cfg, rngs=nnx.Rngs(0))
  batch = _batch(scenes, tok)
  if cfg.text_condition == "film":  # zero-initialised (identity): make it act
    before = model(batch)["logits"]
    film = model.text_film.kernel
    film[...] = jax.random.normal(jax.random.key(1), film.shape)
    assert not np.allclose(model(batch)["logits"], before, atol=1e-4)
  # Two images, two questions each: images and tables given once per image.
  shared = {k: (v[::2] if k == "image" or k.startswith("table") else v) for k, v in batch.items()}
  repeated = {k: (jnp.repeat(v[::2], 2, 0) if k == "image" or k.startswith("table") else v)
              for k, v in batch.items()}
  np.testing.assert_allclose(model(shared)["logits"], model(repeated)["logits"], atol=1e-5)
  present = jnp.array([[1, 0, 1]] * 4, bool)
  no_text = {k: v for k, v in batch.items() if not k.startswith("text")}
  np.testing.assert_allclose(model({**batch, "present": present})["logits"],
                             model(no_text)["logits"], atol=1e-5)
  with pytest.raises(ConfigError, match="divisor of 4"):
    model({**batch, "image": batch["image"][:3]})
  # Shared images alone (an image-only model): `present` gives the number of examples.
  ones = jnp.ones((4, 3), bool)
  np.testing.assert_allclose(model({"image": shared["image"], "present": ones})["logits"],
                             model({"image": repeated["image"], "present": ones})["logits"],
                             atol=1e-5)
  assert model({"image": shared["image"], "present": ones})["logits"].shape == (4, 10)


def test_colour_curriculum_adds_one_colour_per_stage():
  from metajax.multimodal.train import colour_curriculum
  q = np.arange(6)
  np.testing.assert_array_equal(colour_curriculum(q, 0, 200), [1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(colour_curriculum(q, 399, 200), [1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(colour_curriculum(q, 400, 200), [1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(colour_curriculum(q, 10**6, 200), np.ones(6))
  np.testing.assert_array_equal(colour_curriculum(q, 0, 0), np.ones(6))


def test_modality_keys_name_the_inputs_of_each_subset():
  from metajax.multimodal.train import INPUT_KEYS, modality_keys
  assert modality_keys() == INPUT_KEYS
  assert modality_keys((0, 1, 0)) == ("text", "text_mask")
  assert modality_keys((1, 0, 1)) == ("image", "table_cat", "table_num", "table_mask")


def test_scene_batches_are_deterministic_and_grouped_by_image(scenes, tok):
  from metajax.multimodal.train import Split, scene_indices
  split = Split(scenes, *encode(tok, scenes["q_text"].tolist(), 16))
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
  from metajax import parallel
  from metajax.multimodal.train import evaluate, make_predict
  graphdef, params = nnx.split(MultimodalTransformer(TINY, rngs=nnx.Rngs(0)))
  predict, mesh = make_predict(graphdef), parallel.make_mesh()
  idx = np.array([3, 40, 41, 200])
  acc, emb = evaluate(predict, params, split, mesh, 64, indices=idx, want_embeddings=True)
  one = [predict(params, split.batch(idx[i:i + 1]), np.ones((1, 3), bool)) for i in range(4)]
  correct = np.array([int(p[0]) for p, _ in one]) == scenes["q_answer"][idx]
  assert acc["all"] == correct.mean()
  np.testing.assert_allclose(emb, np.concatenate([np.asarray(e) for _, e in one]), atol=1e-5)
  # One epoch of steps visits every image once.
  seen = np.concatenate([scenes["q_image"][scene_indices(0, s, 8, 4, split.by_image)][::4]
                         for s in range(6)])
  assert sorted(seen.tolist()) == list(range(12))


def test_bf16_compute_runs_close_to_float32(scenes, tok):
  batch = _batch(scenes, tok)
  f32 = MultimodalTransformer(TINY, rngs=nnx.Rngs(0))(batch)["logits"]
  bf16 = MultimodalTransformer(ModelConfig(**{**TINY.__dict__, "dtype": "bfloat16"}),
                               rngs=nnx.Rngs(0))(batch)["logits"]
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, atol=0.1)


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
  model = MultimodalTransformer(TINY, rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match=r"75, 75, 3"):
    model({"image": jnp.zeros((1, 75, 75, 4))})
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
    model({"table_num": jnp.zeros((1, 3, 2)), "table_cat": jnp.zeros((1, 3, 2), jnp.int32),
           "table_mask": jnp.ones((1, 3), bool)})
  # A saved tokenizer reloads through PreTrainedTokenizerFast and encodes the same ids.
  tok.save_pretrained(str(tmp_path / "tok"))
  again = load_tokenizer(str(tmp_path / "tok"))
  np.testing.assert_array_equal(encode(again, ["is the red object heavy?"], 16)[0],
                                encode(tok, ["is the red object heavy?"], 16)[0])
  with pytest.raises(ConfigError, match="tokenizer"):
    load_tokenizer(str(tmp_path / "missing"))


def test_tokenizer_training_is_deterministic_and_spells_unseen_words(scenes):
  # The WordPiece trainer breaks ties differently from run to run; the vocabulary we keep
  # must not (without canonical ids, runs of one config trained different embeddings).
  texts = sorted(set(scenes["q_text"].tolist()))
  vocabs = [train_tokenizer(texts, 256).get_vocab() for _ in range(6)]
  assert all(v == vocabs[0] for v in vocabs)
  assert [vocabs[0][t] for t in ("[PAD]", "[UNK]")] == [0, 1]
  tok = train_tokenizer(texts, 256)
  assert "[UNK]" not in tok.tokenize("what shape is the purple thing?")


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


# --- config and training -------------------------------------------------------------------
def _tiny():
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "mm_cfg", os.path.join(os.path.dirname(__file__), "..", "configs",
                             "multimodal_sortofclevr.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config("tiny")


@pytest.mark.parametrize("key,value,match", [
    ("model.heads", 3, "must divide model.dim"), ("model.stem_channels", (), "at least one"),
    ("model.fusion", "middle", "fusion"), ("train.drop.image", 1.0, "drop"),
    ("train.steps", 0, "positive"), ("fewshot.ways", 7, "6 colour"),
    ("train.questions_per_image", 23, "22 questions"), ("train.questions_per_image", 3,
                                                         "whole images"),
    ("train.stop_at", 95, "fraction"), ("data.num_val", -1, "num_val"),
    ("compare.late_fusion_steps", -2, "-1"), ("model.image_pos", "rope", "sincos"),
    ("compare.ablations", ("text only", "text only"), "twice"),
    ("compare.ablations", ("image+text+table",), "'image only'"),
    ("model.stem", "vit", "'conv', 'patch'"), ("train.colour_curriculum", -1, "colour_curr")])
def test_bad_config_fails_before_touching_the_workdir(tmp_path, key, value, match):
  from metajax.multimodal.train import train_and_evaluate
  c = _tiny()
  section, _, name = key.rpartition(".")
  node = c
  for part in section.split("."):
    node = node[part]
  node[name] = value
  with pytest.raises(ConfigError, match=match):
    train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_early_stopping_needs_a_validation_split(tmp_path):
  from metajax.multimodal.train import train_and_evaluate
  c = _tiny()
  c.data.num_val, c.train.stop_at = 0, 0.9
  with pytest.raises(ConfigError, match="never the test set"):
    train_and_evaluate(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_wsd_schedule_and_which_resumes_keep_the_trajectory():
  from ml_collections import ConfigDict
  from metajax.multimodal.train import lr_schedule, same_lr_so_far
  const = ConfigDict(dict(steps=100, learning_rate=1.0, warmup_steps=10, schedule="constant"))
  wsd = ConfigDict({**const.to_dict(), "schedule": "wsd", "decay_fraction": 0.2})
  lr = np.asarray(lr_schedule(wsd, 100)(jnp.arange(101)))
  np.testing.assert_allclose(lr[[0, 5, 10, 80]], [0.0, 0.5, 1.0, 1.0])
  np.testing.assert_allclose(lr[[90, 100]], [0.5, 0.0], atol=1e-6)
  assert same_lr_so_far(const, wsd, taken=81)       # steps 0..80 at the constant rate
  assert not same_lr_so_far(const, wsd, taken=82)   # step 81 took 1.0, the cool-down 0.95
  longer = ConfigDict({**const.to_dict(), "steps": 300})
  assert same_lr_so_far(const, longer, 100) and same_lr_so_far(longer, const, 100)
  assert not same_lr_so_far(longer, const, 150)     # stopped at 150: can't end at 100
  cos = ConfigDict({**const.to_dict(), "schedule": "cosine"})
  assert not same_lr_so_far(cos, ConfigDict({**cos.to_dict(), "steps": 200}), 50)


def test_early_stopping_may_change_on_resume_only_where_it_would_not_have_stopped():
  from metajax.multimodal.train import stop_at_kept
  rows = [{"step": 50, "train/loss": 1.0},
          {"step": 50, "eval/relational": 0.6, "eval/non-relational": 0.9},
          {"step": 100, "eval/relational": 0.96, "eval/non-relational": 0.97}]
  assert stop_at_kept(rows, 0.0, taken=100)        # off: never stops
  assert stop_at_kept(rows, 0.95, taken=100)       # first reached at 100, where it stands
  assert not stop_at_kept(rows, 0.95, taken=150)   # would have stopped at 100, not gone on
  assert not stop_at_kept(rows, 0.5, taken=100)    # would have stopped at 50
  assert stop_at_kept(rows, 0.5, taken=50)
  assert stop_at_kept(rows, 0.99, taken=150)       # never reached


def test_tiny_run_trains_resumes_and_reports(tmp_path):
  from metajax import runlog
  from metajax.multimodal.train import train_and_evaluate
  c = _tiny()
  c.data.data_dir = str(tmp_path / "data")
  c.compare.late_fusion_steps = 0
  c.compare.ablations = ()
  c.train.steps, c.train.schedule = 2, "constant"
  train_and_evaluate(c, str(tmp_path / "run"))
  first = runlog.read_metrics(str(tmp_path / "run"))
  # Resumed with more steps (constant learning rate: the run continues where it stopped)
  # and more trained baselines, the config changes a finished run accepts.
  c.train.steps = 4
  c.compare.ablations = ("text only",)
  c.compare.late_fusion_steps = 2
  out = train_and_evaluate(c, str(tmp_path / "run"))
  rows = runlog.read_metrics(str(tmp_path / "run"))
  assert rows[:len(first)] == first
  assert [r["step"] for r in rows if "train/loss" in r] == [2, 4]
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  (abl,) = out["ablations"]
  assert abl["trained on"] == "text only" and abl["steps"] == 2
  assert [r["step"] for r in runlog.read_metrics(str(tmp_path / "run" / "ablation_text_only_2"))
          if "train/loss" in r] == [2]
  assert out["late_fusion"] is not None
  assert [r["step"] for r in runlog.read_metrics(str(tmp_path / "run" / "late_fusion_2"))
          if "train/loss" in r] == [2]
  text = open(out["report"]).read()
  for needle in ("CNN+RN (published)", "relational", "image+text", "text only", "ProtoNet",
                 "Separately trained ablations", "Early vs late fusion",
                 "Accuracy per question family", "closest_heavy"):
    assert needle in text
  # Rerun with the same config: resumes at the last checkpoints (no new training rows,
  # the same numbers).
  again = train_and_evaluate(c, str(tmp_path / "run"))
  assert runlog.read_metrics(str(tmp_path / "run")) == rows
  assert again["accuracy"] == out["accuracy"] and again["ablations"] == out["ablations"]
  c.model.dim = 32
  with pytest.raises(ConfigError, match="model.dim: 16 -> 32"):  # not an extendable key
    train_and_evaluate(c, str(tmp_path / "run"))
  c.model.dim, c.train.steps = 16, 2
  with pytest.raises(ConfigError, match="train.steps: 4 -> 2"):  # steps may only grow
    train_and_evaluate(c, str(tmp_path / "run"))
  # A run configured for more steps and stopped by hand at its checkpoint (step 4) may be
  # finished there: the same numbers, no training.
  cfg_path = tmp_path / "run" / runlog.CONFIG_FILE
  saved = json.loads(cfg_path.read_text())
  saved["train"]["steps"] = 9
  cfg_path.write_text(json.dumps(saved))
  c.train.steps = 4
  assert train_and_evaluate(c, str(tmp_path / "run"))["accuracy"] == out["accuracy"]
  assert runlog.read_metrics(str(tmp_path / "run")) == rows
  res = json.load(open(tmp_path / "run" / "results.json"))
  assert set(res["accuracy"]) >= {"image+text+table", "text only"}
  full = res["accuracy"]["image+text+table"]
  assert {f"family/{f}" for f in soc.FAMILIES} <= set(full)
  # The group accuracy is the question-weighted mean of its families' accuracies.
  test = soc.load(c.data.data_dir, c.data.num_train, c.data.num_test, c.seed, c.data.table_rows,
                  c.data.num_val)["test"]
  fams = [i for i, f in enumerate(soc.FAMILIES) if soc.GROUP[f] == "relational"]
  counts = [(test["q_family"] == i).sum() for i in fams]
  mean = sum(n * full[f"family/{soc.FAMILIES[i]}"] for n, i in zip(counts, fams)) / sum(counts)
  assert full["relational"] == pytest.approx(mean)
  # The trained model answers a researcher's raw image / question / table.
  from metajax.multimodal.train import load_trained
  model, pre = load_trained(str(tmp_path / "run"))
  scenes = soc.generate(2, seed=9)
  rows = [[dict(colour="red", shape="circle", x=10, y=20, weight=7.5)], []]
  logits = model(pre(images=scenes["images"], texts=["is the red object heavy?"] * 2,
                     tables=rows))["logits"]
  assert logits.shape == (2, len(soc.ANSWERS)) and np.isfinite(logits).all()
  assert model(pre(texts=["is the red object heavy?"]))["logits"].shape == (1, 10)
