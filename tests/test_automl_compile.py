"""AutoML compiles once per family: masked widths, depths and batch sizes (mlp, gru) equal
the exact programs, the users' grid compiles one program, the persistent cache, progress lines."""

import os
import subprocess
import sys

import jax
import numpy as np

from metajax import parallel
from metajax.automl import config as config_lib, engine, population

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _programs():
  return population.Programs(parallel.make_mesh(1))


def _pad_gates(a, U):
  """[..., 3u] (gate blocks r | z | n) -> [..., 3U], each block zero-padded."""
  u = a.shape[-1] // 3
  width = [(0, 0)] * (a.ndim - 1) + [(0, U - u)]
  return np.concatenate([np.pad(a[..., g * u:(g + 1) * u], width) for g in range(3)], -1)


def _embed(small, big, rename, gates=()):
  """`small` zero-padded into the shapes of `big` (dict keys renamed by `rename`; leaves named
  in `gates` have three gate blocks on their last axis)."""

  def pad(path, b):
    node, name = small, None
    for p in path:
      k = getattr(p, "key", getattr(p, "name", getattr(p, "idx", None)))
      if isinstance(node, dict):
        k = rename.get(k, k)
        if k is None:  # a layer the small network does not have: zeros
          return np.zeros(b.shape, b.dtype)
        node, name = node[k], k
      else:
        node = getattr(node, k) if isinstance(k, str) else node[k]
    a = np.asarray(node)
    if a.ndim == 0:
      return a.astype(b.dtype)
    if name in gates:
      a = _pad_gates(a, b.shape[-1] // 3)
    return np.pad(a, [(0, B - s) for s, B in zip(a.shape, b.shape)]).astype(b.dtype)

  return jax.tree_util.tree_map_with_path(pad, big)


def test_masked_member_equals_its_exact_program():
  """A member with 2 layers x 8 units and batch 16 trained inside the program of 3 x 16 and
  batch 32 (layers, units and batch masked) follows the program of exactly its size: same
  parameters (zero-padded, inactive ones stay 0), losses and validation probabilities."""
  rng = np.random.default_rng(0)
  X = rng.normal(size=(70, 5)).astype(np.float32)  # 70 // 16 = 4 steps, 6 rows dropped
  Y = (X[:, 0] - X[:, 2] > 0).astype(np.int32)
  progs = _programs()
  Xd, Yd = parallel.replicate(X, progs.mesh), parallel.replicate(Y, progs.mesh)
  exact = population.Arch("mlp", 2, 8, 16, (5,), 2, 4)
  big = population.Arch("mlp", 3, 16, 32, (5,), 2, 2)
  hps = [dict(learning_rate=0.05, optimizer=o, dropout=0.0, layers=2, units=8, batch_size=16,
              weight_decay=1e-3) for o in ("adam", "rmsprop")]
  start = population.unstack(jax.device_get(progs.init(
      exact, np.array([1, 2], np.uint32), population.hp_arrays(hps, exact))), 2)
  fresh_big = population.unstack(jax.device_get(progs.init(
      big, np.array([1, 2], np.uint32), population.hp_arrays(hps, big))), 2)
  for m in fresh_big:  # a masked init is the smaller network zero-padded
    k1 = np.asarray(m.state.params["Dense_1"]["kernel"])
    assert (k1[8:] == 0).all() and (k1[:, 8:] == 0).all() and (k1[:8, :8] != 0).all()
    assert (np.asarray(m.state.params["Dense_3"]["kernel"])[8:] == 0).all()
    assert (np.asarray(m.state.params["Dense_2"]["kernel"]) == 0).all()  # layer 3: inactive
  padded = [_embed(s, b, {"Dense_3": "Dense_2", "Dense_2": None}) for s, b in zip(start, fresh_big)]
  a, ca, pa, _ = population.train_population(progs, exact, 2, [1, 2], hps, start, 2, Xd, Yd, Xd)
  b, cb, pb, _ = population.train_population(progs, big, 2, [1, 2], hps, padded, 2, Xd, Yd, Xd)
  np.testing.assert_allclose(cb, ca, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pb, pa, rtol=1e-5, atol=1e-6)
  for ma, mb in zip(a, b):
    assert int(mb.state.step) == int(ma.state.step) == 8  # 2 epochs x 70 // 16 steps
    want = _embed(ma.state.params, mb.state.params, {"Dense_3": "Dense_2", "Dense_2": None})
    for x, y in zip(jax.tree.leaves(mb.state.params), jax.tree.leaves(want)):
      np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_masked_gru_member_equals_its_exact_program():
  """gru units are masked too: 8 units inside the program of 16 (batch 8 inside 16) follow the
  program of exactly 8 units."""
  rng = np.random.default_rng(0)
  y = (np.arange(40) % 2).astype(np.int32)
  ids = rng.integers(3, 20, size=(40, 6)).astype(np.int32)
  ids[:, 0] = 1 + y
  ids[::3, 4:] = 0  # padding
  progs = _programs()
  Xd, Yd = parallel.replicate(ids, progs.mesh), parallel.replicate(y, progs.mesh)
  exact = population.Arch("gru", 1, 8, 8, (6,), 2, 5, 20)
  big = population.Arch("gru", 1, 16, 16, (6,), 2, 2, 20)
  hps = [dict(learning_rate=0.03, optimizer="adam", dropout=0.0, units=8, batch_size=8)]
  start = population.unstack(jax.device_get(progs.init(
      exact, np.array([4], np.uint32), population.hp_arrays(hps, exact))), 1)
  fresh = population.unstack(jax.device_get(progs.init(
      big, np.array([4], np.uint32), population.hp_arrays(hps, big))), 1)
  wx = np.asarray(fresh[0].state.params["wx"])
  assert (wx[8:] == 0).all() and (wx[:, 8:16] == 0).all() and (wx[:8, 16:24] != 0).all()
  padded = [_embed(start[0], fresh[0], {}, gates=("wx", "wh", "b"))]
  a, ca, pa, _ = population.train_population(progs, exact, 1, [4], hps, start, 2, Xd, Yd, Xd)
  b, cb, pb, _ = population.train_population(progs, big, 1, [4], hps, padded, 2, Xd, Yd, Xd)
  np.testing.assert_allclose(cb, ca, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pb, pa, rtol=1e-5, atol=1e-6)
  want = _embed(a[0].state.params, b[0].state.params, {}, gates=("wx", "wh", "b"))
  for x, w in zip(jax.tree.leaves(b[0].state.params), jax.tree.leaves(want)):
    np.testing.assert_allclose(x, w, rtol=1e-5, atol=1e-6)


def test_masked_init_keeps_the_smaller_networks_scale():
  """Live weights of a masked member are drawn at the small network's fan-in (He)."""
  progs = _programs()
  big = population.Arch("mlp", 2, 256, 16, (5,), 2, 1)
  hp = population.hp_arrays([dict(learning_rate=0.1, units=64)], big)
  m = population.unstack(jax.device_get(progs.init(big, np.array([0], np.uint32), hp)), 1)[0]
  live = np.asarray(m.state.params["Dense_1"]["kernel"])[:64, :64]
  np.testing.assert_allclose(live.std(), np.sqrt(2 / 64), rtol=0.1)


def _grid_cfg(**search_kw):
  c = config_lib.default_config()
  c.baselines.enabled = False
  c.store_path = ""
  c.compile_cache = ""
  c.data.name = "iris"
  c.search.update(dict(scheduler="sh", n_trials=8, group_size=2, max_budget=1.0,
                       families=("mlp",), warm_start=False, **search_kw))
  return c


def test_users_grid_compiles_one_program_and_prints_a_line_per_rung(capsys):
  """The default mlp space (layers {2,3,4}, units {64,128,256}, batch {16,32,64}, three
  optimizers, two dropouts) trains in one init and one epoch program."""
  c = _grid_cfg()
  prep, fams = engine.load_data(c)
  ex = engine.run_search(prep, c, fams)
  shapes = {(t.hp["layers"], t.hp["units"], t.hp["batch_size"]) for t in ex.trials.values()}
  assert len(shapes) >= 3 and all(np.isfinite(t.score) for t in ex.trials.values())
  assert dict(ex.programs.compiles_by) == {"init": 1, "epoch": 1}
  assert ex.first_result_s is not None and ex.programs.compile_s > 0
  out = capsys.readouterr().out
  assert "search rung 1: 8 trained, 8 trials, best val accuracy" in out
  c.search.progress = False
  engine.run_search(prep, c, fams, programs=ex.programs)
  assert "rung" not in capsys.readouterr().out


_CACHED = r"""
import sys
from jax._src import monitoring
from metajax.automl import config as config_lib, engine
c = config_lib.default_config()
c.baselines.enabled, c.store_path, c.compile_cache = False, "", sys.argv[1]
c.data.name = "iris"
c.search.update(dict(scheduler="sh", n_trials=2, group_size=2, max_budget=1.0,
                     families=("mlp",), warm_start=False, progress=False))
c.space.mlp.units, c.space.mlp.layers = ("choice", (16,)), ("choice", (1,))
prep, fams = engine.load_data(c)
ex = engine.run_search(prep, c, fams)
print("RESULT", ex.programs.compiles, ex.programs.cache_hits)
"""


def test_second_search_loads_its_programs_from_the_persistent_cache(tmp_path):
  cache = str(tmp_path / "jax_cache")
  run = lambda: subprocess.run([sys.executable, "-c", _CACHED, cache], capture_output=True,
                               text=True, timeout=300, cwd=ROOT)
  first, second = run(), run()
  for r in (first, second):
    assert r.returncode == 0, r.stderr[-2000:]
  n1, hits1 = map(int, first.stdout.split("RESULT")[1].split())
  n2, hits2 = map(int, second.stdout.split("RESULT")[1].split())
  assert n1 == n2 == 2 and hits1 == 0 and hits2 == 2
  assert any(f.endswith("-cache") for f in os.listdir(cache))


def test_prefetch_compiles_in_the_background_and_is_reused():
  rng = np.random.default_rng(0)
  X = rng.normal(size=(40, 5)).astype(np.float32)
  Y = (X[:, 0] > 0).astype(np.int32)
  progs = _programs()
  Xd, Yd = parallel.replicate(X, progs.mesh), parallel.replicate(Y, progs.mesh)
  arch = population.Arch("mlp", 2, 16, 16, (5,), 2, 2)
  progs.prefetch(arch, 2, Xd, Yd, Xd)
  assert progs.has_epoch(arch)
  hps = [dict(learning_rate=0.01, units=8, layers=1, batch_size=8)] * 2
  _, curves, _, _ = population.train_population(progs, arch, 2, [0, 1], hps, [None] * 2, 1,
                                                Xd, Yd, Xd)
  assert np.isfinite(curves).all()
  assert dict(progs.compiles_by) == {"init": 1, "epoch": 1}  # the prefetched ones, reused


def test_compile_cache_that_is_a_file_is_a_config_error(tmp_path):
  import pytest
  from metajax.errors import ConfigError
  c = config_lib.default_config()
  c.compile_cache = str(tmp_path / "file")
  open(c.compile_cache, "w").close()
  with pytest.raises(ConfigError, match="compile_cache.*must be a directory"):
    config_lib.validate(c)
  c.compile_cache = ""  # off
  config_lib.validate(c)
