"""Run in a subprocess with 8 fake CPU devices: a ProtoNet meta-step sharded over
8 devices must equal the same step on 1 device, and compile once."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import chex  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from metajax import parallel  # noqa: E402
from metajax.data.episodes import EpisodeSpec, sample_tasks  # noqa: E402
from metajax.meta.protonet import ProtoNet  # noqa: E402
from metajax.models import Conv4  # noqa: E402

assert jax.device_count() == 8
images = np.random.RandomState(0).randint(0, 255, (20, 8, 28, 28, 1)).astype(np.uint8)
tasks = sample_tasks(jax.random.key(0), images, EpisodeSpec(5, 2, 3, batch=8))
learner = ProtoNet(Conv4(num_outputs=None, filters=8), optax.sgd(0.1))  # SGD: Adam would amplify float-order noise in ~0 grads
state0 = learner.init(jax.random.key(1), tasks)


def run(n):
  chex.clear_trace_counter()  # one compile per mesh
  mesh = parallel.make_mesh(n)
  repl, shard = parallel.replicated(mesh), parallel.batch_sharding(mesh)
  step = jax.jit(chex.assert_max_traces(learner.train_step, n=1),
                 in_shardings=(repl, shard, repl), out_shardings=(repl, repl))
  state = jax.device_put(state0, repl)
  for i in range(3):
    state, metrics = step(state, jax.device_put(tasks, shard), jax.random.key(i))
  assert len(state.params["Conv_0"]["kernel"].sharding.device_set) == n
  return jax.device_get(state), jax.device_get(metrics)


(s1, m1), (s8, m8) = run(1), run(8)
chex.assert_trees_all_close(s1.params, s8.params, atol=1e-5, rtol=1e-5)
chex.assert_trees_all_close(s1.model_state, s8.model_state, atol=1e-5, rtol=1e-5)
chex.assert_trees_all_close(m1, m8, atol=1e-5, rtol=1e-5)
assert not np.allclose(s1.params["Conv_0"]["kernel"], state0.params["Conv_0"]["kernel"])
print("OK sharded == single")
