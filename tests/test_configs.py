"""Every config in configs/ loads, takes overrides, and runs end to end in its tiny mode."""

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


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p)[:-3])
def test_config_runs_tiny(path, tmp_path):
  full, tiny = load(path), load(path, "tiny")
  assert full.experiment in experiments.EXPERIMENTS.names()
  assert set(full.keys()) == set(tiny.keys()), "tiny mode must keep the same keys"
  doc = open(path).read()
  assert "python -m launch.main" in doc, "the docstring must give the command"
  result = experiments.run(tiny, str(tmp_path / "run"))
  assert os.path.exists(result["report"])
