"""Dataset containers shared by every loader."""

from __future__ import annotations

import dataclasses
import os

import numpy as np


@dataclasses.dataclass
class ClassImages:
  """An image dataset indexed by class, ready for episodic sampling.

  splits: split name ('train', 'val', 'test') -> uint8 array
    [classes, examples_per_class, H, W, C]; classes of different splits are disjoint.
  class_names: split -> one name per class (e.g. 'U+0416 CYRILLIC CAPITAL LETTER ZHE').
  groups: split -> one group per class (alphabet / script / source label).
  """
  name: str
  splits: dict[str, np.ndarray]
  class_names: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  groups: dict[str, list[str]] = dataclasses.field(default_factory=dict)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return next(iter(self.splits.values())).shape[2:]

  def describe(self) -> str:
    return ", ".join(f"{s}: {a.shape[0]} classes x {a.shape[1]} examples"
                     for s, a in self.splits.items())


def default_data_dir(data_dir: str = "") -> str:
  """`data_dir`, else $METAJAX_DATA_DIR, else ~/.cache/metajax."""
  return data_dir or os.environ.get("METAJAX_DATA_DIR") or os.path.expanduser("~/.cache/metajax")
