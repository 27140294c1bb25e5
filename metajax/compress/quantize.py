"""Post-training symmetric int8 weight quantization, per output channel.

  q = quantize(params)            # {'int8': {path: int8}, 'scale': {path: f32}, 'float': {path: f32}}
  params2 = dequantize(q)         # the params pytree again, int8 weights * scales
  save_weights(path, flat)        # one uncompressed .npz: what is stored is what is counted

Every float weight of rank >= 2 (dense and conv kernels, embeddings, learned positions) is
stored as int8 with one float32 scale per slice of its last axis (a kernel's output
channel): scale = max |w| over the slice / 127, q = round(w / scale), so
|w - q * scale| <= scale / 2 entry by entry. Biases and norm scales (rank <= 1) stay float32:
they are few and sensitive. Dequantized at load, so inference runs in float32 unchanged.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from metajax.runlog import atomic_write

SEP = "/"


def flatten(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """A nested dict of arrays -> {'a/b/kernel': numpy array}."""
  return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(dict(tree), sep=SEP).items()}


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  return traverse_util.unflatten_dict(dict(flat), sep=SEP)


def quantizable(w: np.ndarray) -> bool:
  """Float weights of rank >= 2 are stored as int8; the rest stay float32."""
  return w.ndim >= 2 and np.issubdtype(w.dtype, np.floating)


def quantize_array(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """w [..., C] float -> (q [..., C] int8 in [-127, 127], scale [C] float32 > 0)."""
  w = np.asarray(w, np.float32)
  amax = np.abs(w).reshape(-1, w.shape[-1]).max(axis=0)
  scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
  q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
  return q, scale


def dequantize_array(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
  return q.astype(np.float32) * scale


def quantize(params: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
  """{'int8': {path: q}, 'scale': {path: scale}, 'float': {path: w}} of a params pytree."""
  out: dict[str, dict[str, np.ndarray]] = {"int8": {}, "scale": {}, "float": {}}
  for path, w in flatten(params).items():
    if quantizable(w):
      out["int8"][path], out["scale"][path] = quantize_array(w)
    else:
      out["float"][path] = w
  return out


def dequantize(q: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
  """The params pytree of `quantize`'s output (float32)."""
  flat = dict(q["float"])
  flat.update({p: dequantize_array(v, q["scale"][p]) for p, v in q["int8"].items()})
  return unflatten(flat)


def save_weights(path: str, arrays: Mapping[str, np.ndarray]) -> int:
  """Writes {name: array} to one uncompressed .npz (atomically); returns its size in bytes.

  The arrays are packed into one flat buffer per dtype plus a JSON index (name, dtype,
  shape, offset), so the file holds a handful of members rather than one per array: a
  member's headers (~300 bytes) would otherwise be a sizeable part of a small model."""
  index, buffers = [], {}
  for name, a in arrays.items():
    a = np.asarray(a)
    parts = buffers.setdefault(a.dtype.str, [])
    offset = sum(p.size for p in parts)
    parts.append(a.ravel())
    index.append([name, a.dtype.str, list(a.shape), offset])
  members = {f"packed{i}": np.concatenate(parts) for i, parts in enumerate(buffers.values())}
  dtypes = list(buffers)
  members["index"] = np.frombuffer(json.dumps([dtypes, index]).encode(), np.uint8)
  buf = io.BytesIO()
  np.savez(buf, **members)
  atomic_write(path, buf.getvalue())
  return os.path.getsize(path)


def load_weights(path: str) -> dict[str, np.ndarray]:
  """{name: array} of `save_weights`."""
  with np.load(path, allow_pickle=False) as z:
    members = {k: z[k] for k in z.files}
  if "index" not in members:  # one member per array
    return members
  dtypes, index = json.loads(members["index"].tobytes().decode())
  packed = {d: members[f"packed{i}"] for i, d in enumerate(dtypes)}
  return {name: packed[d][off:off + int(np.prod(shape))].reshape(shape)
          for name, d, shape, off in index}
