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


# Configs that read trained runs: the key naming each source and the config whose tiny run
# serves as it. Their own "train the source first" path ('' source) is covered by
# distill_sortofclevr, which keeps it; sharing the sources saves the suite a minute.
SOURCES = {
    "compress_models": {"multimodal.source": "multimodal_sortofclevr",
                        "protonet.source": "protonet_glyphs"},
    "multimodal_fewshot": {"trained": "multimodal_sortofclevr"},
}


def name_of(path):
  return os.path.basename(path)[:-3]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
  """name -> (workdir, result) of that config's tiny run, each trained once per module."""
  runs = {}

  def run(name):
    if name not in runs:
      workdir = str(tmp_path_factory.mktemp(name) / "run")
      tiny = load(os.path.join(ROOT, "configs", f"{name}.py"), "tiny")
      for key, source in SOURCES.get(name, {}).items():
        *parents, leaf = key.split(".")
        node = tiny
        for part in parents:
          node = node[part]
        node[leaf] = run(source)[0]
      runs[name] = workdir, experiments.run(tiny, workdir)
    return runs[name]
  return run


@pytest.mark.parametrize("path", CONFIGS, ids=name_of)
def test_config_runs_tiny(path, tiny_runs):
  full, tiny = load(path), load(path, "tiny")
  assert full.experiment in experiments.EXPERIMENTS.names()
  assert set(full.keys()) == set(tiny.keys()), "tiny mode must keep the same keys"
  doc = open(path).read()
  assert "python -m launch.main" in doc, "the docstring must give the command"
  _, result = tiny_runs(name_of(path))
  assert os.path.exists(result["report"])
