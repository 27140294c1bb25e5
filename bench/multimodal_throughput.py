"""Training throughput of the multimodal transformer (examples/s) on this machine.

  flock /tmp/metajax_heavy.lock .venv/bin/python bench/multimodal_throughput.py [--steps 20]

Times the jitted train step (`metajax.multimodal.steps`) of configs/multimodal_sortofclevr.py
(its model and optimizer, its batch of 128 questions, 8 per image, real Sort-of-CLEVR
batches) for early and late fusion in float32 and bfloat16, after one compile step, and
counts the step's FLOPs from XLA's cost analysis.
Prints one JSON line per variant.
"""

import argparse
import os
import sys
import json
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs.multimodal_sortofclevr import get_config  # noqa: E402
from metajax import models, optim, parallel  # noqa: E402
from metajax.data import sort_of_clevr as soc  # noqa: E402
from metajax.experiments.sort_of_clevr import model_fields  # noqa: E402
from metajax.multimodal.model import MODALITIES, example_batch  # noqa: E402
from metajax.multimodal.steps import make_train_step  # noqa: E402
from metajax.multimodal.tokenize import encode, train_tokenizer  # noqa: E402
from metajax.state import TrainState  # noqa: E402


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--variants", default="early:float32,late:float32,early:bfloat16")
  ap.add_argument("--model", default="{}", help="JSON overrides of config.model, e.g. "
                  "'{\"depth\": 2}'")
  args = ap.parse_args()
  config = get_config()
  config.model.update(json.loads(args.model))
  d = soc.generate(200, 0, config.data.table_rows)
  tok = train_tokenizer(sorted(set(d["q_text"].tolist())), config.text.vocab_size)
  split = soc.Split(d, *encode(tok, d["q_text"].tolist(), config.model.max_text_len))
  mesh = parallel.make_mesh()
  bs = config.train.batch_size
  for variant in args.variants.split(","):
    fusion, dtype = variant.split(":")
    config.model.fusion, config.model.dtype = fusion, dtype
    model = models.from_config(config.model, **model_fields(config, len(tok)))
    params = model.init(jax.random.key(0), example_batch(model.cfg))["params"]
    tx = optim.make_optimizer(config.optimizer, config.train.steps)  # the recipe's AdamW
    state = parallel.replicate(TrainState.create(params, tx), mesh)
    r = config.train.questions_per_image
    repl, shard = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    step = jax.jit(make_train_step(model, tx, tuple(config.train.drop[m] for m in MODALITIES),
                                   0.0, questions_per_scene=r),
                   in_shardings=(repl, shard, repl), out_shardings=(repl, repl),
                   donate_argnums=0)
    idx = [soc.scene_indices(0, i, bs, r, split.by_image) for i in range(args.steps + 1)]
    batches = [parallel.shard_batch({**split.batch(q, r), "weight": np.ones(bs, np.float32)},
                                    mesh) for q in idx]
    key = jax.random.key(0)
    t0 = time.perf_counter()
    state, m = step(state, batches[0], key)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for b in batches[1:]:
      state, m = step(state, b, key)
    jax.block_until_ready(m)
    dt = time.perf_counter() - t0
    flops = step.lower(state, batches[0], key).cost_analysis()  # HLO estimate, no recompile
    flops = (flops[0] if isinstance(flops, list) else flops or {}).get("flops", float("nan"))
    print(json.dumps({"model": json.loads(args.model), "fusion": fusion, "dtype": dtype,
                      "batch": bs, "steps": args.steps,
                      "step_gflop": round(flops / 1e9, 2),
                      "achieved_gflop_per_s": round(flops * args.steps / dt / 1e9, 1),
                      "examples_per_s": round(args.steps * bs / dt, 1),
                      "step_ms": round(1000 * dt / args.steps, 1),
                      "first_step_s": round(compile_s, 1),
                      "params": int(sum(np.size(x) for x in jax.tree.leaves(params))),
                      "device": f"{jax.device_count()}x {jax.devices()[0].device_kind}"}),
          flush=True)


if __name__ == "__main__":
  main()
