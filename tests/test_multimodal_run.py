"""The Sort-of-CLEVR driver on one shared tiny run (issue 4): config checks, resume,
results, few-shot of a finished run, the saved model; and the tiny runs of the configs that
read a trained multimodal run, on that same run (test_configs.py runs every other config)."""

import json
import os

import numpy as np
import pytest

import metajax
from metajax import experiments, runlog
from metajax.data import sort_of_clevr as soc
from metajax.errors import ConfigError
from metajax.experiments import sort_of_clevr as driver
from metajax.multimodal import encode, load_tokenizer, steps

import test_configs

# The configs whose tiny runs this file makes, each once: multimodal_fewshot's in
# test_fewshot_of_a_finished_run_..., the others' in test_config_runs_tiny.
CONFIGS = ("compress_models", "multimodal_fewshot", "multimodal_sortofclevr", "protonet_glyphs")


def _path(name):
  return os.path.join(test_configs.ROOT, "configs", f"{name}.py")


def _tiny():
  return test_configs.load(_path("multimodal_sortofclevr"), "tiny")


@pytest.mark.parametrize("key,value,match", [
    ("model.heads", 3, "must divide model.dim"), ("model.stem_channels", (), "at least one"),
    ("model.fusion", "middle", "fusion"), ("train.drop.image", 1.0, "drop"),
    ("train.steps", 0, "positive"), ("eval.fewshot.ways", 7, "6 colour"),
    ("train.questions_per_image", 23, "22 questions"), ("train.questions_per_image", 3,
                                                         "whole images"),
    ("train.stop_at", 95, "fraction"), ("data.num_val", -1, "num_val"),
    ("eval.late_fusion_steps", -2, "-1"), ("model.image_pos", "rope", "sincos"),
    ("eval.ablations", ("text only", "text only"), "twice"),
    ("eval.ablations", ("image+text+table",), "'image only'"),
    ("model.stem", "vit", "'conv', 'patch'"), ("train.colour_curriculum", -1, "colour_curr"),
    ("optimizer.schedule", "linear", "optimizer.schedule.*'wsd'"),
    ("model.depht", 2, "model.depht.*no such argument"), ("data.name", "glyphs", "data.name"),
    ("text.tokenizer", "/nonexistent", "no tokenizer directory"),
    ("eval.fewshot.shots", 99, "eval.fewshot.head.examples_per_class.*shots \\+ queries"),
    ("eval.fewshot.head.tune_blocks", 2, "encoder has 1 blocks"),
    ("eval.fewshot.head.colours", 2, "3-way"), ("eval.fewshot.head.min_distance", 400.0,
                                                "colours lie 400.0"),
    ("data.table_rows", 7, "6 objects")])
def test_bad_config_fails_before_touching_the_workdir(tmp_path, key, value, match):
  c = _tiny()
  c.data.data_dir = str(tmp_path / "data")
  c.model.stem = "conv"  # stem_channels is checked for the conv stem (tiny uses patches)
  section, _, name = key.rpartition(".")
  node = c
  for part in section.split("."):
    node = node[part]
  node[name] = value
  with pytest.raises(ConfigError, match=match):
    driver.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_early_stopping_needs_a_validation_split(tmp_path):
  c = _tiny()
  c.data.num_val, c.train.stop_at = 0, 0.9
  with pytest.raises(ConfigError, match="never the test set"):
    driver.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """One tiny run, shared: 2 steps without baselines, then resumed to 4 steps with a late-
  fusion baseline and a trained ablation (settings a finished run accepts: more
  train.steps, eval.*), which makes it the config's tiny run (in its own data_dir).
  Returns (config, workdir, metric rows of the first part, output)."""
  root = tmp_path_factory.mktemp("mm")
  c = _tiny()
  c.data.data_dir = str(root / "data")
  tiny = c.copy_and_resolve_references()
  c.eval.update(late_fusion_steps=0, ablations=())
  c.eval.fewshot.episodes = 0
  c.train.steps = 2
  workdir = str(root / "run")
  experiments.run(c, workdir)
  first = runlog.read_metrics(workdir)
  return tiny, workdir, first, experiments.run(tiny, workdir)


