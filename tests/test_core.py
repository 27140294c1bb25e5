"""Registry, errors, run log and report helpers."""

import json
import os

import ml_collections
import numpy as np
import pytest

from metajax import runlog
from metajax.errors import ConfigError
from metajax.registry import Registry
from metajax.report import mean_ci95, md_table


def test_registry_unknown_name_lists_valid_ones():
  r = Registry("model")
  r.register("b", 1)
  r.register("a", "json:dumps")  # lazy
  assert r.get("a") is json.dumps and r.names() == ["a", "b"]
  with pytest.raises(ConfigError, match=r"config.model='c' is invalid.*Valid: a, b"):
    r.get("c")
  with pytest.raises(KeyError):
    r.register("b", 2)


def test_mean_ci95_matches_formula():
  x = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
  m, h = mean_ci95(x)
  assert m == pytest.approx(0.6) and h == pytest.approx(1.96 * x.std(ddof=1) / np.sqrt(5))
  assert "| a | b |" in md_table(["a", "b"], [[1, 2.5]])


def test_metric_writer_truncates_on_resume(tmp_path):
  w = runlog.MetricWriter(str(tmp_path))
  for s in (10, 20, 30):
    w.write(s, {"train/loss": s / 10})
  w.close()
  with open(tmp_path / runlog.METRICS_FILE, "a") as f:
    f.write('{"step": 40, "train/lo')  # torn line of a killed run
  assert [r["step"] for r in runlog.read_metrics(str(tmp_path))] == [10, 20, 30]
  w = runlog.MetricWriter(str(tmp_path), resume_step=20)
  w.write(30, {"train/loss": 9.0})
  w.close()
  rows = runlog.read_metrics(str(tmp_path))
  assert [(r["step"], r["train/loss"]) for r in rows] == [(10, 1.0), (20, 2.0), (30, 9.0)]


def test_prepare_workdir_refuses_other_config(tmp_path):
  c = ml_collections.ConfigDict({"a": 1, "b": {"c": 2}})
  assert runlog.prepare_workdir(str(tmp_path), c) is False
  assert runlog.prepare_workdir(str(tmp_path), c) is True
  c.b.c = 3
  with pytest.raises(ConfigError, match=r"b.c: 2 -> 3"):
    runlog.prepare_workdir(str(tmp_path), c)
  assert json.load(open(tmp_path / "config.json"))["b"]["c"] == 2
  # An extendable key may change on resume (added post-run work); others still may not.
  c.b.c = 2
  c.extra = [1]
  grow = {"extra": lambda old, new: "extra" not in old}
  assert runlog.prepare_workdir(str(tmp_path), c, extendable=grow) is True
  assert json.load(open(tmp_path / "config.json"))["extra"] == [1]
  c.a = 5
  with pytest.raises(ConfigError, match=r"a: 1 -> 5"):
    runlog.prepare_workdir(str(tmp_path), c, extendable=grow)
  c.a, c.extra = 1, [2]  # an extendable key whose change its rule refuses
  with pytest.raises(ConfigError, match=r"extra: \[1\] -> \[2\]"):
    runlog.prepare_workdir(str(tmp_path), c, extendable=grow)
  # A key added to the code after the run resumes at the value that reproduces the old code.
  c.extra = [1]
  c.b.new = 0
  with pytest.raises(ConfigError, match=r"b.new: None -> 0"):
    runlog.prepare_workdir(str(tmp_path), c, extendable=grow)
  assert runlog.prepare_workdir(str(tmp_path), c, extendable=grow, added={"b.new": 0}) is True
  assert json.load(open(tmp_path / "config.json"))["b"]["new"] == 0
  c.b.new = 1  # now recorded: a change is refused like any other
  with pytest.raises(ConfigError, match=r"b.new: 0 -> 1"):
    runlog.prepare_workdir(str(tmp_path), c, extendable=grow, added={"b.new": 0})
  del c.b["new"]
  other = tmp_path / "other"
  runlog.prepare_workdir(str(other), c)
  c.b.new = 1  # absent before, but not the value that reproduces the old code
  with pytest.raises(ConfigError, match=r"b.new: None -> 1"):
    runlog.prepare_workdir(str(other), c, added={"b.new": 0})


def test_check_finite_names_the_metric():
  runlog.check_finite(3, {"train/loss": 1.0, "train/accuracy": float("nan")})
  with pytest.raises(FloatingPointError, match="train/loss became nan at step 7"):
    runlog.check_finite(7, {"train/loss": float("nan")})


def test_atomic_write_leaves_no_temp_files(tmp_path):
  runlog.atomic_write(str(tmp_path / "x.txt"), "hello")
  assert os.listdir(tmp_path) == ["x.txt"] and (tmp_path / "x.txt").read_text() == "hello"
