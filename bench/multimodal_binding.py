"""Diagnostic: how many steps the transformer needs to bind a colour word to an image object.

  .venv/bin/python bench/multimodal_binding.py '{"colours": [0, 1], "steps": 500}'

Regression only: from the image and a non-relational question ("what shape is the red
object?", "is the red object on the left?", ...), predict the (x, y) of the object the
question names, on Sort-of-CLEVR training scenes. A model that cannot find the named
object predicts the mean (MSE about 0.063, the variance of a uniform centre); once it
binds the colour word to the object, MSE falls below 0.005. `colours` restricts the
questions to those colours (indices into sort_of_clevr.COLOURS); `model` overrides
ModelConfig fields (default: the conv stem, sin-cos positions, depth 2, dim 64); `lr`,
`bs`, `steps`, `seed` (model init and batches); `curriculum=N` starts with questions about
the first colour only and adds one colour every N steps. Prints the batch MSE (and the colours in play) every 50 steps. Results are in BUILD_NOTES.md.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from metajax.data import sort_of_clevr as soc  # noqa: E402
from metajax.multimodal.model import ModelConfig, MultimodalTransformer, example_batch  # noqa: E402
from metajax.multimodal.tokenize import encode, train_tokenizer  # noqa: E402


def main():
  spec = json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}")
  d = soc.load("", 9800, 200, 0, 3)["train"]
  tok = train_tokenizer(sorted(set(d["q_text"].tolist())), 256)
  ids, mask = encode(tok, d["q_text"].tolist(), 16)
  nonrel = [soc.FAMILIES.index(f) for f in ("shape", "left", "top")]
  colours = spec.get("colours", list(range(6)))
  # curriculum=N: questions about the first colour only, one more colour every N steps.
  per_colour = spec.get("curriculum", 0)
  pools = [np.flatnonzero(np.isin(d["q_family"], nonrel) & np.isin(d["q_colour"], colours[:k]))
           for k in range(1, len(colours) + 1)]
  xy = (d["centres"][d["q_image"], d["q_colour"]] / soc.IMAGE_SIZE).astype(np.float32)
  kw = dict(image_shape=(75, 75, 3), stem_channels=(32, 32, 32, 32), image_pos="sincos",
            dim=64, depth=2, heads=4, mlp_dim=128, num_classes=10, num_regression=2,
            vocab_size=tok.vocab_size)
  kw.update(spec.get("model", {}))
  cfg = ModelConfig(**kw)
  model = MultimodalTransformer(cfg)
  params = model.init(jax.random.key(spec.get("seed", 0)), example_batch(cfg))["params"]
  tx = optax.adam(spec.get("lr", 1e-3))
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, batch, target):
    def loss(p):
      return ((model.apply({"params": p}, batch)["regression"] - target) ** 2).mean()
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  bs, seed = spec.get("bs", 32), spec.get("seed", 0)
  for i in range(spec.get("steps", 400)):
    k = min(i // per_colour + 1, len(pools)) if per_colour else len(pools)  # colours in play
    pool = pools[k - 1]
    # seed 0 keeps the batches of the figures recorded before `seed` existed
    q = pool[np.random.default_rng([seed, i] if seed else i).integers(0, len(pool), bs)]
    batch = {"image": jnp.asarray(d["images"][d["q_image"][q]]), "text": jnp.asarray(ids[q]),
             "text_mask": jnp.asarray(mask[q])}
    params, opt_state, mse = step(params, opt_state, batch, jnp.asarray(xy[q]))
    if (i + 1) % 50 == 0:
      print(json.dumps({"step": i + 1, "colours": k, "mse": round(float(mse), 4)}), flush=True)


if __name__ == "__main__":
  main()
