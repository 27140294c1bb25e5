"""Per-host shards of the data: the shard arithmetic, tfds's per-process splits and the
Sort-of-CLEVR hosts that generate and sample only their own training scenes. Processes are
simulated by (index, count); tests/test_multiprocess.py runs real ones."""

import hashlib
import os

import jax
import numpy as np
import pytest

from metajax import parallel
from metajax.data import sort_of_clevr as soc
from metajax.errors import ConfigError


# --- process_shard ------------------------------------------------------------------------
def test_shards_are_disjoint_covering_and_balanced():
  for count in range(1, 6):
    for n in range(count, 14):
      shards = [parallel.process_shard(n, i, count) for i in range(count)]
      assert [j for s in shards for j in s] == list(range(n))  # in order: disjoint, covering
      assert max(map(len, shards)) - min(map(len, shards)) <= 1
  assert [len(parallel.process_shard(11, i, 3)) for i in range(3)] == [4, 4, 3]  # tfds's deal
  assert parallel.process_shard(5) == range(5)  # this (only) process


def test_empty_shard_and_bad_index_are_errors():
  with pytest.raises(ConfigError, match=r"config.data.num_train=2 is invalid: .*3 processes"):
    parallel.process_shard(2, 0, 3, key="data.num_train")
  with pytest.raises(ValueError, match="not in 0..2"):
    parallel.process_shard(9, 3, 3)


# --- tfds: a tiny array_record dataset built offline ----------------------------------------
_TFDS_BUILDERS = []


def _tiny_tfds(data_dir: str, n: int = 11) -> str:
  """Prepares 'metajax_tiny_tfds' in `data_dir`: n 4x4x1 images of value i, labels i % 3."""
  import tensorflow_datasets as tfds
  name = "metajax_tiny_tfds"
  if not _TFDS_BUILDERS:  # defining the class registers it, once per session

    class MetajaxTinyTfds(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")

      def _info(self):
        return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"),
                                     features=tfds.features.FeaturesDict({
                                         "image": tfds.features.Tensor(shape=(4, 4, 1),
                                                                       dtype=np.uint8),
                                         "label": tfds.features.ClassLabel(num_classes=3)}))

      def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

      def _generate_examples(self):
        for i in range(n):
          yield i, {"image": np.full((4, 4, 1), i, np.uint8), "label": i % 3}

    _TFDS_BUILDERS.append(MetajaxTinyTfds)
  tfds.builder(name, data_dir=data_dir, file_format="array_record").download_and_prepare()
  return name


def test_tfds_per_host_reads_only_its_share(tmp_path):
  from metajax.data import tfds_images
  name, d = _tiny_tfds(str(tmp_path)), str(tmp_path)
  images, labels = tfds_images.read_examples(name, "train", d, image_size=4)
  assert sorted(images[:, 0, 0, 0]) == list(range(11))
  parts = [tfds_images.read_examples(name, "train", d, image_size=4, per_host=(i, 3))
           for i in range(3)]
  for i, (x, y) in enumerate(parts):  # tfds's share is process_shard's rows of the split
    rows = list(parallel.process_shard(11, i, 3))
    np.testing.assert_array_equal(x, images[rows])
    np.testing.assert_array_equal(y, labels[rows])
  x, _ = tfds_images.read_examples(name, "train", d, image_size=4, per_host=True)
  np.testing.assert_array_equal(x, images)  # one process: its share is the whole split
  with pytest.raises(ConfigError, match="per_host_shard.*11 examples leave some of 12"):
    tfds_images.read_examples(name, "train", d, image_size=4, per_host=(0, 12))


# --- Sort-of-CLEVR -------------------------------------------------------------------------
def _split(d):
  q = len(d["q_answer"])
  return soc.Split(d, np.zeros((q, 4), np.int32), np.ones((q, 4), bool))


