"""Every config in configs/ loads, takes overrides, and runs end to end in its tiny mode
(those that read a trained multimodal run in test_multimodal_run.py, which shares one)."""

import glob
import importlib.util
import os

import pytest

from metajax import experiments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if os.path.basename(p) not in ("common.py", "__init__.py"))


def load(path, mode=""):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(mode)


def test_there_are_configs():
  assert any(p.endswith("protonet_glyphs.py") for p in CONFIGS)


def check_config(path):
  """What every config must hold besides its tiny run: it loads, names a registered
  experiment, keeps its keys in tiny mode, and its docstring gives the command."""
  full, tiny = load(path), load(path, "tiny")
  assert full.experiment in experiments.EXPERIMENTS.names()
  assert set(full.keys()) == set(tiny.keys()), "tiny mode must keep the same keys"
  doc = open(path).read()
  assert "python -m launch.main" in doc, "the docstring must give the command"
  return tiny


def name_of(path):
  return os.path.basename(path)[:-3]


# Configs that read a trained multimodal run, and compress_models' ProtoNet source: their tiny
# runs are made in test_multimodal_run.py, on the tiny run its own tests share. The path that
# trains a source first ('' source) is distill_sortofclevr's, which keeps it.
ELSEWHERE = ("compress_models", "multimodal_fewshot", "multimodal_sortofclevr", "protonet_glyphs")
HERE = [p for p in CONFIGS if name_of(p) not in ELSEWHERE]


def test_every_config_runs_tiny_in_exactly_one_file():
  import test_multimodal_run
  names = sorted(map(name_of, CONFIGS))
  assert sorted(test_multimodal_run.CONFIGS) == sorted(ELSEWHERE)
  assert sorted([name_of(p) for p in HERE] + list(ELSEWHERE)) == names


@pytest.mark.parametrize("path", HERE, ids=name_of)
def test_config_runs_tiny(path, tmp_path):
  tiny = check_config(path)
  result = experiments.run(tiny, str(tmp_path / "run"))
  assert os.path.exists(result["report"])
