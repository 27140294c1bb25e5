"""Is episodic sampling ever the bottleneck of a meta-step? Times the jitted sampler
against the ProtoNet and (if present) MAML train steps it feeds, on the glyphs dataset.

  python bench/sampler.py [--repeats 20]

Prints a table and one JSON line: milliseconds per meta-batch for each, and the
sampler's share of a step.
"""

import argparse
import json
import time

import jax
import numpy as np
import optax

from metajax import data
from metajax.data.episodes import EpisodeSpec, make_sampler
from metajax.meta.protonet import ProtoNet
from metajax.models import Conv4


def timed(fn, repeats):
  jax.block_until_ready(fn(0))  # compile
  times = []
  for i in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(i + 1))
    times.append(time.perf_counter() - t)
  return 1e3 * float(np.median(times))


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--repeats", type=int, default=20)
  args = p.parse_args()
  images = jax.numpy.asarray(data.load("glyphs").splits["train"])
  rows = []
  for name, spec in [("protonet 20-way 1-shot 5-query x1", EpisodeSpec(20, 1, 5, 1, True)),
                     ("protonet 5-way 5-shot 15-query x1", EpisodeSpec(5, 5, 15, 1, True)),
                     ("maml-shaped 5-way 1-shot 15-query x32", EpisodeSpec(5, 1, 15, 32, True))]:
    sample = make_sampler(spec)
    t_sample = timed(lambda i: sample(jax.random.key(i), images), args.repeats)
    learner = ProtoNet(Conv4(num_outputs=None), optax.adam(1e-3))
    tasks = sample(jax.random.key(0), images)
    state = learner.init(jax.random.key(0), tasks)
    step = jax.jit(learner.train_step)
    t_step = timed(lambda i: step(state, tasks, jax.random.key(i))[1], args.repeats)
    rows.append({"episode": name, "sample_ms": t_sample, "protonet_step_ms": t_step,
                 "sample_share": t_sample / (t_sample + t_step)})
  print(f"{'episode':42s} {'sample ms':>10s} {'step ms':>10s} {'share':>7s}")
  for r in rows:
    print(f"{r['episode']:42s} {r['sample_ms']:10.2f} {r['protonet_step_ms']:10.2f} {r['sample_share']:7.1%}")
  print(json.dumps({"device": jax.devices()[0].platform, "rows": rows}))


if __name__ == "__main__":
  main()