def test_tiny_run_trains_resumes_and_reports(tiny_run):
  c, workdir, first, out = tiny_run
  rows = runlog.read_metrics(workdir)
  assert rows[:len(first)] == first  # resumed where it stopped
  assert [r["step"] for r in rows if "train/loss" in r] == [2, 4]
  assert all(np.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)
  (abl,) = out["ablations"]
  assert abl["trained on"] == "text only" and abl["steps"] == 2
  assert [r["step"] for r in runlog.read_metrics(os.path.join(workdir, "ablation_text_only_2"))
          if "train/loss" in r] == [2]
  assert out["late_fusion"] is not None
  assert [r["step"] for r in runlog.read_metrics(os.path.join(workdir, "late_fusion_2"))
          if "train/loss" in r] == [2]
  text = open(out["report"]).read()
  for needle in ("CNN+RN (published)", "relational", "image+text", "text only", "ProtoNet",
                 "Separately trained ablations", "Early vs late fusion",
                 "Accuracy per question family", "closest_heavy", "load_trained"):
    assert needle in text
  # Rerun with the same config: resumes at the last checkpoints (no new training rows,
  # the same numbers).
  # The finished run's evaluations are kept, not recomputed: report and results untouched.
  stamps = {f: os.path.getmtime(os.path.join(workdir, f)) for f in ("report.md", "results.json")}
  again = driver.run(c, workdir)
  assert runlog.read_metrics(workdir) == rows
  assert {f: os.path.getmtime(os.path.join(workdir, f)) for f in stamps} == stamps
  for k in ("accuracy", "ablations", "late_fusion", "fewshot"):
    assert again[k] == runlog.strict(out[k]), k
  # Plain resume: any other change is refused, naming the key.
  c2 = c.copy_and_resolve_references()
  c2.model.dim = 32
  with pytest.raises(ConfigError, match="model.dim: 16 -> 32"):
    driver.run(c2, workdir)
  c2.model.dim, c2.train.steps = 16, 2
  with pytest.raises(ConfigError, match="train.steps: 4 -> 2"):  # steps may only grow
    driver.run(c2, workdir)
  c2.train.steps, c2.train.stop_at = 4, 0.5
  with pytest.raises(ConfigError, match="train.stop_at: 0.0 -> 0.5"):
    driver.run(c2, workdir)
  assert runlog.read_metrics(workdir) == rows


def test_results_json_is_strict_and_groups_weigh_their_families(tiny_run):
  c, workdir, _, out = tiny_run
  raw = open(os.path.join(workdir, "results.json")).read()
  res = json.loads(raw, parse_constant=lambda x: pytest.fail(f"{x} in results.json"))
  assert set(res["accuracy"]) >= {"image+text+table", "text only"}
  full = res["accuracy"]["image+text+table"]
  assert {f"family/{f}" for f in soc.FAMILIES} <= set(full)
  assert set(res["fewshot"]) == {f"{e}/{k}" for e in ("trained", "random init", "episodic head")
                                 for k in (1, 2)}
  # The group accuracy is the question-weighted mean of its families' accuracies.
  test = soc.load(c.data.data_dir, c.data.num_train, c.data.num_test, c.seed, c.data.table_rows,
                  c.data.num_val)["test"]
  fams = [i for i, f in enumerate(soc.FAMILIES) if soc.GROUP[f] == "relational"]
  counts = [(test["q_family"] == i).sum() for i in fams]
  mean = sum(n * full[f"family/{soc.FAMILIES[i]}"] for n, i in zip(counts, fams)) / sum(counts)
  assert full["relational"] == pytest.approx(mean)
  # A group without questions is NaN in the metrics, null in results.json (strict JSON).
  assert driver.report.strict({"a": float("nan"), ("x", 1): [1.0, float("inf")]}) == {
      "a": None, "x/1": [1.0, None]}


def test_fewshot_of_a_finished_run_reads_it_and_writes_its_own_workdir(tiny_run, tmp_path):
  """configs/multimodal_fewshot.py: few-shot of a finished run from its checkpoint, without
  retraining it or writing into it; rerun, the head resumes from its own checkpoint."""
  from metajax.experiments import sort_of_clevr_fewshot as few
  c, workdir, _, _ = tiny_run
  before = _tree(workdir)
  fc = test_configs.check_config(_path("multimodal_fewshot"))
  fc.trained = workdir  # data_dir '': the trained run's
  out = experiments.run(fc, str(tmp_path / "fs"))  # the config's tiny run
  assert set(out["fewshot"]) == {(e, k) for e in ("trained", "random init", "episodic head")
                                 for k in (1, 2)}
  assert all(0 <= m <= 1 for m, _ in out["fewshot"].values())
  assert "episodic head" in open(out["report"]).read()
  head = few.head_dir(str(tmp_path / "fs"), fc.eval.fewshot.head)
  rows = runlog.read_metrics(head)
  assert [r["step"] for r in rows] == [1, 2]
  assert few.run(fc, str(tmp_path / "fs"))["fewshot"] == out["fewshot"]
  assert runlog.read_metrics(head) == rows  # resumed, not retrained
  assert _tree(workdir) == before
  fc.trained = str(tmp_path / "fs")
  with pytest.raises(ConfigError, match="holds no model.json"):
    few.run(fc, str(tmp_path / "fs2"))


def _tree(path):
  return sorted((os.path.relpath(os.path.join(d, f), path), os.path.getmtime(os.path.join(d, f)))
                for d, _, files in os.walk(path) for f in files)


