"""Episodic sampler invariants."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metajax.data.episodes import EpisodeSpec, make_sampler, sample_tasks
from metajax.data.sinusoid import Sinusoid
from metajax.errors import ConfigError

C, E = 30, 10


def id_images():
  """float images [C, E, 4, 4, 1] whose every pixel is the id 100*c + e."""
  ids = 100 * np.arange(C)[:, None] + np.arange(E)[None]
  return jnp.asarray(np.broadcast_to(ids[:, :, None, None, None], (C, E, 4, 4, 1)).astype(np.float32))


def ids_of(x):
  return np.asarray(x[..., 0, 0, 0]).astype(int)


@pytest.fixture(scope="module")
def tasks():
  spec = EpisodeSpec(ways=5, shots=3, queries=4, batch=64)
  return spec, jax.jit(sample_tasks, static_argnums=2)(jax.random.key(0), id_images(), spec)


def test_shapes_and_dtypes(tasks):
  spec, t = tasks
  assert t.support_x.shape == (64, 15, 4, 4, 1) and t.query_x.shape == (64, 20, 4, 4, 1)
  assert t.support_y.shape == (64, 15) and t.query_y.shape == (64, 20)
  assert t.support_y.dtype == jnp.int32 and t.support_x.dtype == jnp.float32


def test_support_query_disjoint_and_balanced(tasks):
  spec, t = tasks
  for b in range(64):
    s, q = ids_of(t.support_x[b]), ids_of(t.query_x[b])
    assert not set(s) & set(q), "an example is both support and query"
    assert len(set(s)) == 15 and len(set(q)) == 20, "an example was drawn twice"
    assert np.all(np.bincount(np.asarray(t.support_y[b]), minlength=5) == 3)
    assert np.all(np.bincount(np.asarray(t.query_y[b]), minlength=5) == 4)
    # One class per label, the same in support and query, distinct across labels.
    cls = {}
    for ids, ys in ((s, t.support_y[b]), (q, t.query_y[b])):
      for i, y in zip(ids, np.asarray(ys)):
        assert cls.setdefault(int(y), i // 100) == i // 100
    assert len(set(cls.values())) == 5


def test_labels_permuted_and_order_shuffled(tasks):
  spec, t = tasks
  label0_class = {int(ids_of(t.support_x[b])[np.asarray(t.support_y[b]) == 0][0]) // 100
                  for b in range(64)}
  assert len(label0_class) > 10, "label 0 should map to many different classes"
  assert len({tuple(np.asarray(t.support_y[b])) for b in range(64)}) > 10, "support order not shuffled"


def test_deterministic_per_key():
  spec, x = EpisodeSpec(5, 1, 2, 4), id_images()
  sample = jax.jit(sample_tasks, static_argnums=2)  # one compile beats eager dispatch
  a = sample(jax.random.key(7), x, spec)
  b = sample(jax.random.key(7), x, spec)
  c = sample(jax.random.key(8), x, spec)
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(a.support_x, c.support_x)


def test_no_recompilation_across_calls():
  spec, x = EpisodeSpec(5, 2, 3, 8, rotations=True), id_images()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def draw(key, images):
    return sample_tasks(key, images, spec)

  for i in range(5):
    draw(jax.random.key(i), x)


def test_rotations_are_new_classes():
  rng = np.random.RandomState(0)
  x = rng.randint(0, 255, size=(3, 6, 5, 5, 1)).astype(np.uint8)
  spec = EpisodeSpec(ways=12, shots=1, queries=1, batch=2, rotations=True)
  t = sample_tasks(jax.random.key(0), jnp.asarray(x), spec)
  originals = {(c, e, k): np.rot90(x[c, e], k, axes=(0, 1)) / 255.0
               for c in range(3) for e in range(6) for k in range(4)}
  for b in range(2):
    found = set()
    for img in np.asarray(t.support_x[b]):
      match = [key for key, o in originals.items() if np.allclose(o, img, atol=1e-6)]
      assert match, "a sampled image is no rotation of a dataset image"
      found.add((match[0][0], match[0][2]))
    assert len(found) == 12, "12-way over 3 classes x 4 rotations must use every rotation"


@pytest.mark.parametrize("kwargs, key", [
    (dict(ways=31, shots=1, queries=1), "ways"),
    (dict(ways=5, shots=6, queries=5), "shots"),
    (dict(ways=0, shots=1, queries=1), "ways"),
    (dict(ways=5, shots=1, queries=-1), "queries"),
])
def test_spec_validation_names_the_key(kwargs, key):
  with pytest.raises(ConfigError) as e:
    EpisodeSpec(**kwargs).validate((C, E, 4, 4, 1), "train")
  assert e.value.key == key and str(kwargs[key]) in str(e.value)


@pytest.mark.parametrize("spec, key, shown", [
    (EpisodeSpec(ways=3, shots=4, queries=3), "shots", "4 + 3 exceeds the 6 examples"),
    (EpisodeSpec(ways=11, shots=1, queries=1), "ways", "1..10"),
    (EpisodeSpec(ways=41, shots=1, queries=1, rotations=True), "ways", "1..40"),
])
@pytest.mark.parametrize("jitted", [False, True])
def test_library_sampler_refuses_a_spec_its_images_cannot_serve(spec, key, shown, jitted):
  """sample_tasks / make_sampler validate like the CLI: no repeated images with conflicting
  labels, no raw numpy error."""
  images = np.zeros((10, 6, 4, 4, 1), np.uint8)
  draw = make_sampler(spec) if jitted else (lambda k, x: sample_tasks(k, x, spec))
  with pytest.raises(ConfigError) as e:
    draw(jax.random.key(0), images)
  assert e.value.key == key and shown in str(e.value) and "(10, 6, 4, 4, 1)" in str(e.value)


def test_sinusoid_family():
  spec = EpisodeSpec(ways=1, shots=10, queries=7, batch=25)
  t = Sinusoid().sample(jax.random.key(0), spec)
  assert t.support_x.shape == (25, 10, 1) and t.query_y.shape == (25, 7, 1)
  x = np.concatenate([t.support_x, t.query_x], 1)
  y = np.concatenate([t.support_y, t.query_y], 1)
  assert x.min() >= -5 and x.max() <= 5 and np.abs(y).max() <= 5
  # Each task is one sinusoid: fit A sin(x - p) = a sin x + b cos x by least squares.
  for b in range(25):
    basis = np.concatenate([np.sin(x[b]), np.cos(x[b])], 1)
    coef, res, *_ = np.linalg.lstsq(basis, y[b, :, 0], rcond=None)
    amp = np.hypot(*coef)
    assert 0.1 - 1e-4 <= amp <= 5 + 1e-4 and np.allclose(basis @ coef, y[b, :, 0], atol=1e-4)