def test_scene_shards_concatenate_to_the_whole_set():
  whole = soc.generate_scenes(range(7), 5)
  parts = [soc.generate_scenes(parallel.process_shard(7, i, 3), 5) for i in range(3)]
  for k in ("images", "table_num", "q_answer", "q_text"):
    np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])
  assert not np.array_equal(whole["images"], soc.generate(7, 5)["images"])  # its own scheme


def test_hosts_sample_their_rows_from_their_own_shard():
  count, num, batch, r = 3, 12, 12, 2
  shards = [parallel.process_shard(num, i, count) for i in range(count)]
  splits = [_split(soc.generate_scenes(s, 1, table_rows=3)) for s in shards]
  for step in range(8):  # several epochs of each 4-scene shard
    seen = []
    for i, (s, split) in enumerate(zip(shards, splits)):
      rows = slice(i * batch // count, (i + 1) * batch // count)
      idx = soc.host_batch_indices(0, step, batch, r, split.by_image, rows, shard=i)
      np.testing.assert_array_equal(
          idx, soc.host_batch_indices(0, step, batch, r, split.by_image, rows, shard=i))
      assert len(idx) == batch // count
      img = split.d["q_image"][idx]
      assert (img[::r] == img[1::r]).all()  # r questions of each image
      scenes = s.start + img  # global scene ids: all in this host's shard
      assert set(scenes) <= set(s)
      seen.append(set(scenes))
    assert not set.intersection(*seen)
  a = soc.host_batch_indices(0, 0, batch, r, splits[0].by_image, slice(0, 4), shard=0)
  b = soc.host_batch_indices(0, 0, batch, r, splits[0].by_image, slice(0, 4), shard=1)
  assert not np.array_equal(a, b)  # each host its own stream


def test_per_host_off_leaves_scenes_and_batches_unchanged(tmp_path):
  d = soc.generate(2, 1, 3)  # the scenes every run so far trained on
  digest = hashlib.sha256(d["images"].tobytes() + d["q_answer"].tobytes() +
                          d["table_num"].tobytes()).hexdigest()[:16]
  assert digest == "2ccb1c50fc278b34"
  split = _split(soc.load(str(tmp_path), num_train=6, num_test=2, seed=1)["train"])
  full = soc.scene_indices(0, 3, 8, 2, split.by_image)
  rows = [slice(0, 4), slice(4, 8)]
  got = [soc.host_batch_indices(0, 3, 8, 2, split.by_image, r) for r in rows]
  np.testing.assert_array_equal(np.concatenate(got), full)


def test_load_caches_a_shard_beside_the_whole_set(tmp_path):
  whole = soc.load(str(tmp_path), num_train=6, num_test=2, seed=1)
  part = soc.load(str(tmp_path), num_train=6, num_test=2, seed=1, train_scenes=range(2, 4))
  np.testing.assert_array_equal(part["train"]["images"],
                                soc.generate_scenes(range(2, 4), 3)["images"])
  np.testing.assert_array_equal(part["test"]["images"], whole["test"]["images"])
  again = soc.load(str(tmp_path), num_train=6, num_test=2, seed=1, train_scenes=range(2, 4))
  np.testing.assert_array_equal(again["train"]["q_text"], part["train"]["q_text"])  # cached
  assert len(os.listdir(tmp_path / "sort_of_clevr")) == 4  # two .npz, two .json


def test_question_texts_are_every_question_asked():
  assert soc.question_texts(3) == sorted(set(soc.generate(60, 0, 3)["q_text"].tolist()))
  assert soc.question_texts(0) == sorted(set(soc.generate(20, 0, 0)["q_text"].tolist()))


def test_too_few_scenes_for_the_processes_is_a_config_error(monkeypatch):
  from configs.multimodal_sortofclevr import get_config
  from metajax.experiments import sort_of_clevr as clevr
  c = get_config("tiny")
  c.data.per_host_shard = True
  monkeypatch.setattr(jax, "process_count", lambda: c.data.num_train + 1)
  with pytest.raises(ConfigError, match="config.data.num_train=40 is invalid"):
    clevr.check_config(c)