def test_trained_model_loads_from_its_card_and_answers_raw_inputs(tiny_run, tmp_path):
  c, workdir, _, out = tiny_run
  before = _tree(workdir)
  card = json.load(open(os.path.join(workdir, "model.json")))
  assert card["kind"] == "multimodal" and card["model"]["name"] == "multimodal_transformer"
  assert card["table_schema"]["numeric"][2] == {"name": "weight", "offset": 0.0, "scale": 10.0}
  assert card["answers"] == list(soc.ANSWERS) and card["tokenizer"] == "tokenizer"
  trained = metajax.load_trained(workdir)
  scenes = soc.generate(2, seed=9)
  tables = [[dict(colour="red", shape="circle", x=10, y=20, weight=7.5)], []]
  got = trained.predict(images=scenes["images"], texts=["is the red object heavy?"] * 2,
                        tables=tables)
  assert got["logits"].shape == (2, len(soc.ANSWERS)) and np.isfinite(got["logits"]).all()
  assert all(a in soc.ANSWERS for a in got["answer"]) and got["embedding"].shape == (2, 16)
  assert trained.predict(texts=["is the red object heavy?"])["logits"].shape == (1, 10)
  # Raw test questions give the logits of the run's own encoded batches, and evaluate()
  # scores predict()'s answers.
  test = soc.load(c.data.data_dir, c.data.num_train, c.data.num_test, c.seed, c.data.table_rows,
                  c.data.num_val)["test"]
  cols = list(soc.TABLE_CATEGORICAL) + list(soc.TABLE_NUMERIC)
  tables = [[dict(zip(cols, [soc.COLOURS[cat[0]], soc.SHAPES[cat[1]], *map(float, num)]))
             for cat, num in zip(test["table_cat"][i], test["table_num"][i])]
            for i in test["q_image"]]
  raw = dict(images=test["images"][test["q_image"]], texts=test["q_text"].tolist(), tables=tables)
  got = trained.predict(**raw)
  split = soc.Split(test, *encode(load_tokenizer(os.path.join(workdir, "tokenizer")),
                                  test["q_text"].tolist(), c.model.max_text_len))
  ref = steps.make_predict(trained.model)(trained.params, split.batch(np.arange(split.size)))
  np.testing.assert_allclose(got["logits"], ref["logits"], atol=1e-5)
  answers = [soc.ANSWERS[a] for a in test["q_answer"]]
  ev = trained.evaluate(answers, **raw, batch_size=len(answers))
  assert ev == {"accuracy": np.mean(np.array(got["answer"]) == answers), "examples": len(answers)}
  with pytest.raises(ConfigError, match="answers.*'maybe'.*yes, no"):
    trained.evaluate(["maybe"], texts=["is the red object heavy?"])
  # A baseline is a trained model too: the late-fusion one loads from its own card.
  late = metajax.load_trained(os.path.join(workdir, "late_fusion_2"))
  assert late.model.cfg.fusion == "late"
  assert late.predict(texts=["is the red object heavy?"])["logits"].shape == (1, 10)
  assert _tree(workdir) == before  # loading wrote nothing
  with pytest.raises(ConfigError, match="holds no model.json"):
    metajax.load_trained(workdir + "_typo")
  assert not os.path.exists(workdir + "_typo")
  # A checkpoint that does not fit the card is an error, not a silently fresh model.
  import shutil
  other = tmp_path / "other"
  shutil.copytree(workdir, other, ignore=shutil.ignore_patterns("late_*", "ablation_*"))
  card["model"]["dim"] = 32
  (other / "model.json").write_text(json.dumps(card))
  with pytest.raises(ConfigError, match="does not fit this model"):
    metajax.load_trained(str(other))


@pytest.fixture(scope="module")
def tiny_runs(tiny_run, tmp_path_factory):
  """name -> (workdir, result) of a config's tiny run, each made once: multimodal_sortofclevr's
  is tiny_run, and compress_models reads it and protonet_glyphs' as its sources."""
  runs = {"multimodal_sortofclevr": (tiny_run[1], tiny_run[3])}

  def run(name):
    if name not in runs:
      c = test_configs.load(_path(name), "tiny")
      if name == "compress_models":
        c.multimodal.source = run("multimodal_sortofclevr")[0]
        c.protonet.source = run("protonet_glyphs")[0]
      workdir = str(tmp_path_factory.mktemp(name) / "run")
      runs[name] = workdir, experiments.run(c, workdir)
    return runs[name]
  return run


@pytest.mark.parametrize("name", [n for n in CONFIGS if n != "multimodal_fewshot"])
def test_config_runs_tiny(name, tiny_runs):
  test_configs.check_config(_path(name))
  _, result = tiny_runs(name)
  assert os.path.exists(result["report"])
